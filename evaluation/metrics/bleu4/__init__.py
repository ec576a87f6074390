"""The `bleu4` metric module; load it with `evaluation.metrics.load_metric("bleu4")`."""
