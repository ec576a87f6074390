"""Canonical records (one JSONL line per example) and their validation.

Validation reads the *whole* file and reports every problem at once, each with file, line
and field: fixing a 50k-line dataset one error per run is miserable, and a bad image
found at step 40k of a training run wastes the run. With ``skip_bad=True`` the bad records
are dropped and counted per reason instead, so a staged dataset can record what it
rejected and why (ARCHITECTURE.md, Data).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from commit_train.data.media import check_audio, check_image
from commit_train.errors import DataError

MODALITIES = ("image", "audio")
REQUIRED_FIELDS = ("id", "modality", "media", "question", "answers")
OPTIONAL_FIELDS = ("choices", "split")
# How many problems a DataError message lists before summarising the rest.
MAX_LISTED = 20


@dataclass(frozen=True)
class Record:
    """One example. ``media`` is kept as written (relative to the dataset root, or
    absolute) so records can be re-serialised unchanged; resolve it with :meth:`media_path`.

    ``meta`` holds any extra keys of the JSONL line (e.g. a question type a benchmark
    reports separately); they pass through validation untouched.
    """

    id: str
    modality: str
    media: str
    question: str
    answers: list[str]
    choices: list[str] | None = None
    split: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def media_path(self, root: str | Path | None = None) -> Path:
        """The media file as written, joined to ``root`` when relative. This does *not*
        check that it stays inside ``root``: validation does (:func:`confined_media`)."""
        path = Path(
            self.media[len("file://") :] if self.media.startswith("file://") else self.media
        )
        if path.is_absolute() or root is None:
            return path
        return Path(root) / path

    def to_dict(self) -> dict[str, Any]:
        """The canonical JSON object (extra ``meta`` keys flattened back in)."""
        out: dict[str, Any] = {k: v for k, v in asdict(self).items() if k != "meta"}
        if out["choices"] is None:
            del out["choices"]
        if out["split"] is None:
            del out["split"]
        out.update(self.meta)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one line; ``reason`` is a stable key used for counting."""

    file: str
    line: int
    field: str
    reason: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: field '{self.field}': {self.message}"


