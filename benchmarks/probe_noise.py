"""The κ probe's noise against its cost: per-probe std of share_encoder by probe size.

Issue 15 point 4: choose ``balance.probe_every`` / ``balance.probe_size`` from a measured
curve, with the probe at ≤ 3% of training time. Trains the built-in vision recipe (real
SmolLM2-135M + EfficientNet-Lite0; ``method=constant``, the trainer's own probe off) and,
at every ``--measure-every``-th step after ``--measure-from``, measures the step exactly as
the probe does (eval-mode forwards around the two optimizer steps, METHOD.md §2) but on
**every** example of the batch, keeping per-example KL sums. From those it computes, for
each probe size k, the share_encoder a probe of the first k examples would have read
(what the trainer's probe does) and so:

* the per-probe std of that reading across the measured steps (the noise the scheduler
  sees: sampling noise plus real step-to-step change), and
* the within-step std over all k-subsets of the batch (the sampling part alone).

Then it times the real :class:`~commit_train.balance.BalanceProbe` at each size on the
trained model (no optimizer step in between, same forwards), and relates both to the
probe-free training step time measured in the same run. The table of
(probe_every, probe_size) pairs gives the overhead and the standard error of the mean
signal over one update period (``update_every`` = 50 steps), which is what the robust
rule's dead zone is made of.

    .venv/bin/commit prepare        # once
    nice -n 10 .venv/bin/python benchmarks/probe_noise.py --threads 1   # ~10 min, 2 cores
    .venv/bin/python benchmarks/probe_noise.py --quick     # smoke run, ~1 min, no write

The full run replaces the "Probe noise vs cost" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import itertools
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._report import machine, quiet_training_logs, write_section  # noqa: E402
from commit_train.balance import BalanceProbe  # noqa: E402
from commit_train.config import load_config  # noqa: E402
from commit_train.methods import MethodHooks  # noqa: E402
from commit_train.modeling.base import answer_mask  # noqa: E402
from commit_train.trainer import Trainer  # noqa: E402

SECTION = "Probe noise vs cost"
TARGET = 0.03
UPDATE_EVERY = 50


def per_token_kl(logp_new: torch.Tensor, logp_old: torch.Tensor) -> torch.Tensor:
    """KL(p_new || p_old) per answer token (N,), as :func:`kl_mean` computes before its mean."""
    terms = logp_new.exp() * (logp_new - logp_old)
    terms = torch.where(torch.isneginf(logp_new), torch.zeros_like(terms), terms)
    return terms.sum(-1).double()


class MeasuringHooks(MethodHooks):
    """``constant`` training plus a whole-batch, per-example probe at the measured steps."""

    def __init__(self, cfg, mlm, *a, measure: set[int], **kw):
        super().__init__(cfg, mlm, *a, **kw)
        self.mlm = mlm
        self.measure = measure
        self.records: list[dict[str, list[float]]] = []
        self.hook_s = 0.0
        self._m: dict[str, Any] | None = None

    @torch.no_grad()
    def _eval_logp(self, batch, feats=None):
        was = self.mlm.training
        self.mlm.eval()
        try:
            if feats is None:
                feats = self.mlm.encode(batch["media"])
            logits = self.mlm.answer_logits(
                batch["input_ids"], batch["attention_mask"], batch["labels"], feats
            )
            return feats, F.log_softmax(logits.float(), dim=-1)
        finally:
            self.mlm.train(was)

    def after_backward(self, step, batch, out):
        super().after_backward(step, batch, out)
        if step in self.measure:
            t0 = time.perf_counter()
            feats, ref = self._eval_logp(batch)
            self._m = {"batch": batch, "feats_t": feats, "ref": ref}
            self.hook_s += time.perf_counter() - t0

    def after_encoder_step(self, step, stepped):
        super().after_encoder_step(step, stepped)
        if self._m is not None:
            t0 = time.perf_counter()
            self._m["feats_t1"], self._m["p_s"] = self._eval_logp(self._m["batch"])
            self.hook_s += time.perf_counter() - t0

    def after_step(self, step, stepped):
        logs = super().after_step(step, stepped)
        m, self._m = self._m, None
        if m is not None:
            t0 = time.perf_counter()
            _, p_joint = self._eval_logp(m["batch"], m["feats_t1"])
            _, p_t = self._eval_logp(m["batch"], m["feats_t"])
            tokens = answer_mask(m["batch"]["labels"]).sum(1).tolist()
            rec = {"tokens": tokens}
            for name, new in (("s", m["p_s"]), ("t", p_t), ("j", p_joint)):
                per_tok = per_token_kl(new, m["ref"]).split(tokens)
                rec[name] = [float(x.sum()) for x in per_tok]
            self.records.append(rec)
            self.hook_s += time.perf_counter() - t0
        return logs


def share_of(rec: dict[str, list[float]], idx) -> float | None:
    s = sum(max(rec["s"][i], 0.0) for i in idx)
    t = sum(max(rec["t"][i], 0.0) for i in idx)
    return s / (s + t) if s + t > 0 else None


def _std(xs: list[float]) -> float:
    return statistics.stdev(xs) if len(xs) > 1 else math.nan


def noise_by_size(records: list[dict], sizes: list[int]) -> dict[int, dict[str, float]]:
    out = {}
    for k in sizes:
        first = [v for r in records if (v := share_of(r, range(k))) is not None]
        within = []
        for r in records:
            n = len(r["tokens"])
            if k >= n:
                continue
            vals = [
                v for c in itertools.combinations(range(n), k) if (v := share_of(r, c)) is not None
            ]
            if len(vals) > 1:
                within.append(statistics.pvariance(vals))
        out[k] = {
            "per_probe_std": _std(first),
            "mean": statistics.fmean(first) if first else math.nan,
            "within_std": math.sqrt(statistics.fmean(within)) if within else math.nan,
            "n": len(first),
        }
    return out


def time_probe(tr: Trainer, batch: dict, sizes: list[int], reps: int) -> dict[int, float]:
    """Median seconds of one real probe (capture, after-encoder, after-LLM) per size."""
    cfg = tr.cfg.balance
    out = {}
    tr.model.train()
    with torch.no_grad():
        train_out = tr._forward(batch)
    for k in sizes:
        probe = BalanceProbe(tr.mlm, k, cfg.epsilon, tr.acc.autocast)
        times = []
        for _ in range(reps + 1):  # the first one warms up
            t0 = time.perf_counter()
            probe.capture(batch, train_out)
            probe.after_encoder_step(True)
            probe.after_llm_step(True)
            times.append(time.perf_counter() - t0)
        out[k] = statistics.median(times[1:])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipe", type=Path, default=ROOT / "recipes/builtin_vision.yaml")
    ap.add_argument("--steps", type=int, default=80, help="optimizer steps trained")
    ap.add_argument("--measure-from", type=int, default=20, help="first measured step")
    ap.add_argument("--measure-every", type=int, default=2)
    ap.add_argument("--sizes", default="1,2,4,8")
    ap.add_argument("--cost-reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--quick", action="store_true", help="smoke run: 8 steps, batch 4")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        help="recipe override KEY=VALUE (e.g. train.lr_encoder=1e-4: how the share responds)",
    )
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--benchmarks-md", type=Path, default=ROOT / "BENCHMARKS.md")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    batch_size = None
    if args.quick:
        args.steps, args.measure_from, args.measure_every, args.cost_reps = 8, 2, 2, 1
        batch_size, sizes = 4, [1, 2, 4]
    quiet_training_logs(args.threads)
    overrides = [
        "method=constant",
        "tracking.enabled=false",
        "data.val=null",
        "train.eval_every=0",
        "train.save_every=0",
        f"balance.probe_every={10**9}",  # the trainer's own probe never runs
    ]
    if batch_size:
        overrides.append(f"train.batch_size={batch_size}")
    cfg = load_config(args.recipe, [*args.set, *overrides])
    measure = set(range(args.measure_from, args.steps, args.measure_every))
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="probe-noise-") as tmp:
        tr = Trainer(cfg, output_dir=Path(tmp))
        tr._hooks_given = None
        real_hooks = {}

        def make_hooks(c, mlm, *a, **kw):
            real_hooks["h"] = MeasuringHooks(c, mlm, *a, measure=measure, **kw)
            return real_hooks["h"]

        import commit_train.trainer as trainer_mod

        orig = trainer_mod.MethodHooks
        trainer_mod.MethodHooks = make_hooks
        try:
            tr.setup()
        finally:
            trainer_mod.MethodHooks = orig
        hooks = real_hooks["h"]
        tr.model.train()
        batches = iter(tr._loader(0))
        step_s = []
        for step in range(args.steps):
            h0 = hooks.hook_s
            t0 = time.perf_counter()
            tr._step(batches, step)
            dt = time.perf_counter() - t0
            if step >= 2:
                step_s.append(dt - (hooks.hook_s - h0))  # probe-free step time
            print(f"step {step + 1}/{args.steps}: {dt:.2f} s", flush=True)
        # a fresh batch for timing the real probe at each size
        from commit_train.trainer import _to_device

        batch = _to_device(next(batches), tr.acc.device)
        cost = time_probe(tr, batch, sizes, args.cost_reps)
    wall = time.perf_counter() - t_start
    step_time = statistics.median(step_s)
    noise = noise_by_size(hooks.records, sizes)
    bs = cfg.train.batch_size
    lines = [
        f"| probe_size k | per-probe std of share_encoder | within-step std (k of {bs}) "
        "| mean share | one probe (s) | one probe (training steps) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for k in sizes:
        n = noise[k]
        lines.append(
            f"| {k} | {n['per_probe_std']:.3f} | "
            + ("–" if math.isnan(n["within_std"]) else f"{n['within_std']:.3f}")
            + f" | {n['mean']:.2f} | {cost[k]:.2f} | {cost[k] / step_time:.2f} |"
        )
    table = "\n".join(lines)
    combos = []
    for k in sizes:
        for every in (2, 3, 4, 5, 8, 10, 12, 16):
            per_update = UPDATE_EVERY // every
            overhead = cost[k] / (every * step_time)
            se = noise[k]["per_probe_std"] / math.sqrt(per_update)
            combos.append((k, every, per_update, overhead, se))
    ok = [c for c in combos if c[3] <= TARGET and c[2] >= 3]
    best = min(ok, key=lambda c: (round(c[4], 3), c[3])) if ok else None
    grid = [
        "| probe_size | probe_every | probes per update (50 steps) | overhead | "
        "std error of s̄ per update |",
        "|---:|---:|---:|---:|---:|",
    ]
    for k, every, per, ov, se in combos:
        mark = " **(chosen)**" if best and (k, every) == best[:2] else ""
        if ov <= 2 * TARGET:
            grid.append(f"| {k} | {every} | {per} | {ov:.1%} | {se:.3f}{mark} |")
    print(table)
    print("\n".join(grid))
    print(f"probe-free step {step_time:.2f} s; wall {wall:.0f} s; best {best}")
    if args.quick or args.no_write:
        return 0
    given = sys.argv[1:] if argv is None else argv
    cmd = " ".join(["python benchmarks/probe_noise.py", *given])
    grid_text = "\n".join(grid)
    chosen = (
        f"probe_size {best[0]}, probe_every {best[1]}: {best[3]:.1%} overhead, {best[2]} "
        f"probes per update, standard error {best[4]:.3f}"
        if best
        else "none meets the target"
    )
    body = f"""Command: `.venv/bin/commit prepare && nice -n 10 .venv/bin/{cmd}`

