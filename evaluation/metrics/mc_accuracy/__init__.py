"""The `mc_accuracy` metric module; load it with `evaluation.metrics.load_metric("mc_accuracy")`."""
