"""What the κ probe costs: mean training-step time with the probe on vs off (METHOD.md §2).

Trains the built-in vision recipe (real pretrained SmolLM2-135M + EfficientNet-Lite0) for
``--steps`` optimizer steps per run, with the probe at ``--probe-every`` (default 10, the
recipe default) and with it off (``balance.probe_every`` > steps). Runs alternate on/off
(order flipped every repetition) in one process so both modes see the same machine state;
tracking is disabled and no validation, checkpoint or export runs, so only the training
steps are timed. Each step is the trainer's own ``Trainer._step`` (exactly what ``fit``
runs per step); the first ``--warmup`` steps of every run are not timed (allocator and
lazy initialisation), and the timed window is a multiple of ``--probe-every`` so it holds
the probes' fair share.

Reported: mean step time each way and their ratio (noisy on a shared machine), and the
direct accounting the trainer logs as ``time/probe_fraction`` (seconds spent inside the
probe / training seconds), which does not depend on run-to-run noise.

    .venv/bin/commit prepare        # once: the offline pretrained parts and the dataset
    .venv/bin/python benchmarks/probe_overhead.py --threads 1   # ~8-13 min on 2 CPU cores
    .venv/bin/python benchmarks/probe_overhead.py --quick    # smoke run, ~1 min

The full run replaces the "Probe overhead" section of BENCHMARKS.md (``--no-write`` not to).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._report import (  # noqa: E402
    add_run_args,
    machine,
    quiet_training_logs,
    write_section,
)
from commit_train.config import load_config  # noqa: E402
from commit_train.trainer import Trainer  # noqa: E402

SECTION = "Probe overhead"
TARGET = 0.03


def one_run(recipe: Path, overrides: list[str], steps: int, warmup: int, out: Path) -> dict:
    """Train ``steps`` steps; per-step times, probe seconds and κ values of the run."""
    cfg = load_config(recipe, overrides)
    tr = Trainer(cfg, output_dir=out)
    tr.setup()
    tr.model.train()
    batches = iter(tr._loader(0))
    times, kappas = [], []
    probe_at_warmup, probes_at_warmup = 0.0, 0
    for step in range(steps):
        if step == warmup:
            probe_at_warmup, probes_at_warmup = tr.hooks.probe_seconds, tr.hooks.probes
        t0 = time.perf_counter()
        logs = tr._step(batches, step)
        times.append(time.perf_counter() - t0)
        if "balance/kappa" in logs:
            kappas.append(logs["balance/kappa"])
    timed = times[warmup:]
    res = {
        "mean_step_s": statistics.fmean(timed),
        "timed_s": sum(timed),
        "probe_s": tr.hooks.probe_seconds - probe_at_warmup,
        # what the trainer logs at the last step: all probe seconds / all step seconds
        "probe_fraction": tr.hooks.probe_seconds / sum(times),
        "probes": tr.hooks.probes - probes_at_warmup,
        "kappas": kappas,
    }
    del tr, batches
    gc.collect()
    return res


def summarize(runs: dict[str, list[dict]]) -> dict:
    on, off = runs["on"], runs["off"]
    mean_on = statistics.fmean(r["mean_step_s"] for r in on)
    mean_off = statistics.fmean(r["mean_step_s"] for r in off)
    probe_s = sum(r["probe_s"] for r in on)
    timed_on = sum(r["timed_s"] for r in on)
    probes = sum(r["probes"] for r in on)
    direct = probe_s / max(timed_on - probe_s, 1e-9)  # probe time over probe-free step time
    return {
        "mean_on": mean_on,
        "mean_off": mean_off,
        "ratio": mean_on / mean_off,
        "per_rep_ratio": [
            a["mean_step_s"] / b["mean_step_s"] for a, b in zip(on, off, strict=True)
        ],
        "probe_fraction": statistics.fmean(r["probe_fraction"] for r in on),
        "direct_overhead": direct,
        "per_probe_s": probe_s / max(1, probes),
        "kappas": [k for r in on for k in r["kappas"]],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_run_args(
        ap,
        steps=22,
        reps=3,
        reps_help="on/off pairs, interleaved",
        quick_help="smoke run: 1 rep, 7 steps, batch 2",
        max_records=False,
    )
    ap.add_argument("--probe-every", type=int, default=10)
    args = ap.parse_args(argv)
    if args.quick:
        args.reps, args.steps, args.warmup, args.probe_every = 1, 7, 1, 3
        args.batch_size = args.batch_size or 2
    timed = args.steps - args.warmup
    if timed < args.probe_every:
        ap.error("--steps minus --warmup must cover at least one probe interval")
    quiet_training_logs(args.threads)

    base = [
        "tracking.enabled=false",
        "data.val=null",
        "train.eval_every=0",
        "train.save_every=0",
        f"train.steps={args.steps}",
    ]
    if args.batch_size:
        base.append(f"train.batch_size={args.batch_size}")
    modes = {
        "on": [f"balance.probe_every={args.probe_every}"],
        "off": [f"balance.probe_every={args.steps + 1}"],
    }
    cfg = load_config(args.recipe, base)
    batch_size = cfg.train.batch_size
    runs: dict[str, list[dict]] = {"on": [], "off": []}
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="probe-bench-") as tmp:
        for rep in range(args.reps):
            order = ("on", "off") if rep % 2 == 0 else ("off", "on")
            for mode in order:
                res = one_run(
                    args.recipe, base + modes[mode], args.steps, args.warmup, Path(tmp) / mode
                )
                runs[mode].append(res)
                print(
                    f"rep {rep + 1}/{args.reps} probe {mode:>3}: mean step "
                    f"{res['mean_step_s']:.3f} s, probe {res['probe_s']:.2f} s "
                    f"({res['probes']} probes), time/probe_fraction {res['probe_fraction']:.4f}",
                    flush=True,
                )
    wall = time.perf_counter() - t_start
    s = summarize(runs)
    needed = args.probe_every * s["direct_overhead"] / TARGET
    lines = [
        f"mean step, probe every {args.probe_every}: {s['mean_on']:.3f} s",
        f"mean step, probe off:        {s['mean_off']:.3f} s",
        f"ratio on/off:                {s['ratio']:.3f}  (per repetition: "
        + ", ".join(f"{r:.3f}" for r in s["per_rep_ratio"])
        + ")",
        f"time/probe_fraction:         {s['probe_fraction']:.4f}",
        f"probe seconds / probe-free step seconds: {s['direct_overhead']:.4f}",
        f"one probe:                   {s['per_probe_s']:.3f} s",
        f"probe_every for <= {TARGET:.0%} at this cost: {needed:.0f}",
        "kappa values seen: " + ", ".join(f"{k:.3f}" for k in s["kappas"]),
        f"wall time: {wall:.0f} s",
    ]
    print("\n".join(lines))
    if args.quick or args.no_write:
        return 0
    dropout = cfg.model.lora.dropout > 0
    probe_work = (
        "4 no-grad LLM forwards + 2 encoder forwards"
        if dropout
        else "3 no-grad LLM forwards + 1 encoder forward"
    )
    why_ref = (
        "the reference is recomputed in eval mode because the recipe's LoRA dropout is active"
        if dropout
        else "the training forward's logits are the reference: the recipe's LoRA has no dropout"
    )
    seqs = [tuple(round(k, 6) for k in r["kappas"]) for r in runs["on"]]
    same_kappa = (
        f"- κ at the probes was identical in all {len(seqs)} probe-on runs "
        f"({', '.join(f'{k:.3f}' for k in seqs[0])}): the probe is deterministic and does not "
        "perturb training.\n"
        if len(seqs) > 1 and len(set(seqs)) == 1 and seqs[0]
        else ""
    )
    given = sys.argv[1:] if argv is None else argv
    cmd = " ".join(["python benchmarks/probe_overhead.py", *given])
    body = f"""Command: `.venv/bin/commit prepare && .venv/bin/{cmd}`

