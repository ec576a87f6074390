"""User-facing errors: the CLI prints their message (one paragraph) and exits non-zero.

Anything else escaping the CLI is a bug and keeps its traceback.
"""


class CommitError(Exception):
    """Base class of errors caused by the user's input or environment, not by a bug."""

    exit_code = 2


class ConfigError(CommitError):
    """A recipe or override is invalid: names the key and the file."""


class DataError(CommitError):
    """A dataset record or media file is bad: names the file, line and field."""


class ModelLoadError(CommitError):
    """A model path does not exist, or an HF id cannot be fetched offline."""


class TrainingDiverged(CommitError):
    """Loss became NaN/inf; a checkpoint was written before stopping."""

    exit_code = 3
