"""The vision benchmark: every answer is true of its image, scenes never overlap, splits
never share an image, and the same seed gives the same bytes."""

from __future__ import annotations

import json
import re
from collections import Counter
from itertools import combinations

import numpy as np
import pytest
from PIL import Image

from commit_train.data import builtin_vision as bv
from commit_train.data.builtin import make_builtin
from commit_train.data.questions import NUMBER_WORDS
from commit_train.data.records import read_records

from .test_builtin import needs_fmnist, tree_hash

SMALL = {"n_train": 30, "n_val": 10, "n_test": 10}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    if not (bv.FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip("apt-get install dataset-fashion-mnist")
    return make_builtin("vision", tmp_path_factory.mktemp("v") / "vision", **SMALL)


def _records(path, split):
    records, report = read_records(path / f"{split}.jsonl", path, modality="image")
    assert not report.problems
    return records


def _gap_ok(a, b):
    return (
        a[2] + bv.GAP <= b[0]
        or b[2] + bv.GAP <= a[0]
        or a[3] + bv.GAP <= b[1]
        or b[3] + bv.GAP <= a[1]
    )


@needs_fmnist
def test_same_seed_same_bytes_other_seed_differs(small, tmp_path):
    assert tree_hash(make_builtin("vision", tmp_path / "again", **SMALL)) == tree_hash(small)
    other = make_builtin("vision", tmp_path / "seed1", seed=1, **SMALL)
    assert tree_hash(other) != tree_hash(small)


@needs_fmnist
def test_qtype_counts_are_balanced_and_recorded(small):
    manifest = json.loads((small / "manifest.json").read_text())
    for split, n in (("train", 30), ("val", 10), ("test", 10)):
        counts = Counter(r.meta["qtype"] for r in _records(small, split))
        assert sum(counts.values()) == n and set(counts) <= set(bv.QTYPES)
        assert max(counts.values()) - min(counts.get(q, 0) for q in bv.QTYPES) <= 1
        assert manifest["qtypes"][split] == dict(sorted(counts.items()))
    assert set(manifest["vocab"]) == set(bv.QTYPES)
    assert set(manifest["vocab"]["shape_relation_mc"]) <= {"above", "below", "left", "right"}


@needs_fmnist
def test_images_are_112_rgb_and_answers_are_true(small):
    names = [c[0] for c in bv.FASHION_CLASSES]
    for split in ("train", "val", "test"):
        for r in _records(small, split):
            with Image.open(r.media_path(small)) as img:
                assert img.size == (bv.IMAGE_SIZE, bv.IMAGE_SIZE) and img.mode == "RGB"
            qt, m = r.meta["qtype"], r.meta
            if r.choices is not None:
                assert r.answers[0] in r.choices and len(set(r.choices)) == len(r.choices) == 4
            if qt == "clothing_open" or qt == "clothing_mc":
                assert r.answers[0] == m["label"] in names
            elif qt == "clothing_yesno":
                asked = [c[0] for c in bv.FASHION_CLASSES if r.question == f"Is this {c[2]}?"]
                assert r.answers == ["yes" if asked == [m["label"]] else "no"]
            elif qt == "digit_open":
                assert r.answers == [str(NUMBER_WORDS.index(m["label"])), m["label"]]
            elif qt == "digit_parity":
                even = NUMBER_WORDS.index(m["label"]) % 2 == 0
                assert (r.answers == ["yes"]) == (even == ("even" in r.question))
            elif qt == "digit_compare":
                k = int(r.question.split("than ")[1].rstrip("?"))
                assert (r.answers == ["yes"]) == (NUMBER_WORDS.index(m["label"]) > k)
            elif qt == "shape_count":
                shape = r.question.split("many ")[1].split("s are")[0]
                assert int(r.answers[0]) == sum(o["shape"] == shape for o in m["objects"])
            elif qt == "shape_colour":
                pos = r.question.split("the ")[1].split(" shape")[0]
                axis, take_max = bv.POSITIONS[pos]
                centres = [(o["box"][axis] + o["box"][axis + 2]) / 2 for o in m["objects"]]
                best = int(np.argmax(centres) if take_max else np.argmin(centres))
                assert r.answers == [m["objects"][best]["colour"]]


@needs_fmnist
def test_scenes_in_records_never_overlap(small):
    for split in ("train", "val", "test"):
        for r in _records(small, split):
            boxes = [o["box"] for o in r.meta.get("objects", [])]
            assert all(_gap_ok(a, b) for a, b in combinations(boxes, 2))
            assert all(0 <= v <= bv.IMAGE_SIZE for b in boxes for v in b)


def test_place_boxes_never_overlaps_even_when_crowded():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 9))
        boxes = bv.place_boxes(rng, n)
        assert len(boxes) == n
        assert all(_gap_ok(a, b) for a, b in combinations(boxes, 2))
        assert all(0 <= v <= bv.IMAGE_SIZE for b in boxes for v in b)


def test_relation_answers_follow_the_geometry():
    rng = np.random.default_rng(1)
    phrases = "|".join(bv.RELATIONS.values())
    yesno = re.compile(rf"Is the (\w+ \w+) ({phrases}) the (\w+ \w+)\?")
    where = re.compile(r"Where is the (\w+ \w+) relative to the (\w+ \w+)\?")
    for qtype in ("shape_relation_yesno", "shape_relation_mc"):
        for _ in range(50):
            objects, q, answers, choices = bv._scene_question(rng, qtype)
            named = {bv._name(o): o for o in objects}
            assert len(named) == len(objects)  # every object has a unique description
            if choices:
                a, b = where.fullmatch(q).groups()
            else:
                a, phrase, b = yesno.fullmatch(q).groups()
            (ax, ay), (bx, by) = bv._centre(named[a]), bv._centre(named[b])
            truth = {"left": ax < bx, "right": ax > bx, "above": ay < by, "below": ay > by}
            if choices:
                assert truth[answers[0]] and answers[0] in choices
            else:
                rel = next(k for k, v in bv.RELATIONS.items() if v == phrase)
                assert (answers == ["yes"]) == truth[rel]


@needs_fmnist
def test_val_and_test_images_are_disjoint_from_train(small):
    seen = {}
    for split in ("train", "val", "test"):
        seen[split] = {
            (r.meta["source"], r.meta["source_index"])
            for r in _records(small, split)
            if "source_index" in r.meta
        }
    # Fashion-MNIST train indices come from another file; MNIST indices share one file.
    mnist = {s: {i for src, i in v if src == "mnist"} for s, v in seen.items()}
    assert not (mnist["train"] & mnist["val"]) and not (mnist["train"] & mnist["test"])
    fm = {s: {i for src, i in v if src == "fashion-mnist"} for s, v in seen.items()}
    assert not (fm["val"] & fm["test"])
    _, labels = bv.load_mnist5k()
    for split, (lo, hi) in bv.MNIST_PER_CLASS.items():
        for i in mnist[split]:
            rank = int(np.sum(labels[:i] == labels[i]))
            assert lo <= rank < hi
