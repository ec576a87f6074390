"""The `cider` metric module; load it with `evaluation.metrics.load_metric("cider")`."""
