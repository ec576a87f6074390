"""The vision benchmark: every answer is true of its image, scenes never overlap, splits
never share an image, and the same seed gives the same bytes."""

from __future__ import annotations

import json
from collections import Counter

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
    assert set(manifest["vocab"]["shape_corner_mc"]) <= set(bv.CORNERS)


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
            elif qt.startswith("shape"):
                (obj,) = m["objects"]
                if qt == "shape_name":
                    assert r.answers[0] == obj["shape"]
                elif qt == "shape_colour":
                    assert r.answers == [obj["colour"]]
                elif qt == "shape_side":
                    asked = r.question.split("on the ")[1].split(" side")[0]
                    assert r.answers == ["yes" if asked in obj["corner"] else "no"]
                else:
                    assert r.answers == [obj["corner"]] and obj["shape"] in r.question


def _quarter(box: list[int]) -> str:
    """The quarter of the image the box lies in wholly, or '' when it crosses a centre line
    or touches the border."""
    half, m = bv.IMAGE_SIZE // 2, bv.MARGIN
    x0, y0, x1, y1 = box
    if not (x0 >= m and y0 >= m and x1 <= bv.IMAGE_SIZE - m and y1 <= bv.IMAGE_SIZE - m):
        return ""
    h = "left" if x1 <= half - m else "right" if x0 >= half + m else ""
    v = "top" if y1 <= half - m else "bottom" if y0 >= half + m else ""
    return f"{v} {h}" if h and v else ""


@needs_fmnist
def test_each_shape_lies_wholly_in_its_corner(small):
    for split in ("train", "val", "test"):
        for r in _records(small, split):
            for obj in r.meta.get("objects", []):
                x0, y0, x1, y1 = obj["box"]
                assert x1 - x0 == y1 - y0 and bv.SIZE_RANGE[0] <= x1 - x0 < bv.SIZE_RANGE[1]
                assert _quarter(obj["box"]) == obj["corner"], (r.id, obj)


def test_shape_questions_cover_every_answer_and_stay_balanced():
    """Every corner, side answer, shape and colour occurs, and yes/no is near 50/50, so the
    majority guess cannot score well on the shape families."""
    rng = np.random.default_rng(1)
    seen: dict[str, Counter] = {q: Counter() for q in bv.QTYPES if q.startswith("shape")}
    for qtype in seen:
        for _ in range(400):
            objects, q, answers, choices = bv._shape_question(rng, qtype)
            assert _quarter(objects[0]["box"]) == objects[0]["corner"]
            if choices is not None:
                assert answers[0] in choices and len(set(choices)) == 4
            seen[qtype][answers[0]] += 1
    assert set(seen["shape_name"]) == set(bv.SHAPES)
    assert set(seen["shape_colour"]) == set(bv.COLOURS)
    assert set(seen["shape_corner_mc"]) == set(bv.CORNERS)
    assert 0.4 < seen["shape_side"]["yes"] / 400 < 0.6


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
