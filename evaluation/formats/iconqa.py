"""IconQA (Lu et al., NeurIPS 2021 Datasets and Benchmarks) in its published layout.

Layout followed (``iconqa_data.zip`` from https://github.com/lupantech/IconQA, read the
way its ``run_*/dataset.py`` and ``tools/*.py`` and mmpretrain's ``IconQA`` dataset do)::

    <root>/iconqa/<split>/<sub-task>/<pid>/data.json   {"question", "choices", "answer",
                                                        "ques_type", "grade", "label", ...}
    <root>/iconqa/<split>/<sub-task>/<pid>/image.png
    <root>/iconqa/<split>/choose_img/<pid>/choice_0.png, choice_1.png, ...
    <root>/pid_splits.json    {"choose_txt_train": [pid, ...], "fill_in_blank_val": ...}
    <root>/problems.json      {pid: <the same object as data.json>, ...}   (optional)

with ``<split>`` one of train/val/test and ``<sub-task>`` one of:

- ``choose_txt``: multiple choice over text; ``answer`` is an index into ``choices``.
  Record: ``choices`` = the texts, ``answers`` = ``[choices[answer]]``.
- ``fill_in_blank``: open answer (``answer`` is the text, usually a number).
  Record: ``choices`` = None, ``answers`` = ``[answer]``.
- ``choose_img``: multiple choice whose choices are *images* (``choices`` holds their
  file names, ``choice_0.png``...). Our models take one image per example and **cannot
  see the choice images**, so a choose_img record is only answerable by guessing; the
  loader therefore skips them (counted as ``image_choices``) unless
  ``include_image_choices=True``. When included, ``choices`` keeps the published file
  names, ``meta["choice_media"]`` their paths relative to the root, and
  ``meta["qtype"] == "choose_img"`` so they can be filtered or scored separately.

Every record has ``meta["qtype"]`` = the sub-task name, ``meta["answer_type"]``
(``multiple_choice`` or ``open``) and whichever of ``grade``/``label``/``skills`` the
problem has.

Variants accepted: the root may be the unpacked ``iconqa_data/`` folder or the folder
holding it; ``pid_splits.json`` is optional (without it, or without a ``<task>_<split>``
key, the problem folders are listed); a problem folder without ``data.json`` is read from
``problems.json`` when that file is present; ``answer`` as an int or a numeric string.
Pids listed in ``pid_splits.json`` whose folder is absent are counted as
``missing_problem``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from commit_train.data.records import Record
from commit_train.errors import DataError
from evaluation.formats._common import (
    LoadResult,
    Tally,
    check_root,
    check_split,
    finish,
    media_ref,
    need,
    read_json,
    str_list,
)

NAME = "iconqa"
SPLITS = ("train", "val", "test")
SUB_TASKS = ("choose_txt", "fill_in_blank", "choose_img")
EXPECTED_PROBLEM = "a JSON object with 'question', 'answer' and (for choose_*) 'choices'"
EXPECTED_SPLITS = "a JSON object mapping '<sub-task>_<split>' to a list of problem ids"
EXPECTED_LAYOUT = "iconqa/<split>/<sub-task>/<problem id>/data.json + image.png"


def load(root: str | Path, split: str, *, include_image_choices: bool = False) -> LoadResult:
    """Load one IconQA split as canonical image records (see the module docstring)."""
    root = check_root(root, NAME)
    check_split(NAME, split, SPLITS)
    base = _find_base(root)
    split_dir = base / "iconqa" / split
    if not split_dir.is_dir():
        raise DataError(f"{split_dir}: folder not found; expected {EXPECTED_LAYOUT}")
    pid_lists = _read_pid_splits(base / "pid_splits.json", split)
    problems = _ProblemsFile(base / "problems.json")

    tally = Tally()
    records: list[Record] = []
    for task in SUB_TASKS:
        task_dir = split_dir / task
        pids = pid_lists.get(task)
        if pids is None:
            pids = sorted(
                (p.name for p in task_dir.iterdir() if p.is_dir()) if task_dir.is_dir() else [],
                key=lambda p: (len(p), p),
            )
        if task == "choose_img" and not include_image_choices:
            tally.examples += len(pids)
            tally.skip("image_choices", len(pids))
            continue
        for pid in pids:
            tally.examples += 1
            problem_dir = task_dir / pid
            if not problem_dir.is_dir():
                tally.skip("missing_problem")
                continue
            record = _record(root, problem_dir, pid, task, split, problems.get)
            if record is None:
                tally.skip("media_missing")
            else:
                records.append(record)
    return finish(records, tally, NAME, split, split_dir)


def _find_base(root: Path) -> Path:
    for base in (root, root / "iconqa_data"):
        if (base / "iconqa").is_dir():
            return base
    raise DataError(
        f"{root}: no iconqa/ folder (nor iconqa_data/iconqa/); expected {EXPECTED_LAYOUT}"
    )


def _read_pid_splits(path: Path, split: str) -> dict[str, list[str]]:
    """``{sub-task: [pid, ...]}`` for this split from pid_splits.json (empty if absent)."""
    if not path.is_file():
        return {}
    doc = read_json(path, EXPECTED_SPLITS)
    if not isinstance(doc, dict):
        raise DataError(f"{path}: expected {EXPECTED_SPLITS}")
    out: dict[str, list[str]] = {}
    for task in SUB_TASKS:
        key = f"{task}_{split}"
        if key not in doc:
            continue
        pids = doc[key]
        if not isinstance(pids, list) or not all(
            isinstance(p, str | int) and not isinstance(p, bool) for p in pids
        ):
            raise DataError(f"{path}: key {key!r} must be a list of problem ids")
        out[task] = [str(p) for p in pids]
    return out


class _ProblemsFile:
    """problems.json, read only if some problem folder lacks its data.json (it is large)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._data: dict[str, Any] | None = None

    def get(self, pid: str) -> Any:
        if self._data is None:
            if not self.path.is_file():
                return None
            doc = read_json(self.path, "a JSON object mapping problem ids to problems")
            if not isinstance(doc, dict):
                raise DataError(f"{self.path}: expected a JSON object mapping ids to problems")
            self._data = doc
        return self._data.get(pid)


