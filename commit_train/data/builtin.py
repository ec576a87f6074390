"""Built-in datasets made from real content available offline.

* ``vision``: real Fashion-MNIST photographs (Debian ``dataset-fashion-mnist``), upscaled
  to RGB PNGs, with open ("What kind of clothing item is this?"), yes/no and
  multiple-choice questions. Train images come from the official train file, val/test
  from the official test file, so evaluation never sees a training image.
* ``audio``: spoken numbers and words synthesised by ``espeak-ng`` with many voice
  variants, speeds and pitches, resampled to 16 kHz mono WAV.

Generation is deterministic for a given ``(name, sizes, seed)`` and written atomically
(temp dir next to the target, then rename) with a ``manifest.json``; calling it again with
the same parameters reuses the existing directory, so concurrent ranks or repeated
pipeline steps are safe and cheap.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import subprocess
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from PIL import Image

from commit_train.data.media import resample
from commit_train.data.records import Record, write_records
from commit_train.errors import DataError

# Bump when the generated content changes, so cached copies are regenerated.
GENERATOR_VERSION = 1
SPLITS = ("train", "val", "test")
DEFAULT_SIZES: dict[str, tuple[int, int, int]] = {
    "vision": (600, 100, 100),
    "audio": (300, 60, 60),
}
BUILTIN_NAMES = tuple(DEFAULT_SIZES)

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
IMAGE_SIZE = 112
AUDIO_RATE = 16_000

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
NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
SPOKEN_WORDS = ["cat", "dog", "bird", "horse", "red", "green", "blue", "yellow", "yes", "stop"]
ESPEAK_VOICES = ("en-us", "en")
ESPEAK_VARIANTS = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2",
)  # fmt: skip


# ---- locations -----------------------------------------------------------------------------
def cache_root() -> Path:
    """``$COMMIT_CACHE`` or ``~/.cache/commit-mlops``: one place for generated data."""
    env = os.environ.get("COMMIT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "commit-mlops"


def _check_name(name: str) -> None:
    if name not in DEFAULT_SIZES:
        raise DataError(
            f"unknown built-in dataset {name!r}; known: {', '.join(BUILTIN_NAMES)} "
            "(use builtin:<name>)"
        )


def builtin_path(name: str) -> Path:
    """Where ``ensure_builtin(name)`` keeps the dataset."""
    _check_name(name)
    return cache_root() / "data" / name


def ensure_builtin(name: str, **kwargs: Any) -> Path:
    """The built-in dataset's directory, generated on first use (default sizes)."""
    return make_builtin(name, builtin_path(name), **kwargs)


def resolve_data_source(spec: str, split: str, root: str | Path | None = None) -> tuple[Path, Path]:
    """Map a ``data.train``/``data.val`` value to ``(jsonl, media_root)``.

    ``builtin:<name>`` selects the generated split file (``train``, ``val`` or ``test``);
    anything else is a JSONL path whose media root is ``root`` or the file's folder.
    """
    if spec.startswith("builtin:"):
        name = spec[len("builtin:") :]
        _check_name(name)
        if split not in SPLITS:
            raise DataError(f"built-in datasets have splits {', '.join(SPLITS)}, not {split!r}")
        base = ensure_builtin(name)
        return base / f"{split}.jsonl", Path(root) if root is not None else base
    path = Path(spec)
    return path, Path(root) if root is not None else path.parent


# ---- generation driver ---------------------------------------------------------------------
def _sizes(name: str, n_train: int | None, n_val: int | None, n_test: int | None) -> dict:
    d = DEFAULT_SIZES[name]
    sizes = {
        "train": d[0] if n_train is None else int(n_train),
        "val": d[1] if n_val is None else int(n_val),
        "test": d[2] if n_test is None else int(n_test),
    }
    for split, n in sizes.items():
        if n < 0:
            raise ValueError(f"n_{split} must be >= 0, got {n}")
    return sizes


