"""Built-in offline benchmarks made from real content shipped in packages.

* ``vision`` (:mod:`commit_train.data.builtin_vision`): real Fashion-MNIST photographs,
  real MNIST digits and rendered shape scenes, asked ten kinds of question (open,
  yes/no, multiple choice; counting, colour, spatial relations).
* ``audio`` (:mod:`commit_train.data.builtin_audio`): digits and words spoken by many
  espeak-ng and flite voices with added noise, plus generated beeps and tones asked about
  count, pitch and loudness.

Each record carries ``meta["qtype"]`` so evaluation can report accuracy per question
type next to :func:`chance_levels`; a method that does not beat the chance level of a
type has learned nothing about it, whatever the overall number says.

Generation is deterministic for a given ``(name, sizes, seed)`` and written atomically
(temp dir next to the target, then rename) with a ``manifest.json``; calling it again with
the same parameters reuses the existing directory, so concurrent ranks or repeated
pipeline steps are safe and cheap. :func:`main` prints the tables of
``docs/BENCHMARKS_BUILTIN.md`` from the default-size datasets::

    .venv/bin/python -c 'from commit_train.data.builtin import main; main()'

(``python -m commit_train.data.builtin`` works too, with a harmless runpy warning because
the package ``__init__`` imports this module first.)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from commit_train.data.questions import SPLITS
from commit_train.data.records import Record, read_records, write_records
from commit_train.errors import DataError

# Bump when the generated content changes, so cached copies are regenerated.
GENERATOR_VERSION = 3
# Sized so both sets generate in well under a minute on 2 cores, a training epoch stays
# affordable on CPU, and the test split still has ~40-50 examples per question type.
DEFAULT_SIZES: dict[str, tuple[int, int, int]] = {
    "vision": (3000, 200, 500),
    "audio": (2000, 200, 450),
}
BUILTIN_NAMES = tuple(DEFAULT_SIZES)


# ---- locations -------------------------------------------------------------------------------
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


# ---- generation driver -----------------------------------------------------------------------
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


def _generator(name: str) -> tuple[Callable[[Path, str, int, int], list[Record]], str]:
    """``(make_split, source description)``; imported lazily so that using one benchmark
    never requires the other's system packages."""
    if name == "vision":
        from commit_train.data import builtin_vision as mod
    else:
        from commit_train.data import builtin_audio as mod
    return mod.make_split, mod.SOURCE


