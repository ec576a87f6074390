"""Parsing a data source spec (``<format>:<dir>?opts``, ``builtin:``, ``s3://``).

Its own module with no imports from the rest of the library, so ``stage`` (which stages
format sources) and ``data.sources`` (which falls back to ``stage`` for ``s3://``) can both
use it without importing each other.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import parse_qsl

_FORMAT_SPEC = re.compile(r"^(?P<fmt>[A-Za-z][\w\-]*):(?P<path>(?!//).+)$")


def media_roots(spec: str) -> list[Path]:
    """Folders besides the media root that a source's media may lie in: the ``*_root``
    options of a format source (A-OKVQA's ``coco_root``: COCO unpacked elsewhere), which
    the recipe names explicitly. Media anywhere else outside the root are rejected
    (:func:`commit_train.data.records.confined_media`)."""
    m = _FORMAT_SPEC.match(spec)
    if spec.startswith(("builtin:", "s3://")) or m is None or len(m.group("fmt")) == 1:
        return []
    path, _, query = m.group("path").partition("?")
    return [
        Path(v) if Path(v).is_absolute() else Path(path) / v
        for k, v in parse_qsl(query)
        if k.endswith("_root")
    ]
