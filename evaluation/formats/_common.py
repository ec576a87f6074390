"""Shared pieces of the dataset-format loaders: reading the published files with errors
that name the file and what was expected, picking the media folder among the layouts
people actually unpack, and the counting every loader reports.

A loader is strict about *format* (a file that is not what the dataset publishes raises
:class:`DataError` naming the file, because guessing on a wrong file silently produces a
wrong benchmark) and lenient about *content* that the dataset itself legitimately lacks
(an unlabeled test split, a missing media file): those examples are skipped and counted
per reason, so staging can record what it dropped and why.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from commit_train.data.records import Record
from commit_train.errors import DataError

LoadResult = tuple[list[Record], dict[str, int]]


class Tally:
    """Counts of what a loader read, kept and skipped (per reason)."""

    def __init__(self) -> None:
        self.examples = 0
        self.skipped: Counter[str] = Counter()

    def skip(self, reason: str, n: int = 1) -> None:
        self.skipped[reason] += n

    def as_dict(self, n_records: int) -> dict[str, int]:
        """``{"examples": read, "records": kept, <reason>: skipped, ...}``."""
        out = {"examples": self.examples, "records": n_records}
        out.update(sorted(self.skipped.items()))
        return out


def check_root(root: str | Path, fmt: str) -> Path:
    root = Path(root)
    if not root.is_dir():
        what = "is not a directory" if root.exists() else "does not exist"
        raise DataError(f"{fmt} dataset root {root} {what}")
    return root


def check_split(fmt: str, split: str, splits: Sequence[str]) -> None:
    if split not in splits:
        raise DataError(
            f"{fmt} has no split {split!r}; its published splits are: {', '.join(splits)}"
        )


def require_file(path: Path, expected: str) -> Path:
    """``path`` must be a file; the error says which file and what it should hold."""
    if not path.is_file():
        raise DataError(f"{path}: file not found; expected {expected}")
    return path


def _read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot be read: {e}") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        # Some re-shared copies of the CSVs were saved by spreadsheet tools in Latin-1.
        return raw.decode("latin-1")


def read_json(path: Path, expected: str) -> Any:
    """Parse a JSON file; invalid JSON raises naming the file, line and ``expected``."""
    try:
        return json.loads(_read_text(path))
    except json.JSONDecodeError as e:
        raise DataError(
            f"{path}: invalid JSON at line {e.lineno} column {e.colno} ({e.msg}); "
            f"expected {expected}"
        ) from None


def read_yaml(path: Path, expected: str) -> Any:
    try:
        return yaml.safe_load(_read_text(path))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise DataError(f"{path}: invalid YAML{where}; expected {expected}") from None


def read_csv(
    path: Path, required: Iterable[Sequence[str]], expected: str, delimiter: str = ","
) -> tuple[list[dict[str, str]], dict[str, str]]:
    """Read a CSV with a header row.

    ``required`` lists, per logical column, the header names it is published under (the
    first one present wins), e.g. ``[("file_name",), ("QuestionText", "question")]``.
    Returns the rows (dicts keyed by the header) and the mapping logical name (the first
    alias) -> the header actually found. A missing column raises naming the file, the
    columns expected and the columns found.
    """
    text = _read_text(path)
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
        header = [h.strip() for h in (reader.fieldnames or [])]
        reader.fieldnames = header
        rows = list(reader)
    except csv.Error as e:
        raise DataError(f"{path}: not a readable CSV ({e}); expected {expected}") from None
    found: dict[str, str] = {}
    missing: list[str] = []
    for aliases in required:
        hit = next((a for a in aliases if a in header), None)
        if hit is None:
            missing.append(" or ".join(repr(a) for a in aliases))
        else:
            found[aliases[0]] = hit
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(missing)}; expected {expected}; "
            f"found columns {header!r}"
        )
    return rows, found


def cell(row: dict[str, Any], column: str | None) -> str:
    """A CSV cell as stripped text ('' for an absent column or a short row)."""
    if column is None:
        return ""
    value = row.get(column)
    return value.strip() if isinstance(value, str) else ""


def first_dir(root: Path, candidates: Sequence[str], what: str) -> Path:
    """The first existing folder among ``candidates`` (relative to ``root``)."""
    for name in candidates:
        if (root / name).is_dir():
            return root / name
    listed = ", ".join(f"{c}/" for c in candidates)
    raise DataError(f"{root}: no {what} folder found; expected one of {listed}")


def media_ref(path: Path, root: Path) -> str:
    """``path`` relative to the dataset root (POSIX separators), or absolute when the
    media lives outside it (e.g. a shared COCO folder)."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path.resolve())


def need(obj: Any, key: str, kinds: type | tuple[type, ...], where: str, expected: str) -> Any:
    """``obj[key]`` of the given type, else a DataError naming ``where`` (file + entry)."""
    if not isinstance(obj, dict) or key not in obj:
        raise DataError(f"{where}: field {key!r} is missing; expected {expected}")
    value = obj[key]
    allowed = kinds if isinstance(kinds, tuple) else (kinds,)
    # bool is an int subclass; a true/false where a number is expected is a wrong file.
    if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
        raise DataError(
            f"{where}: field {key!r} has type {type(value).__name__}; expected {expected}"
        )
    return value


def str_list(value: Any) -> list[str] | None:
    """A list of non-empty strings (numbers are turned into text), or None if not one."""
    if not isinstance(value, list):
        return None
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, str | int | float):
            return None
        text = str(v).strip()
        if text:
            out.append(text)
    return out


def finish(
    records: list[Record], tally: Tally, fmt: str, split: str, source: Path
) -> tuple[list[Record], dict[str, int]]:
    """Return the result, or raise if the split came out empty (an empty split is never
    what the caller wanted: it would stage a dataset nothing can train or score on)."""
    counts = tally.as_dict(len(records))
    if not records:
        if tally.examples == 0:
            raise DataError(f"{fmt} split {split!r}: {source} holds no examples")
        reasons = ", ".join(f"{k}={v}" for k, v in tally.skipped.items())
        raise DataError(
            f"{fmt} split {split!r}: all {tally.examples} examples of {source} were "
            f"skipped ({reasons}); nothing is left to stage"
        )
    return records, counts
