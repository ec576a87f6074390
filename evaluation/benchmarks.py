"""Which records a benchmark name means, and how they are scored.

Three kinds of source, one result type (:class:`BenchmarkData`):

* built-in offline benchmarks (``vision``, ``audio``; also written ``builtin:<name>``),
  generated on first use from content shipped in packages;
* the paper's real datasets in their own published layout (``textvqa``, ``aokvqa``,
  ``clotho_aqa``, ``macs``, ...), read from ``data_dir`` by :mod:`evaluation.formats`;
* a canonical JSONL file (a staged dataset, or anything the user wrote).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from commit_train.data.builtin import BUILTIN_NAMES, chance_levels, resolve_data_source
from commit_train.data.records import Record, read_records
from commit_train.errors import DataError

CAPTION_FORMATS = ("macs", "song_describer")


@dataclass
class BenchmarkData:
    name: str
    kind: str  # "qa" (accuracy metrics) or "caption" (BLEU/ROUGE-L/CIDEr)
    records: list[Record]
    root: Path
    chance: dict[str, float] | None = None


def known_benchmarks() -> list[str]:
    from evaluation.formats import known_formats

    return [*BUILTIN_NAMES, *known_formats()]


def load_benchmark(
    benchmark: str, split: str = "test", data_dir: str | Path | None = None
) -> BenchmarkData:
    """Resolve ``benchmark`` to its records for ``split``; raises :class:`DataError`."""
    from evaluation.formats import canonical_name, detect_format, load_dataset_dir

    name = benchmark.removeprefix("builtin:")
    if name in BUILTIN_NAMES:
        jsonl, root = resolve_data_source(f"builtin:{name}", split)
        records, _ = read_records(jsonl, root)
        return BenchmarkData(name, "qa", records, Path(root), chance_levels(records))
    path = Path(benchmark)
    if path.suffix == ".jsonl" or path.is_file():
        if not path.is_file():
            raise DataError(f"benchmark file {path} does not exist")
        records, _ = read_records(path, data_dir or path.parent)
        records = [r for r in records if r.split in (None, split)] or records
        return BenchmarkData(path.stem, "qa", records, Path(data_dir or path.parent))
    if path.is_dir() and data_dir is None:
        fmt = detect_format(path)
        if fmt is None:
            raise DataError(
                f"cannot tell the format of dataset directory {path}; pass the format name "
                f"as --benchmark and the directory as --data-dir (known: "
                f"{', '.join(known_benchmarks())})"
            )
        name, data_dir = fmt, path
    try:
        fmt = canonical_name(name)
    except (DataError, KeyError, ValueError):
        raise DataError(
            f"unknown benchmark {benchmark!r}; known: {', '.join(known_benchmarks())}, or a "
            "path to a canonical JSONL file"
        ) from None
    if data_dir is None:
        raise DataError(
            f"benchmark {fmt!r} reads the dataset in its own layout: pass --data-dir "
            "<directory where you unpacked it>"
        )
    records, _ = load_dataset_dir(fmt, data_dir, split)
    if not records:
        raise DataError(f"benchmark {fmt!r} split {split!r} in {data_dir} has no records")
    kind = "caption" if fmt in CAPTION_FORMATS else "qa"
    return BenchmarkData(fmt, kind, records, Path(data_dir))
