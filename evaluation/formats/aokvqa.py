"""A-OKVQA (Schwenk et al., ECCV 2022) in its published layout.

Layout followed (https://github.com/allenai/aokvqa, its ``load_aokvqa`` and
``get_coco_path`` helpers)::

    <root>/aokvqa_v1p0_{train,val,test}.json   a JSON list of
        {"split", "image_id": 299207, "question_id": "22MexNkBPpdZGX6sxbxVBH",
         "question", "choices": [4 strings], "correct_choice_idx": 1,
         "direct_answers": [10 strings], "difficult_direct_answer": false,
         "rationales": [3 strings]}
    <coco_root>/{train,val,test}2017/<image_id:012d>.jpg     (COCO 2017 images)

``coco_root`` defaults to ``root`` (COCO unpacked next to the annotations); when it lies
outside ``root`` the records' ``media`` are absolute paths. ``version`` picks another
annotation release (file ``aokvqa_<version>_<split>.json``).

Two variants, as the benchmark reports them:

- ``mode="mc"`` (multiple choice): ``choices`` = the 4 choices,
  ``answers`` = ``[choices[correct_choice_idx]]``, ``meta["qtype"] == "mc"``.
- ``mode="da"`` (direct answer): ``choices`` = None, ``answers`` = the 10
  ``direct_answers`` (VQA accuracy), ``meta["qtype"] == "da"``.

The test split publishes neither ``correct_choice_idx`` nor ``direct_answers``: its
questions are skipped (``unlabeled``) unless ``include_unlabeled=True`` (then
``answers=[]``). ``meta`` also carries ``image_id``, ``difficult_direct_answer`` (the
official DA evaluation leaves those out) and ``rationales`` when present.
"""

from __future__ import annotations

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
    require_file,
    str_list,
)

NAME = "aokvqa"
SPLITS = ("train", "val", "test")
MODES = ("mc", "da")
EXPECTED = (
    "a JSON list of {question_id, image_id, question, choices, correct_choice_idx, "
    "direct_answers, ...}"
)


def load(
    root: str | Path,
    split: str,
    *,
    mode: str = "mc",
    coco_root: str | Path | None = None,
    version: str = "v1p0",
    include_unlabeled: bool = False,
) -> LoadResult:
    """Load one A-OKVQA split as canonical image records (see the module docstring)."""
    root = check_root(root, NAME)
    check_split(NAME, split, SPLITS)
    if mode not in MODES:
        raise DataError(f"{NAME}: unknown mode {mode!r}; use one of {', '.join(MODES)}")
    path = require_file(root / f"aokvqa_{version}_{split}.json", EXPECTED)
    items = read_json(path, EXPECTED)
    if not isinstance(items, list):
        raise DataError(f"{path.name}: expected {EXPECTED} (in {path})")
    coco = Path(coco_root) if coco_root is not None else root
    if not coco.is_absolute():
        coco = root / coco
    image_dir = coco / f"{split}2017"
    if not image_dir.is_dir():
        raise DataError(
            f"{image_dir}: folder not found; expected the COCO 2017 {split} images "
            f"({split}2017/<image_id:012d>.jpg) under coco_root={coco}"
        )

    tally = Tally()
    records: list[Record] = []
    for i, item in enumerate(items):
        tally.examples += 1
        where = f"{path}: entry {i}"
        qid = need(item, "question_id", (str, int), where, EXPECTED)
        image_id = need(item, "image_id", int, where, EXPECTED)
        question = need(item, "question", str, where, EXPECTED).strip()
        choices, answers = _targets(item, mode, where)
        if not answers and not include_unlabeled:
            tally.skip("unlabeled")
            continue
        image = image_dir / f"{image_id:012d}.jpg"
        if not image.is_file():
            tally.skip("media_missing")
            continue
        meta: dict[str, Any] = {"qtype": mode, "image_id": image_id}
        for key in ("difficult_direct_answer", "rationales"):
            if key in item:
                meta[key] = item[key]
        records.append(
            Record(
                id=str(qid),
                modality="image",
                media=media_ref(image, root),
                question=question,
                answers=answers,
                choices=choices,
                split=split,
                meta=meta,
            )
        )
    return finish(records, tally, NAME, split, path)


def _targets(item: dict[str, Any], mode: str, where: str) -> tuple[list[str] | None, list[str]]:
    """(choices, answers) for the mode; answers empty when the split is unlabeled."""
    if mode == "da":
        raw = item.get("direct_answers")
        if raw is None:
            return None, []
        answers = str_list(raw)
        if answers is None:
            raise DataError(f"{where}: field 'direct_answers' must be a list of strings")
        return None, answers
    choices = str_list(need(item, "choices", list, where, EXPECTED))
    if choices is None or len(choices) < 2:
        raise DataError(f"{where}: field 'choices' must be a list of at least 2 strings")
    idx = item.get("correct_choice_idx")
    if idx is None:
        return choices, []
    if isinstance(idx, bool) or not isinstance(idx, int) or not 0 <= idx < len(choices):
        raise DataError(
            f"{where}: field 'correct_choice_idx' is {idx!r}; expected an index into the "
            f"{len(choices)} choices"
        )
    return choices, [choices[idx]]