@dataclass
class ValidationReport:
    """What validation found: totals, every problem, and counts per reason."""

    path: str
    n_records: int = 0
    n_good: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def n_bad(self) -> int:
        return self.n_records - self.n_good

    @property
    def bad_lines(self) -> list[int]:
        return sorted({p.line for p in self.problems})

    @property
    def counts(self) -> dict[str, int]:
        """Problems per reason, e.g. ``{"media_missing": 3, "duplicate_id": 1}``."""
        return dict(sorted(Counter(p.reason for p in self.problems).items()))

    def summary(self) -> str:
        if not self.problems:
            return f"{self.path}: {self.n_records} records, all valid"
        reasons = ", ".join(f"{k}={v}" for k, v in self.counts.items())
        return (
            f"{self.path}: {self.n_good} of {self.n_records} records valid, "
            f"{self.n_bad} skipped ({reasons})"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for a staged dataset's manifest."""
        return {
            "path": self.path,
            "n_records": self.n_records,
            "n_good": self.n_good,
            "n_bad": self.n_bad,
            "counts": self.counts,
            "problems": [asdict(p) for p in self.problems],
        }

    def error_message(self, hint: str | None = None) -> str:
        """Every problem (capped), then ``hint``: what the *calling command* offers
        (``data.skip_bad`` in training, no ``--strict`` in staging); None adds nothing."""
        shown = "\n".join(f"  {p}" for p in self.problems[:MAX_LISTED])
        rest = len(self.problems) - MAX_LISTED
        more = f"\n  ... and {rest} more problem(s)" if rest > 0 else ""
        text = (
            f"{len(self.problems)} problem(s) in {self.path} "
            f"({self.n_bad} of {self.n_records} records bad):\n{shown}{more}"
        )
        if hint:
            text += "\n" + hint
        return text


# ---- media confinement --------------------------------------------------------------------
OUTSIDE_ROOT = (
    "is outside the dataset root; media paths must be relative to the root and stay inside "
    "it (no '..', absolute paths, file:// URIs or symbolic links leading out)"
)


def confined_media(
    record: Record, root: str | Path, media_roots: Sequence[str | Path] = ()
) -> Path | None:
    """The real path of ``record``'s media if it lies inside ``root`` (or one of
    ``media_roots``) once ``..`` and symbolic links are resolved; None otherwise.

    Why: a dataset is input from someone else. Without this, ``"media": "../../etc/passwd"``
    or a link to ``/home`` would be opened, trained on and copied into a staged (perhaps
    published) dataset. The check is purely about the path, made before the file is
    looked at, so the answer for a file outside the root is the same whether it exists
    or not and reveals nothing about the machine.
    """
    path = record.media_path(root)
    try:
        real = path.resolve()  # follows every link, also those inside the root
    except (OSError, RuntimeError):  # a symlink loop
        return None
    for base in (root, *media_roots):
        try:
            if real.is_relative_to(Path(base).resolve()):
                return real
        except (OSError, RuntimeError):
            continue
    return None


# ---- field checks --------------------------------------------------------------------------
def _type_name(v: Any) -> str:
    return "null" if v is None else type(v).__name__


def _check_fields(obj: dict[str, Any], modality: str | None) -> list[tuple[str, str, str]]:
    """Problems of one parsed line as ``(field, reason, message)``; empty when valid."""
    out: list[tuple[str, str, str]] = []
    for name in REQUIRED_FIELDS:
        if name not in obj:
            out.append((name, "missing_field", "required field is missing"))
    rid = obj.get("id")
    if "id" in obj:
        # Integer ids are common in exported datasets; they are normalised to strings.
        if isinstance(rid, bool) or not isinstance(rid, str | int):
            out.append(("id", "wrong_type", f"must be a string, got {_type_name(rid)}"))
        elif isinstance(rid, str) and not rid.strip():
            out.append(("id", "empty_field", "must not be empty"))
    for name in ("media", "question"):
        if name in obj:
            v = obj[name]
            if not isinstance(v, str):
                out.append((name, "wrong_type", f"must be a string, got {_type_name(v)}"))
            elif not v.strip():
                out.append((name, "empty_field", "must not be empty"))
    mod = obj.get("modality")
    if "modality" in obj:
        if not isinstance(mod, str):
            out.append(("modality", "wrong_type", f"must be a string, got {_type_name(mod)}"))
        elif mod not in MODALITIES:
            out.append(
                ("modality", "unknown_modality", f"{mod!r} is not one of {', '.join(MODALITIES)}")
            )
        elif modality is not None and mod != modality:
            out.append(
                (
                    "modality",
                    "modality_mismatch",
                    f"record is {mod!r} but this dataset is used as {modality!r}",
                )
            )
    if "answers" in obj:
        out += _check_str_list("answers", obj["answers"], min_len=1)
    choices = obj.get("choices")
    if choices is not None:
        problems = _check_str_list("choices", choices, min_len=2)
        out += problems
        if not problems and isinstance(obj.get("answers"), list) and obj["answers"]:
            first = obj["answers"][0]
            if isinstance(first, str) and first not in choices:
                out.append(
                    (
                        "answers",
                        "answer_not_in_choices",
                        f"first answer {first!r} is not one of the choices {choices!r}",
                    )
                )
    split = obj.get("split")
    if split is not None and not isinstance(split, str):
        out.append(("split", "wrong_type", f"must be a string or null, got {_type_name(split)}"))
    return out


def _check_str_list(name: str, v: Any, min_len: int) -> list[tuple[str, str, str]]:
    if not isinstance(v, list):
        return [(name, "wrong_type", f"must be a list of strings, got {_type_name(v)}")]
    if len(v) < min_len:
        return [(name, "empty_field", f"must hold at least {min_len} item(s), got {len(v)}")]
    for i, item in enumerate(v):
        if not isinstance(item, str):
            return [(name, "wrong_type", f"item {i} must be a string, got {_type_name(item)}")]
        if not item.strip():
            return [(name, "empty_field", f"item {i} is an empty string")]
    return []


def _make_record(obj: dict[str, Any]) -> Record:
    known = set(REQUIRED_FIELDS) | set(OPTIONAL_FIELDS)
    return Record(
        id=str(obj["id"]),
        modality=obj["modality"],
        media=obj["media"],
        question=obj["question"],
        answers=list(obj["answers"]),
        choices=list(obj["choices"]) if obj.get("choices") is not None else None,
        split=obj.get("split"),
        meta={k: v for k, v in obj.items() if k not in known},
    )


def _check_media(
    record: Record,
    root: Path,
    sampling_rate: int | None,
    media_roots: Sequence[Path] = (),
    open_file: bool = True,
) -> tuple[str, str, str] | None:
    """A media problem of ``record``, or None. ``open_file=False`` checks only that the
    path stays inside the root (done even when media checks are off: it is about safety)."""
    if "://" in record.media and not record.media.startswith("file://"):
        return (
            "media",
            "media_missing",
            f"{record.media!r} is a remote URI; stage the dataset to local disk first",
        )
    path = confined_media(record, root, media_roots)
    if path is None:
        return ("media", "media_outside_root", f"media {record.media!r} {OUTSIDE_ROOT}")
    if not open_file:
        return None
    if not path.is_file():
        return ("media", "media_missing", f"file {path} does not exist")
    found = check_image(path) if record.modality == "image" else check_audio(path, sampling_rate)
    return None if found is None else ("media", *found)


# ---- the validation pass -------------------------------------------------------------------
def read_records(
    path: str | Path,
    root: str | Path | None = None,
    modality: str | None = None,
    skip_bad: bool = False,
    check_media: bool = True,
    sampling_rate: int | None = None,
    media_roots: Sequence[str | Path] = (),
    hint: str | None = None,
) -> tuple[list[Record], ValidationReport]:
    """Read and validate a canonical JSONL file.

    Args:
      path: the JSONL file.
      root: folder relative media paths are resolved against; default the JSONL's folder.
      modality: if set, records of the other modality are problems (the model has one
        encoder).
      skip_bad: drop bad records and count them instead of raising.
      check_media: open every media file's header (fast; disable for remote-only checks).
      sampling_rate: the rate audio will be resampled to, named in rate problems.
      media_roots: further folders media may lie in besides ``root`` (a format source's
        own option, e.g. A-OKVQA's ``coco_root``); anything else outside is rejected.
      hint: the last line of the error, naming what the calling command offers.

    Returns the good records in file order and the :class:`ValidationReport`.
    Raises :class:`DataError` if the file is missing, holds no records, or (unless
    ``skip_bad``) any record is bad; the message lists the problems.
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(f"dataset file {path} is a directory, not a JSONL file")
    if not path.is_file():
        raise DataError(f"dataset file {path} does not exist")
    root = Path(root) if root is not None else path.parent
    fname = str(path)
    report = ValidationReport(path=fname)
    candidates: list[tuple[int, Record]] = []
    first_line_of: dict[str, int] = {}
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"dataset file {path} cannot be read: {e}") from None

    for lineno, line in enumerate(raw.splitlines(), start=1):
        if lineno == 1 and line.startswith(b"\xef\xbb\xbf"):
            line = line[3:]  # UTF-8 byte-order mark written by some editors
        if not line.strip():
            continue
        report.n_records += 1
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            report.problems.append(
                Problem(fname, lineno, "(line)", "encoding", f"not valid UTF-8 at byte {e.start}")
            )
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            report.problems.append(
                Problem(
                    fname, lineno, "(line)", "json", f"invalid JSON at column {e.colno}: {e.msg}"
                )
            )
            continue
        if not isinstance(obj, dict):
            report.problems.append(
                Problem(
                    fname,
                    lineno,
                    "(line)",
                    "wrong_type",
                    f"must be a JSON object, got {_type_name(obj)}",
                )
            )
            continue
        found = _check_fields(obj, modality)
        if found:
            report.problems += [Problem(fname, lineno, f, r, m) for f, r, m in found]
            continue
        record = _make_record(obj)
        if record.id in first_line_of:
            report.problems.append(
                Problem(
                    fname,
                    lineno,
                    "id",
                    "duplicate_id",
                    f"id {record.id!r} was already used on line {first_line_of[record.id]}",
                )
            )
            continue
        first_line_of[record.id] = lineno
        candidates.append((lineno, record))

    return _finish(
        report, candidates, root, sampling_rate, media_roots, check_media, skip_bad, hint
    )


def _finish(
    report: ValidationReport,
    candidates: list[tuple[int, Record]],
    root: Path,
    sampling_rate: int | None,
    media_roots: Sequence[str | Path],
    check_media: bool,
    skip_bad: bool,
    hint: str | None = None,
) -> tuple[list[Record], ValidationReport]:
    """The media pass over records whose fields are valid, then the verdict."""
    extra = [Path(m) for m in media_roots]
    if candidates:
        # Header reads are I/O bound (network filesystems especially); threads overlap them.
        workers = min(16, (os.cpu_count() or 1) * 2, len(candidates))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            media_found = list(
                pool.map(
                    lambda c: _check_media(c[1], root, sampling_rate, extra, check_media),
                    candidates,
                )
            )
    else:
        media_found = []

    good: list[Record] = []
    for (lineno, record), found in zip(candidates, media_found, strict=True):
        if found is None:
            good.append(record)
        else:
            report.problems.append(Problem(report.path, lineno, *found))
    report.problems.sort(key=lambda p: p.line)
    report.n_good = len(good)

    if report.n_records == 0:
        raise DataError(f"dataset file {report.path} contains no records")
    if report.problems and not skip_bad:
        raise DataError(report.error_message(hint))
    if not good:
        raise DataError(
            f"every record of {report.path} is bad, nothing is left to use. "
            + report.error_message()
        )
    return good, report


def validate_records(
    records: list[Record],
    root: str | Path,
    source: str,
    modality: str | None = None,
    skip_bad: bool = False,
    check_media: bool = True,
    sampling_rate: int | None = None,
    media_roots: Sequence[str | Path] = (),
    hint: str | None = None,
) -> tuple[list[Record], ValidationReport]:
    """The checks of :func:`read_records` for records already in memory (a format
    loader's), so evaluation checks every record up front exactly like training does.
    Problems are reported as ``<source>:<n>`` with ``n`` the record's 1-based position."""
    report = ValidationReport(path=source, n_records=len(records))
    candidates: list[tuple[int, Record]] = []
    first: dict[str, int] = {}
    for n, record in enumerate(records, start=1):
        found = _check_fields(record.to_dict(), modality)
        if found:
            report.problems += [Problem(source, n, f, r, m) for f, r, m in found]
            continue
        if record.id in first:
            report.problems.append(
                Problem(
                    source,
                    n,
                    "id",
                    "duplicate_id",
                    f"id {record.id!r} was already used by record {first[record.id]}",
                )
            )
            continue
        first[record.id] = n
        candidates.append((n, record))
    return _finish(
        report, candidates, Path(root), sampling_rate, media_roots, check_media, skip_bad, hint
    )


def write_records(records: list[Record], path: str | Path) -> Path:
    """Write records as canonical JSONL (UTF-8, one object per line), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            for r in records:
                f.write(r.to_json() + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
