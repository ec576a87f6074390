"""The `rouge_l` metric module; load it with `evaluation.metrics.load_metric("rouge_l")`."""
