"""The `exact_match_qa` metric module; load it with `evaluation.metrics.load_metric("exact_match_qa")`."""
