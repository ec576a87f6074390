"""Data: canonical records -> validated datasets -> model batches.

``records`` reads and validates canonical JSONL, ``media`` decodes images/audio,
``collate`` formats prompts and builds padded, label-masked batches, ``builtin`` generates
the offline built-in datasets (``builtin:vision``, ``builtin:audio``).
"""

from commit_train.data.builtin import (
    BUILTIN_NAMES,
    builtin_path,
    ensure_builtin,
    make_builtin,
    resolve_data_source,
)
from commit_train.data.collate import Collator, RecordDataset, format_choices, load_media
from commit_train.data.media import load_audio, load_image, resample
from commit_train.data.records import (
    Problem,
    Record,
    ValidationReport,
    read_records,
    write_records,
)

__all__ = [
    "BUILTIN_NAMES",
    "Collator",
    "Problem",
    "Record",
    "RecordDataset",
    "ValidationReport",
    "builtin_path",
    "ensure_builtin",
    "format_choices",
    "load_audio",
    "load_image",
    "load_media",
    "make_builtin",
    "read_records",
    "resample",
    "resolve_data_source",
    "write_records",
]