def _record(
    root: Path,
    problem_dir: Path,
    pid: str,
    task: str,
    split: str,
    from_problems: Callable[[str], Any],
) -> Record | None:
    """The canonical record of one problem folder; None if its image(s) are missing."""
    data_file = problem_dir / "data.json"
    if data_file.is_file():
        data = read_json(data_file, EXPECTED_PROBLEM)
        where = str(data_file)
    else:
        data = from_problems(pid)
        where = f"problems.json[{pid!r}]"
        if data is None:
            raise DataError(
                f"{data_file}: file not found (and {pid!r} is not in problems.json); "
                f"expected {EXPECTED_PROBLEM}"
            )
    if not isinstance(data, dict):
        raise DataError(f"{where}: expected {EXPECTED_PROBLEM}")
    question = need(data, "question", str, where, EXPECTED_PROBLEM).strip()
    answer = need(data, "answer", (int, str), where, EXPECTED_PROBLEM)

    image = problem_dir / "image.png"
    if not image.is_file():
        return None
    meta: dict[str, Any] = {"qtype": task}
    if task == "fill_in_blank":
        meta["answer_type"] = "open"
        choices = None
        answers = [str(answer).strip()]
        if not answers[0]:
            raise DataError(f"{where}: field 'answer' is empty; expected the answer text")
    else:
        meta["answer_type"] = "multiple_choice"
        choices = str_list(data.get("choices"))
        if choices is None or len(choices) < 2:
            raise DataError(f"{where}: field 'choices' must be a list of at least 2 strings")
        index = _index(answer, len(choices), where)
        answers = [choices[index]]
        if task == "choose_img":
            choice_files = [problem_dir / c for c in choices]
            if not all(f.is_file() for f in choice_files):
                return None
            meta["choice_media"] = [media_ref(f, root) for f in choice_files]
    for key in ("grade", "label", "skills"):
        if key in data:
            meta[key] = data[key]
    return Record(
        id=pid,
        modality="image",
        media=media_ref(image, root),
        question=question,
        answers=answers,
        choices=choices,
        split=split,
        meta=meta,
    )


def _index(answer: int | str, n: int, where: str) -> int:
    try:
        index = int(answer)
    except ValueError:
        index = -1
    if not 0 <= index < n:
        raise DataError(
            f"{where}: field 'answer' is {answer!r}; expected an index into the {n} choices"
        )
    return index