def _read_manifest(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _is_complete(path: Path, params: dict[str, Any]) -> bool:
    manifest = _read_manifest(path)
    return (
        manifest is not None
        and manifest.get("params") == params
        and all((path / f"{s}.jsonl").is_file() for s in SPLITS)
    )


def make_builtin(
    name: str,
    out_dir: str | Path,
    n_train: int | None = None,
    n_val: int | None = None,
    n_test: int | None = None,
    seed: int = 0,
) -> Path:
    """Generate built-in dataset ``name`` into ``out_dir`` (or reuse it) and return it.

    The directory holds ``train.jsonl``, ``val.jsonl``, ``test.jsonl`` (canonical records,
    media relative to the directory), the media files and ``manifest.json`` (parameters,
    counts). Sizes default to :data:`DEFAULT_SIZES`.
    """
    _check_name(name)
    out_dir = Path(out_dir)
    sizes = _sizes(name, n_train, n_val, n_test)
    params = {"name": name, "version": GENERATOR_VERSION, "seed": int(seed), **sizes}
    if _is_complete(out_dir, params):
        return out_dir

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        generate = _make_vision if name == "vision" else _make_audio
        counts = {}
        for split in SPLITS:
            records = generate(tmp, split, sizes[split], seed)
            write_records(records, tmp / f"{split}.jsonl")
            counts[split] = len(records)
        manifest = {"params": params, "counts": counts, "source": _SOURCES[name]}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        _publish(tmp, out_dir, params)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _publish(tmp: Path, out_dir: Path, params: dict[str, Any]) -> None:
    """Move ``tmp`` into place; a stale ``out_dir`` is swapped out, never half-overwritten."""
    stale = None
    if out_dir.exists():
        if _is_complete(out_dir, params):  # another process finished first
            return
        stale = out_dir.parent / f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(out_dir, stale)
    try:
        os.replace(tmp, out_dir)
    except OSError:
        if not _is_complete(out_dir, params):
            raise
    if stale is not None:
        shutil.rmtree(stale, ignore_errors=True)


def _split_seed(seed: int, name: str, split: str) -> np.random.Generator:
    # Independent, stable streams per split: growing one split never changes the others.
    return np.random.default_rng([seed, SPLITS.index(split), sum(map(ord, name))])


# ---- vision --------------------------------------------------------------------------------
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


def _vision_question(
    rng: np.random.Generator, label: int
) -> tuple[str, list[str], list[str] | None, str]:
    """(question, answers, choices, question type) for an image of class ``label``."""
    answer, synonyms, _ = FASHION_CLASSES[label]
    kind = rng.choice(["open", "open", "yesno", "choice"])
    if kind == "open":
        q = str(
            rng.choice(
                [
                    "What kind of clothing item is this?",
                    "What is shown in this image?",
                    "Name the item in the picture.",
                ]
            )
        )
        return q, [answer, *synonyms], None, "open"
    if kind == "yesno":
        # Half the questions ask about the true class, so "yes" and "no" are balanced.
        asked = (
            label if rng.random() < 0.5 else int(rng.choice([i for i in range(10) if i != label]))
        )
        q = f"Is this {FASHION_CLASSES[asked][2]}?"
        return q, ["yes" if asked == label else "no"], None, "yesno"
    others = rng.choice([i for i in range(10) if i != label], size=3, replace=False)
    options = [answer] + [FASHION_CLASSES[int(i)][0] for i in others]
    choices = [options[int(i)] for i in rng.permutation(4)]
    return "Which of these items is shown in the image?", [answer], choices, "choice"


def _make_vision(out: Path, split: str, n: int, seed: int) -> list[Record]:
    images, labels = load_fashion_mnist("train" if split == "train" else "t10k")
    rng = _split_seed(seed, "vision", split)
    if split == "train":
        pool = np.arange(images.shape[0])
    else:  # val and test take disjoint halves of the official test set
        half = images.shape[0] // 2
        pool = np.arange(half) if split == "val" else np.arange(half, images.shape[0])
    if n > pool.size:
        raise ValueError(f"vision {split}: at most {pool.size} images available, asked {n}")
    picked = rng.choice(pool, size=n, replace=False)
    (out / "images" / split).mkdir(parents=True, exist_ok=True)
    records = []
    for i, idx in enumerate(picked):
        rid = f"vision-{split}-{i:05d}"
        media = f"images/{split}/{rid}.png"
        img = Image.fromarray(images[idx]).resize((IMAGE_SIZE, IMAGE_SIZE), Image.BICUBIC)
        img.convert("RGB").save(out / media, optimize=False)
        label = int(labels[idx])
        q, answers, choices, kind = _vision_question(rng, label)
        records.append(
            Record(
                id=rid,
                modality="image",
                media=media,
                question=q,
                answers=answers,
                choices=choices,
                split=split,
                meta={"qtype": kind, "label": FASHION_CLASSES[label][0], "source_index": int(idx)},
            )
        )
    return records


# ---- audio ---------------------------------------------------------------------------------
def _espeak() -> str:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise DataError(
            "espeak-ng is not installed; the built-in audio dataset synthesises speech "
            "with it: apt-get install espeak-ng"
        )
    return exe


def synthesize(text: str, voice: str, speed: int, pitch: int, exe: str | None = None) -> np.ndarray:
    """Speak ``text`` with espeak-ng; mono float32 at 16 kHz, silence trimmed at the ends."""
    cmd = [exe or _espeak(), "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", text]
    proc = subprocess.run(cmd, capture_output=True, check=False, timeout=60)
    if proc.returncode != 0 or not proc.stdout:
        raise DataError(f"espeak-ng failed for {text!r} ({voice}): {proc.stderr.decode()[-300:]}")
    wave, rate = sf.read(io.BytesIO(proc.stdout), dtype="float32")
    if wave.ndim > 1:
        wave = wave.mean(axis=1)
    loud = np.flatnonzero(np.abs(wave) > 0.01)
    if loud.size:  # keep 50 ms of lead-in/out so onsets are not clipped
        pad = int(0.05 * rate)
        wave = wave[max(0, loud[0] - pad) : loud[-1] + pad]
    return resample(wave, int(rate), AUDIO_RATE)


def _audio_item(
    rng: np.random.Generator,
) -> tuple[str, str, list[str], list[str] | None, str, dict[str, Any]]:
    """(text to speak, question, answers, choices, qtype, voice params) for one clip."""
    voice = f"{rng.choice(ESPEAK_VOICES)}+{rng.choice(ESPEAK_VARIANTS)}"
    params = {
        "voice": voice,
        "speed": int(rng.integers(120, 201)),
        "pitch": int(rng.integers(25, 76)),
    }
    if rng.random() < 0.7:
        d = int(rng.integers(10))
        word = NUMBER_WORDS[d]
        kind = rng.choice(["open", "open", "yesno", "choice"])
        if kind == "open":
            return word, "What number is spoken?", [word, str(d)], None, "open", params
        if kind == "yesno":
            asked = d if rng.random() < 0.5 else int(rng.choice([i for i in range(10) if i != d]))
            q = f"Is the number {NUMBER_WORDS[asked]} spoken?"
            return word, q, ["yes" if asked == d else "no"], None, "yesno", params
        others = rng.choice([i for i in range(10) if i != d], size=3, replace=False)
        options = [word] + [NUMBER_WORDS[int(i)] for i in others]
        choices = [options[int(i)] for i in rng.permutation(4)]
        return word, "Which number is spoken?", [word], choices, "choice", params
    word = str(rng.choice(SPOKEN_WORDS))
    return word, "What word is spoken?", [word], None, "open_word", params


def _make_audio(out: Path, split: str, n: int, seed: int) -> list[Record]:
    exe = _espeak()
    rng = _split_seed(seed, "audio", split)
    (out / "audio" / split).mkdir(parents=True, exist_ok=True)
    items = [(f"audio-{split}-{i:05d}", *_audio_item(rng)) for i in range(n)]

    def render(item: tuple) -> None:
        rid, text, *_, params = item
        wave = synthesize(text, params["voice"], params["speed"], params["pitch"], exe)
        sf.write(out / "audio" / split / f"{rid}.wav", wave, AUDIO_RATE, subtype="PCM_16")

    # Each clip is a subprocess (GIL released while waiting), so a few threads suffice.
    with ThreadPoolExecutor(max_workers=min(8, 2 * (os.cpu_count() or 1))) as pool:
        list(pool.map(render, items))
    return [
        Record(
            id=rid,
            modality="audio",
            media=f"audio/{split}/{rid}.wav",
            question=q,
            answers=answers,
            choices=choices,
            split=split,
            meta={"qtype": kind, "spoken": text, **params},
        )
        for rid, text, q, answers, choices, kind, params in items
    ]


_SOURCES = {
    "vision": "Fashion-MNIST (Debian dataset-fashion-mnist), upscaled to "
    f"{IMAGE_SIZE}x{IMAGE_SIZE} RGB PNG",
    "audio": f"espeak-ng synthesis, {AUDIO_RATE} Hz mono 16-bit WAV",
}