Machine: {machine()}, {torch.get_num_threads()} torch threads. Recipe
`{args.recipe.relative_to(ROOT) if args.recipe.is_relative_to(ROOT) else args.recipe}`, `method=constant`, batch {bs}, {args.steps} steps of its
300-step schedule; {len(hooks.records)} measured steps (every {args.measure_every}th from step
{args.measure_from + 1}), each probed on all {bs} examples with per-example KLs (eval-mode
forwards, as the probe). A probe of size k reads the first k examples; its per-probe std is
taken across the measured steps (sampling noise plus real step-to-step change), the
within-step std over all k-subsets of the same step (sampling alone). Probe time: the real
`BalanceProbe` at each size, median of {args.cost_reps}, with its eval-mode reference
forward (Lite0's stochastic depth makes training and eval forwards differ).
Probe-free training step: {step_time:.2f} s (median). Wall time {wall:.0f} s.

{table}

Overhead (one probe / (probe_every × step)) and the standard error of the mean signal over
one update (`update_every` 50: per-probe std / √(probes per update)), for the pairs at up to
{2 * TARGET:.0%} overhead:

{grid_text}

- Chosen (≤ {TARGET:.0%}, ≥ 3 probes per update, smallest standard error):
  {chosen}.
"""
    write_section(SECTION, body, args.benchmarks_md)
    print(f"updated {args.benchmarks_md}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
