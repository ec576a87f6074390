"""Replay cached comparison runs' histories through the scheduler: guard and LR ratio.

The guard (docs/METHOD.md, robust rules, point 5) watches the encoder's normalised gradient
norm over the LLM's, relative to its early value, and fires below ``balance.guard_ratio``.
Its threshold has to separate runs whose encoder degraded from healthy ones, and that is
checkable offline: every run of ``benchmarks/compare_methods.py`` keeps its per-step
``grad_norm/*_normalized`` history in ``result.json``. This script feeds those histories to
:class:`~commit_train.scheduler.CoordinatedLRScheduler` exactly as the trainer does (one
value per optimizer step, the recipe's warm-up and ``update_every``) and prints, per run,
the guard value at each update and the final test accuracy, so a threshold can be read
off against outcomes. The probes logged in the same history (``balance/share_encoder``,
``balance/kappa``) are fed too, so the table also gives the LR ratio r the rule sets at
each update: on a scheduled run it reproduces the run's own r; on a Constant LR run it is
what ``commit_sched`` would have done, and while r stays 1 the two are the same run (so a
``commit_sched`` cell whose replay never moves r needs no training to know its result).
Pure replay: no training, seconds on a CPU.

Only the steps before the guard first fires are what an actual run with the guard would
also see; after that the guard changes the run. Runs are grouped by encoder LR ratio. The
"early" column is the raw encoder/LLM ratio (median per window) over the first 50 steps,
before the guard has its reference: a signal that could act earlier would have to show the
later collapse there.

    .venv/bin/python benchmarks/guard_replay.py                       # the v3 cache
    .venv/bin/python benchmarks/guard_replay.py --set balance.guard_ratio=0.5 --no-write
    .venv/bin/python benchmarks/guard_replay.py --benchmark audio --no-write
    .venv/bin/python benchmarks/guard_replay.py --set balance.rule=proportional --no-write
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._report import write_section  # noqa: E402
from commit_train.config import load_config  # noqa: E402
from commit_train.lr import in_lr_tail  # noqa: E402
from commit_train.methods import scheduled_aux_weight  # noqa: E402
from commit_train.scheduler import CoordinatedLRScheduler  # noqa: E402

SECTION = "Degradation guard replay"
DEFAULT_CACHE = ROOT / "benchmarks/results/compare_cache_v3"
RECIPES = {
    "vision": ROOT / "recipes/builtin_vision.yaml",
    "audio": ROOT / "recipes/builtin_audio.yaml",
}
RECIPE = RECIPES["vision"]
EARLY_WINDOWS = ((1, 10), (11, 25), (26, 50))


class Update(NamedTuple):
    """The scheduler's state right after one update step of a replay."""

    step: int
    guard: float | None  # encoder/LLM grad-norm ratio over its early value
    ratio: float  # the LR ratio r the rule holds from this step on
    aux: float  # the aux-loss weight with `aux_weighting: excess` from this step on


def replay(history: dict, cfg, steps: int | None = None) -> list[Update]:
    """Guard value and LR ratio at every update step of one run's cached histories.

    Feeds the scheduler what the trainer feeds it, in the trainer's order: each optimizer
    step's grad-norm ratio, then the probe of that step (``balance/share_encoder`` and
    ``balance/kappa``, every ``probe_every`` steps; a probe step with nothing logged was a
    skipped probe; a history without probes replays the guard alone), then the
    update, frozen in the LR tail of a ``steps``-step run. On a Constant LR run this is
    exactly what ``commit_sched`` with the same recipe would decide up to its first move of
    r; before that move the two runs are the same run, step for step.
    """
    enc = {int(s): v for s, v in history["grad_norm/encoder_normalized"]}
    llm = {int(s): v for s, v in history["grad_norm/llm_normalized"]}
    share = {int(s): v for s, v in history.get("balance/share_encoder", [])}
    kappa = {int(s): v for s, v in history.get("balance/kappa", [])}
    last = max(enc, default=0)
    train = cfg.train.model_copy(update={"steps": steps or last})
    sched = CoordinatedLRScheduler(cfg.balance, True, cfg.train.warmup_steps)
    excess = cfg.balance.model_copy(update={"aux_weighting": "excess"})
    out = []
    for step in range(1, last + 1):
        if step in enc and llm.get(step):
            sched.observe_grad_ratio(step, enc[step] / llm[step])
        if share and step % cfg.balance.probe_every == 0:
            # a probe ran here; one that was skipped logged nothing and counts as missing
            sched.observe(step, kappa.get(step), share.get(step))
        if step % cfg.balance.update_every == 0:
            guard = sched.guard_value
            sched.maybe_update(step, frozen=in_lr_tail(step, train, cfg.balance.freeze_below))
            aux = scheduled_aux_weight(excess, sched)
            out.append(Update(step, guard, sched.ratio, aux))
    return out


