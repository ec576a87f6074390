"""Replay cached comparison runs' grad-norm histories through the degradation guard.

The guard (docs/METHOD.md, robust rules, point 5) watches the encoder's normalised gradient
norm over the LLM's, relative to its early value, and fires below ``balance.guard_ratio``.
Its threshold has to separate runs whose encoder degraded from healthy ones, and that is
checkable offline: every run of ``benchmarks/compare_methods.py`` keeps its per-step
``grad_norm/*_normalized`` history in ``result.json``. This script feeds those histories to
:class:`~commit_train.scheduler.CoordinatedLRScheduler` exactly as the trainer does (one
value per optimizer step, the recipe's warm-up and ``update_every``) and prints, per run,
the guard value at each update and the final test accuracy, so a threshold can be read
off against outcomes. Pure replay: no training, seconds on a CPU.

Only the steps before the guard first fires are what an actual run with the guard would
also see; after that the guard changes the run. Runs are grouped by encoder LR ratio. The
"early" column is the raw encoder/LLM ratio (median per window) over the first 50 steps,
before the guard has its reference: a signal that could act earlier would have to show the
later collapse there.

    .venv/bin/python benchmarks/guard_replay.py                       # the v3 cache
    .venv/bin/python benchmarks/guard_replay.py --set balance.guard_ratio=0.5 --no-write
    .venv/bin/python benchmarks/guard_replay.py --benchmark audio --no-write
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._report import write_section  # noqa: E402
from commit_train.config import load_config  # noqa: E402
from commit_train.scheduler import CoordinatedLRScheduler  # noqa: E402

SECTION = "Degradation guard replay"
DEFAULT_CACHE = ROOT / "benchmarks/results/compare_cache_v3"
RECIPES = {
    "vision": ROOT / "recipes/builtin_vision.yaml",
    "audio": ROOT / "recipes/builtin_audio.yaml",
}
RECIPE = RECIPES["vision"]
EARLY_WINDOWS = ((1, 10), (11, 25), (26, 50))


def replay(history: dict, cfg) -> list[tuple[int, float | None]]:
    """Guard value at every update step of one run's grad-norm history."""
    enc = {int(s): v for s, v in history["grad_norm/encoder_normalized"]}
    llm = {int(s): v for s, v in history["grad_norm/llm_normalized"]}
    sched = CoordinatedLRScheduler(cfg.balance, True, cfg.train.warmup_steps)
    out = []
    for step in range(1, max(enc, default=0) + 1):
        if step in enc and llm.get(step):
            sched.observe_grad_ratio(step, enc[step] / llm[step])
        if step % cfg.balance.update_every == 0:
            out.append((step, sched.guard_value))
            sched.maybe_update(step)
    return out


def early_ratios(history: dict) -> list[float | None]:
    """Median raw encoder/LLM normalised grad-norm ratio in each of :data:`EARLY_WINDOWS`."""
    enc = {int(s): v for s, v in history["grad_norm/encoder_normalized"]}
    llm = {int(s): v for s, v in history["grad_norm/llm_normalized"]}
    out = []
    for lo, hi in EARLY_WINDOWS:
        xs = [enc[s] / llm[s] for s in range(lo, hi + 1) if s in enc and llm.get(s)]
        out.append(statistics.median(xs) if xs else None)
    return out


def first_fire(values: list[tuple[int, float | None]], threshold: float) -> int | None:
    """The first update step at which the guard fires, if any."""
    return next((s for s, g in values if g is not None and g < threshold), None)


def load_runs(cache: Path, benchmark: str = "vision") -> list[dict]:
    """One benchmark's cached results that carry grad-norm histories."""
    runs = []
    for path in sorted((cache / benchmark).glob("*/result.json")):
        res = json.loads(path.read_text())
        hist = res.get("history", {})
        if "grad_norm/encoder_normalized" in hist and "grad_norm/llm_normalized" in hist:
            runs.append(res)
    return runs


def report(runs: list[dict], cfg) -> str:
    thr = cfg.balance.guard_ratio
    lines = [
        f"Guard value (encoder/LLM normalised grad-norm ratio over its early value) at each "
        f"update, threshold guard_ratio={thr:g}; `*` = fires. Accuracy = the run's final test "
        "accuracy. A run that already ran with a lowering guard shows its own trajectory.",
        "",
        "| run | ratio | accuracy | early: steps "
        + " / ".join(f"{lo}–{hi}" for lo, hi in EARLY_WINDOWS)
        + " | guard value at update steps | first fire |",
        "|---|---|---|---|---|---|",
    ]
    runs = sorted(runs, key=lambda r: (r["spec"]["ratio"], -r["accuracy"]))
    for res in runs:
        values = replay(res["history"], cfg)
        cells = " ".join(f"{s}:{g:.2f}{'*' if g < thr else ''}" for s, g in values if g is not None)
        fire = first_fire(values, thr)
        early = " / ".join("-" if x is None else f"{x:.2f}" for x in early_ratios(res["history"]))
        lines.append(
            f"| {res['key']} | ×{res['spec']['ratio']:g} | {100 * res['accuracy']:.1f}% "
            f"| {early} | {cells} | {fire if fire else '-'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--benchmark", choices=sorted(RECIPES), default="vision")
    ap.add_argument("--recipe", type=Path, help="the recipe whose guard settings to replay")
    ap.add_argument("--set", action="append", default=[], help="recipe override KEY=VALUE")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args(argv)
    cfg = load_config(args.recipe or RECIPES[args.benchmark], args.set)
    runs = load_runs(args.cache, args.benchmark)
    if not runs:
        raise SystemExit(
            f"no result.json with grad-norm histories under {args.cache / args.benchmark}"
        )
    body = report(runs, cfg)
    print(body)
    if not args.no_write:
        bench = [] if args.benchmark == "vision" else [f"--benchmark {args.benchmark}"]
        cmd = " ".join(
            ["python benchmarks/guard_replay.py", *bench, *(f"--set {s}" for s in args.set)]
        )
        section = SECTION if args.benchmark == "vision" else f"{SECTION}, {args.benchmark}"
        write_section(section, f"`{cmd}` (cache {args.cache.name})\n\n{body}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