def answer_vocab(records: Sequence[Record]) -> dict[str, list[str]]:
    """Per question type, the sorted canonical answers (``answers[0]``) that occur."""
    vocab: dict[str, set[str]] = {}
    for r in records:
        vocab.setdefault(_qtype(r), set()).add(r.answers[0])
    return {k: sorted(v) for k, v in sorted(vocab.items())}


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
    counts per split and question type, answer vocabularies). Sizes default to
    :data:`DEFAULT_SIZES`.
    """
    _check_name(name)
    out_dir = Path(out_dir)
    sizes = _sizes(name, n_train, n_val, n_test)
    params = {"name": name, "version": GENERATOR_VERSION, "seed": int(seed), **sizes}
    if _is_complete(out_dir, params):
        return out_dir

    generate, source = _generator(name)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        counts, qtypes, everything = {}, {}, []
        for split in SPLITS:
            records = generate(tmp, split, sizes[split], seed)
            write_records(records, tmp / f"{split}.jsonl")
            counts[split] = len(records)
            qtypes[split] = dict(sorted(Counter(_qtype(r) for r in records).items()))
            everything += records
        manifest = {
            "params": params,
            "counts": counts,
            "qtypes": qtypes,
            "vocab": answer_vocab(everything),
            "source": source,
        }
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


# ---- chance levels ---------------------------------------------------------------------------
def _qtype(record: Record) -> str:
    return str((record.meta or {}).get("qtype", "all"))


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def chance_table(records: Sequence[Record]) -> dict[str, dict[str, Any]]:
    """Two answer-blind baselines per question type, and their ``"overall"`` mean.

    * ``majority``: always give the type's most frequent answer; for multiple choice,
      always pick the most frequently correct *position* (an answer text is not always
      offered, a position is).
    * ``uniform``: guess uniformly among the type's answer vocabulary (the distinct
      canonical answers that occur), or among a multiple-choice record's choices.

    A guess counts as correct when it is one of the record's accepted answers, as the
    evaluation's exact match does. ``"overall"`` weights each type by its number of
    records, i.e. a guesser that knows the question type (the question text gives it).
    """
    groups: dict[str, list[Record]] = {}
    for r in records:
        groups.setdefault(_qtype(r), []).append(r)
    table: dict[str, dict[str, Any]] = {}
    for qt, rs in sorted(groups.items()):
        accepted = [{_norm(a) for a in r.answers} for r in rs]
        if all(r.choices for r in rs):
            pos = Counter(
                next((i for i, c in enumerate(r.choices) if _norm(c) in acc), -1)
                for r, acc in zip(rs, accepted, strict=True)
            )
            best_pos, hits = min(pos.items(), key=lambda kv: (-kv[1], kv[0]))
            majority, guess = hits / len(rs), f"choice {best_pos + 1}"
            uniform = float(np.mean([1.0 / len(r.choices) for r in rs]))
            vocab_size = len({_norm(c) for r in rs for c in r.choices})
        else:
            canon = Counter(_norm(r.answers[0]) for r in rs)
            guess = min(canon.items(), key=lambda kv: (-kv[1], kv[0]))[0]
            majority = sum(guess in acc for acc in accepted) / len(rs)
            vocab = set(canon)
            vocab_size = len(vocab)
            uniform = float(np.mean([len(vocab & acc) / vocab_size for acc in accepted]))
        table[qt] = {
            "n": len(rs),
            "majority": majority,
            "majority_answer": guess,
            "uniform": uniform,
            "vocab_size": vocab_size,
        }
    n = sum(t["n"] for t in table.values())
    if n:
        table["overall"] = {
            "n": n,
            "majority": sum(t["majority"] * t["n"] for t in table.values()) / n,
            "majority_answer": "per type",
            "uniform": sum(t["uniform"] * t["n"] for t in table.values()) / n,
            "vocab_size": len({_norm(r.answers[0]) for r in records}),
        }
    return table


def chance_levels(records: Sequence[Record], baseline: str = "majority") -> dict[str, float]:
    """``{qtype: accuracy, ..., "overall": accuracy}`` of one answer-blind baseline
    (``"majority"``, the stronger and default, or ``"uniform"``); see :func:`chance_table`.
    """
    if baseline not in ("majority", "uniform"):
        raise ValueError(f"baseline must be 'majority' or 'uniform', not {baseline!r}")
    return {qt: float(row[baseline]) for qt, row in chance_table(records).items()}


# ---- documentation tables --------------------------------------------------------------------
def benchmark_markdown(name: str, path: Path) -> str:
    """Markdown tables (sizes, question types, vocabularies, chance) of a generated set."""
    manifest = _read_manifest(path) or {}
    splits = {s: read_records(path / f"{s}.jsonl", path, check_media=False)[0] for s in SPLITS}
    counts = {s: Counter(_qtype(r) for r in rs) for s, rs in splits.items()}
    table = chance_table(splits["test"])
    lines = [
        f"### `builtin:{name}`",
        "",
        f"Source: {manifest.get('source', '?')}. Seed {manifest.get('params', {}).get('seed')}.",
        "",
        "| split | records |",
        "|---|---:|",
        *(f"| {s} | {len(rs)} |" for s, rs in splits.items()),
        "",
        "| question type | train | val | test | test majority (guess) | test uniform |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for qt, row in table.items():
        per_split = (
            [str(sum(c.values())) for c in counts.values()]
            if qt == "overall"
            else [str(c.get(qt, 0)) for c in counts.values()]
        )
        label = "**overall**" if qt == "overall" else f"`{qt}`"
        lines.append(
            f"| {label} | {' | '.join(per_split)} | {row['majority']:.3f} "
            f"({row['majority_answer']}) | {row['uniform']:.3f} |"
        )
    lines += ["", "| question type | example question | answer vocabulary |", "|---|---|---|"]
    vocab = answer_vocab([r for rs in splits.values() for r in rs])
    for qt, answers in vocab.items():
        example = next(r for r in splits["train"] + splits["test"] if _qtype(r) == qt)
        mc = " (multiple choice, answer = choice text)" if example.choices else ""
        lines.append(f"| `{qt}` | {example.question}{mc} | {', '.join(answers)} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Generate the default-size benchmarks (timed) and print their documentation tables."""
    ap = argparse.ArgumentParser(prog="commit_train.data.builtin", description=main.__doc__)
    ap.add_argument("--names", default=",".join(BUILTIN_NAMES))
    ap.add_argument("--out", help="generate here instead of the cache")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    for name in args.names.split(","):
        target = Path(args.out) / name if args.out else builtin_path(name)
        start = time.perf_counter()
        make_builtin(name, target, seed=args.seed)
        took = time.perf_counter() - start
        print(benchmark_markdown(name, target))
        print(f"(generated or reused in {took:.1f} s at {target})\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