def first_move(values: list[Update]) -> int | None:
    """The first update step at which the rule moves r away from 1, if any."""
    return next((u.step for u in values if abs(u.ratio - 1.0) > 1e-12), None)


def first_aux(values: list[Update], steps: int) -> int | None:
    """The first update step after which excess-weighted ``L_aux`` would act in a
    ``steps``-step run, if any (a weight set at the last step acts on no step)."""
    return next((u.step for u in values if u.aux > 0 and u.step < steps), None)


def early_ratios(history: dict) -> list[float | None]:
    """Median raw encoder/LLM normalised grad-norm ratio in each of :data:`EARLY_WINDOWS`."""
    enc = {int(s): v for s, v in history["grad_norm/encoder_normalized"]}
    llm = {int(s): v for s, v in history["grad_norm/llm_normalized"]}
    out = []
    for lo, hi in EARLY_WINDOWS:
        xs = [enc[s] / llm[s] for s in range(lo, hi + 1) if s in enc and llm.get(s)]
        out.append(statistics.median(xs) if xs else None)
    return out


def first_fire(values: list[Update], threshold: float) -> int | None:
    """The first update step at which the guard fires, if any."""
    return next((u.step for u in values if u.guard is not None and u.guard < threshold), None)


def load_runs(cache: Path, benchmark: str = "vision") -> list[dict]:
    """One benchmark's cached results that carry grad-norm histories."""
    runs = []
    for path in sorted((cache / benchmark).glob("*/result.json")):
        res = json.loads(path.read_text())
        hist = res.get("history", {})
        if "grad_norm/encoder_normalized" in hist and "grad_norm/llm_normalized" in hist:
            runs.append(res)
    return runs


def run_config(recipe: Path, res: dict, overrides: list[str]):
    """The settings one cached run is replayed with: the recipe, the run's own overrides
    (a variant such as ``commit@balance.rule=slow_dominant``), then ``overrides``."""
    return load_config(recipe, [*res["spec"].get("extra", []), *overrides])


def report(runs: list[dict], recipe: Path, overrides: list[str]) -> str:
    cfg = load_config(recipe, overrides)
    lines = [
        f"Guard value (encoder/LLM normalised grad-norm ratio over its early value) at each "
        f"update, threshold guard_ratio={cfg.balance.guard_ratio:g}; `*` = fires. r = the LR "
        f"ratio the rule (`{cfg.balance.rule}`) sets from the run's own probes and grad norms "
        "at each update. A run that ran with other settings (a key with a suffix) is replayed "
        "with its own. Accuracy = the run's final test accuracy. A scheduled run shows its own "
        "trajectory (the replay reproduces its logged r); on a Constant LR run r is what "
        "`commit_sched` would have done, exactly until r first moves (the runs are identical "
        "before that), and only indicative after it. aux acts = the first update after "
        "which `L_aux` with `balance.aux_weighting: excess` would have a non-zero weight: "
        "where neither r moves nor aux acts, `commit@balance.aux_weighting=excess` is "
        "the Constant LR run step for step.",
        "",
        "| run | ratio | accuracy | early: steps "
        + " / ".join(f"{lo}–{hi}" for lo, hi in EARLY_WINDOWS)
        + " | guard value at update steps | first fire | r at update steps | r first moves "
        "| aux acts |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    runs = sorted(runs, key=lambda r: (r["spec"]["ratio"], -r["accuracy"]))
    for res in runs:
        run_cfg = run_config(recipe, res, overrides)
        thr = run_cfg.balance.guard_ratio
        steps = res["spec"].get("steps")
        values = replay(res["history"], run_cfg, steps)
        cells = " ".join(
            f"{u.step}:{u.guard:.2f}{'*' if u.guard < thr else ''}"
            for u in values
            if u.guard is not None
        )
        fire = first_fire(values, thr)
        early = " / ".join("-" if x is None else f"{x:.2f}" for x in early_ratios(res["history"]))
        if "balance/share_encoder" in res["history"]:
            ratios = " ".join(f"{u.step}:{u.ratio:.2f}" for u in values)
            moved = first_move(values)
            aux = first_aux(values, steps or values[-1].step)
        else:
            ratios, moved, aux = "no probes", None, None
        lines.append(
            f"| {res['key']} | ×{res['spec']['ratio']:g} | {100 * res['accuracy']:.1f}% "
            f"| {early} | {cells} | {fire or '-'} | {ratios} | {moved or '-'} | {aux or '-'} |"
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
    recipe = args.recipe or RECIPES[args.benchmark]
    runs = load_runs(args.cache, args.benchmark)
    if not runs:
        raise SystemExit(
            f"no result.json with grad-norm histories under {args.cache / args.benchmark}"
        )
    body = report(runs, recipe, args.set)
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
