"""The `vqa_accuracy` metric module; load it with `evaluation.metrics.load_metric("vqa_accuracy")`."""
