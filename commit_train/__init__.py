"""commit_train: CoMMIT coordinated multimodal instruction tuning (library)."""

__version__ = "0.1.0"