Machine: {machine()}, {torch.get_num_threads()} torch threads. Recipe `{args.recipe.relative_to(ROOT) if args.recipe.is_relative_to(ROOT) else args.recipe}`
(SmolLM2-135M-Instruct with LoRA r=16 on q/k/v/o, EfficientNet-Lite0 + MLP projector fully
trained), batch {batch_size}, probe_size 4 (default), {args.reps} on/off pairs of
{args.steps} steps interleaved in one process, first {args.warmup} steps of each run untimed,
tracking off.

| | mean step (s) |
|---|---|
| probe every {args.probe_every} | {s["mean_on"]:.3f} |
| probe off | {s["mean_off"]:.3f} |
| ratio on/off | {s["ratio"]:.3f} (per pair: {", ".join(f"{r:.3f}" for r in s["per_rep_ratio"])}) |

- `time/probe_fraction` (logged by the trainer; probe seconds / training seconds):
  **{s["probe_fraction"]:.1%}**; probe seconds over probe-free step seconds:
  **{s["direct_overhead"]:.1%}**; one probe costs {s["per_probe_s"]:.2f} s.
- Target <= {TARGET:.0%}: **{"met" if s["direct_overhead"] <= TARGET else "missed"}**.
  At this per-probe cost, probe_every >= {needed:.0f} would meet it.
- Why a probe costs what it does: it is {probe_work} on probe_size examples ({why_ref}),
  with no backward; measured, one probe costs {s["per_probe_s"] / s["mean_off"]:.2f} probe-free
  training steps, so the overhead is about that divided by probe_every. Ways to reach
  {TARGET:.0%}: probe_every >= {needed:.0f}; a smaller probe_size; or more examples per step
  (a probe's cost does not grow with batch_size or grad_accum).
{same_kappa}- The step-time ratio is the noisier of the two numbers on a shared machine (other jobs
  change step time between runs by more than the probe does); the direct accounting
  (`time/probe_fraction`) does not depend on it.
"""
    write_section(SECTION, body, args.benchmarks_md)
    print(f"updated {args.benchmarks_md}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
