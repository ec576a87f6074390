"""TextVQA 0.5.1 (Singh et al., CVPR 2019) in its published layout.

Layout followed (https://textvqa.org/dataset, the files MMF and LAVIS load)::

    <root>/TextVQA_0.5.1_train.json   {"dataset_name": "textvqa", "dataset_version": "0.5.1",
    <root>/TextVQA_0.5.1_val.json      "data": [{"question_id": 34602, "question": "...",
    <root>/TextVQA_0.5.1_test.json               "image_id": "0054c91397f2fe05", "answers":
                                                 [10 strings], "image_classes": [...],
                                                 "set_name": "train", ...}]}
    <root>/train_images/<image_id>.jpg   train AND val images (train_val_images.zip)
    <root>/test_images/<image_id>.jpg    test images (test_images.zip)

Variants accepted: the images folder as unpacked from the zip (``train_images/``) or
still inside a ``train_val_images/`` folder;
``question_id`` as an integer or a string. The test split publishes no answers: its
questions are skipped (counted as ``unlabeled``) unless ``include_unlabeled=True``, in
which case they come back with ``answers=[]`` for prediction-only runs.

Every record has the 10 annotator answers (VQA accuracy needs all of them, duplicates
included), ``meta={"qtype": "open", "image_id": ...}``.
"""

from __future__ import annotations

from pathlib import Path

from commit_train.data.records import Record
from commit_train.errors import DataError
from evaluation.formats._common import (
    LoadResult,
    Tally,
    check_root,
    check_split,
    finish,
    first_dir,
    media_ref,
    need,
    read_json,
    require_file,
    str_list,
)

NAME = "textvqa"
SPLITS = ("train", "val", "test")
ANNOTATION_FILE = "TextVQA_0.5.1_{split}.json"
# The official release keeps val images with the train images (one zip for both).
IMAGE_DIRS = {
    "train": ("train_images", "train_val_images/train_images"),
    "val": ("train_images", "train_val_images/train_images"),
    "test": ("test_images",),
}
EXPECTED = "a JSON object with a 'data' list of {question_id, question, image_id, answers}"


def load(root: str | Path, split: str, *, include_unlabeled: bool = False) -> LoadResult:
    """Load one TextVQA split as canonical image records (see the module docstring)."""
    root = check_root(root, NAME)
    check_split(NAME, split, SPLITS)
    path = require_file(root / ANNOTATION_FILE.format(split=split), EXPECTED)
    doc = read_json(path, EXPECTED)
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        raise DataError(f"{path.name}: expected {EXPECTED} (in {path})")
    image_dir = first_dir(root, IMAGE_DIRS[split], f"TextVQA {split} images")

    tally = Tally()
    records: list[Record] = []
    for i, item in enumerate(doc["data"]):
        tally.examples += 1
        where = f"{path}: data[{i}]"
        qid = need(item, "question_id", (int, str), where, EXPECTED)
        question = need(item, "question", str, where, EXPECTED).strip()
        image_id = str(need(item, "image_id", (str, int), where, EXPECTED))
        raw_answers = item.get("answers")
        answers = str_list(raw_answers) if raw_answers is not None else []
        if answers is None:
            raise DataError(f"{where}: field 'answers' must be a list of strings")
        if not answers and not include_unlabeled:
            tally.skip("unlabeled")
            continue
        if not question:
            tally.skip("empty_question")
            continue
        image = image_dir / f"{image_id}.jpg"
        if not image.is_file():
            tally.skip("media_missing")
            continue
        records.append(
            Record(
                id=str(qid),
                modality="image",
                media=media_ref(image, root),
                question=question,
                answers=answers,
                split=split,
                meta={"qtype": "open", "image_id": image_id},
            )
        )
    return finish(records, tally, NAME, split, path)
