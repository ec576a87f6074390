"""Loaders that turn each paper benchmark's *own published layout* into canonical records.

Users download TextVQA, IconQA, A-OKVQA, Clotho-AQA, MACS and the Song Describer Dataset
themselves (large, separately licensed); staging calls :func:`load_dataset_dir` on the
unpacked folder and writes, validates and versions the records it gets back. This package
only reads: it never writes a file, so a failed conversion can leave nothing half-done.
Each module's docstring names the layout it follows, its source, and the variants it
accepts (shared/docs/DATASETS.md lists the datasets).

Every loader returns ``(records, counts)``: ``counts`` is ``{"examples": read,
"records": returned, <reason>: skipped, ...}`` so staging can record what it dropped and
why (unlabeled test questions, image-choice questions, missing media...). Errors are
:class:`~commit_train.errors.DataError` naming the file and what was expected.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

from commit_train.data.records import Record
from commit_train.errors import DataError
from evaluation.formats import aokvqa, clotho_aqa, iconqa, macs, song_describer, textvqa

_MODULES = (textvqa, iconqa, aokvqa, clotho_aqa, macs, song_describer)

LOADERS: dict[str, Callable[..., tuple[list[Record], dict[str, int]]]] = {
    m.NAME: m.load for m in _MODULES
}
"""Format name -> ``load(root, split, **opts) -> (records, counts)``."""

SPLITS: dict[str, tuple[str, ...]] = {m.NAME: m.SPLITS for m in _MODULES}
"""Format name -> the split names its loader accepts (MACS/SDD publish no train/test)."""

ALIASES = {
    "a_okvqa": "aokvqa",
    "clothoaqa": "clotho_aqa",
    "clotho": "clotho_aqa",
    "sdd": "song_describer",
    "songdescriber": "song_describer",
}


def known_formats() -> list[str]:
    """The format names :func:`load_dataset_dir` accepts (aliases not included)."""
    return sorted(LOADERS)


def canonical_name(name: str) -> str:
    """``name`` normalised (case, ``-``/space -> ``_``, aliases such as ``sdd``)."""
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    key = ALIASES.get(key, key)
    if key not in LOADERS:
        raise DataError(
            f"unknown dataset format {name!r}; known formats: {', '.join(known_formats())}"
        )
    return key


def load_dataset_dir(
    name: str, root: str | Path, split: str, **opts: object
) -> tuple[list[Record], dict[str, int]]:
    """Load ``split`` of the dataset unpacked at ``root`` in format ``name``.

    ``opts`` are the loader's keyword options (e.g. ``mode="da"`` for A-OKVQA,
    ``include_image_choices=True`` for IconQA, ``include_unlabeled=True`` for the
    unlabeled TextVQA/A-OKVQA test splits); an option the loader does not take raises
    :class:`DataError` listing the ones it does, since these come from user recipes.
    """
    fmt = canonical_name(name)
    loader = LOADERS[fmt]
    params = inspect.signature(loader).parameters
    accepted = [p for p, v in params.items() if v.kind is inspect.Parameter.KEYWORD_ONLY]
    unknown = sorted(set(opts) - set(accepted))
    if unknown:
        raise DataError(
            f"{fmt}: unknown option(s) {', '.join(unknown)}; "
            f"it accepts: {', '.join(accepted) or 'none'}"
        )
    return loader(root, split, **opts)


# File names that identify a layout; checked at the root and one level down for IconQA.
_SIGNATURES: dict[str, Callable[[Path], bool]] = {
    "textvqa": lambda r: any(r.glob("TextVQA_*_*.json")),
    "iconqa": lambda r: (
        (r / "iconqa").is_dir()
        or (r / "pid_splits.json").is_file()
        or (r / "iconqa_data" / "iconqa").is_dir()
    ),
    "aokvqa": lambda r: any(r.glob("aokvqa_v*_*.json")),
    "clotho_aqa": lambda r: any(r.glob("clotho_aqa_*.csv")),
    "macs": lambda r: (r / "MACS.yaml").is_file(),
    "song_describer": lambda r: (r / "song_describer.csv").is_file(),
}


def detect_format(root: str | Path) -> str | None:
    """Guess the format of the dataset folder ``root`` from its file names.

    Returns the format name, or None when no known layout's files are there. A folder
    holding the files of several datasets raises :class:`DataError` listing them (the
    caller must name the format rather than have one picked silently).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"dataset root {root} is not a directory")
    found = [name for name, matches in _SIGNATURES.items() if matches(root)]
    if len(found) > 1:
        raise DataError(
            f"{root} holds files of several dataset formats ({', '.join(found)}); "
            "name the format explicitly"
        )
    return found[0] if found else None


__all__ = [
    "LOADERS",
    "SPLITS",
    "canonical_name",
    "detect_format",
    "known_formats",
    "load_dataset_dir",
]
