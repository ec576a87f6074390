"""Our Trainer against a plain Hugging Face ``transformers.Trainer`` + peft loop: throughput.

Why: the trainer does more per step than a stock loop (two optimizers, per-side grad and
parameter norms, the step hooks), and issue 6 asks what that costs. Both sides train the
same model on the same data in the same session:

* model: ``load_model(cfg.model, seed)`` + ``apply_tuning`` of the recipe (default
  ``recipes/builtin_vision.yaml``: SmolLM2-135M-Instruct with peft LoRA on q/k/v/o,
  EfficientNet-Lite0 + projector fully trained), exactly as ``Trainer.setup`` builds it;
* data: the recipe's training records through the library's ``RecordDataset`` and
  ``Collator``, in the *same batch order* (HF gets our ``ResumableBatchSampler`` order
  through ``_get_train_sampler``), so both sides see identical batches; the script checks
  that the non-padding token counts of the timed steps agree;
* optimisation: AdamW with the recipe's per-side learning rates, betas, weight decay,
  ``max_grad_norm`` and LR schedule (HF gets ``commit_train.lr.lr_factor`` as a LambdaLR);
  ours has one AdamW per side, HF one AdamW with the same parameter groups;
* nothing else: ours with ``method=constant``, ``balance.probe_every`` past the last step
  (so the κ probe, which ``constant`` still runs for logging, never runs) and tracking
  off; HF with ``report_to=[]``, ``save_strategy="no"``, ``eval_strategy="no"``, no
  logging steps, no tqdm.

The HF model is a thin ``nn.Module`` whose forward calls the library's
``MultimodalLM.forward`` and returns ``{"loss": ...}`` with the cross-entropy
``Trainer._loss`` computes for ``method=constant``.

Timing: only steady-state steps. Ours: wall time of each ``Trainer._step`` call (what
``fit`` runs per step: data, forward, backward, norms, clipping, both optimizer steps).
HF: wall time between consecutive ``on_step_end`` callbacks (its batch fetch, forward,
backward, clipping, optimizer and scheduler step, and its per-step bookkeeping). The
first ``--warmup`` steps of each run are not timed. Each run is a fresh subprocess, so its
peak RSS (``ru_maxrss``: imports + model load + training) belongs to that run alone; runs
alternate ours/HF with the order flipped every repetition (A,B,B,A,...), so both see the
same machine state on average.

    .venv/bin/commit prepare        # once: the offline pretrained parts and the dataset
    .venv/bin/python benchmarks/hf_trainer_throughput.py --threads 1   # ~5 min on 2 CPU cores
    .venv/bin/python benchmarks/hf_trainer_throughput.py --quick       # smoke run, ~1-2 min

The full run replaces the "Trainer vs Hugging Face Trainer" section of BENCHMARKS.md
(``--no-write`` not to).
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._report import (  # noqa: E402
    OtherLoad,
    add_run_args,
    emit_result,
    machine,
    run_worker,
    worker_cmd,
    write_section,
)
from commit_train.config import RunConfig, load_config  # noqa: E402

SECTION = "Trainer vs Hugging Face Trainer"
TARGET = 1.0
MODES = ("ours", "hf")


def overrides(args: argparse.Namespace) -> list[str]:
    """Recipe overrides shared by both sides: no eval, checkpoint, tracking or probe."""
    out = [
        "method=constant",
        "tracking.enabled=false",
        "data.val=null",
        "train.eval_every=0",
        "train.save_every=0",
        f"train.steps={args.steps}",
        f"balance.probe_every={args.steps + 1}",
    ]
    if args.batch_size:
        out.append(f"train.batch_size={args.batch_size}")
    if args.max_records:
        out.append(f"data.max_train_records={args.max_records}")
    return out


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---- our Trainer --------------------------------------------------------------------------
def run_ours(cfg: RunConfig, steps: int, warmup: int, out: Path) -> dict:
    from commit_train.trainer import Trainer

    tr = Trainer(cfg, output_dir=out)
    tr.setup()
    tr.model.train()
    batches = iter(tr._loader(0))
    times, tokens, samples = [], [], []
    for step in range(steps):
        t0 = time.perf_counter()
        logs = tr._step(batches, step)
        times.append(time.perf_counter() - t0)
        tokens.append(int(logs["_tokens"]))
        samples.append(int(logs["_samples"]))
    return {"step_s": times[warmup:], "tokens": tokens[warmup:], "samples": samples[warmup:]}


# ---- plain HF Trainer ---------------------------------------------------------------------
def run_hf(cfg: RunConfig, steps: int, warmup: int, out: Path) -> dict:
    import torch.nn.functional as F
    from torch import nn
    from torch.utils.data import Sampler
    from transformers import Trainer as HFTrainer
    from transformers import TrainerCallback, TrainingArguments

    from commit_train.data.collate import Collator, RecordDataset
    from commit_train.data.records import read_records
    from commit_train.data.sources import resolve_source
    from commit_train.lr import lr_factor
    from commit_train.modeling import load_model
    from commit_train.partition import apply_tuning, param_groups
    from commit_train.precision import _precision
    from commit_train.sampler import ResumableBatchSampler

    class LossModel(nn.Module):
        """HF's Trainer reads ``model(**batch)["loss"]``; ``MultimodalLM`` returns answer
        logits and targets, so this adds the cross-entropy ``Trainer._loss`` takes for
        ``method=constant`` (no auxiliary loss)."""

        def __init__(self, mlm: nn.Module):
            super().__init__()
            self.mlm = mlm

        def forward(self, input_ids, attention_mask, labels, media):
            o = self.mlm(
                input_ids=input_ids, attention_mask=attention_mask, labels=labels, media=media
            )
            return {"loss": F.cross_entropy(o["logits"].float(), o["targets"])}

    class SameOrder(Sampler):
        """Our trainer's first-epoch batch order, flattened for HF's batch_size batching."""

        def __init__(self, n: int, batch_size: int, seed: int):
            self.batches = ResumableBatchSampler(n, batch_size, seed)
            self.n = self.batches.batches_per_epoch * batch_size

        def __len__(self) -> int:
            return self.n

        def __iter__(self):
            per = self.batches.batches_per_epoch
            return itertools.chain.from_iterable(itertools.islice(iter(self.batches), per))

    class Clock(TrainerCallback):
        def __init__(self):
            self.ends: list[float] = []

        def on_step_end(self, args, state, control, **kw):
            self.ends.append(time.perf_counter())

    class CountingCollator(Collator):
        """The library collator, also noting each batch's non-padding token count."""

        tokens: list[int]

        def __call__(self, items, root=None):
            batch = super().__call__(items, root)
            self.tokens.append(int(batch["attention_mask"].sum()))
            return batch

    class SameOrderTrainer(HFTrainer):
        def _get_train_sampler(self, train_dataset=None):
            return SameOrder(len(self.train_dataset), tc.batch_size, cfg.seed)

    tc = cfg.train
    torch.manual_seed(cfg.seed)  # as Trainer.setup
    jsonl, root = resolve_source(cfg.data.train, "train", out)
    records, _ = read_records(jsonl, root=Path(cfg.data.root or root), modality=cfg.model.modality)
    records = records[: cfg.data.max_train_records] if cfg.data.max_train_records else records
    mlm, processor = load_model(cfg.model, seed=cfg.seed)
    apply_tuning(mlm, cfg.model)
    groups = param_groups(mlm, cfg.model)
    pgs = []
    for side in ("encoder", "llm"):
        base = tc.lr_encoder if side == "encoder" else tc.lr_llm
        other, proj = groups.split_projector(side)
        pgs += [{"params": other, "lr": base}] if other else []
        pgs += [{"params": proj, "lr": tc.lr_projector or base}] if proj else []
    opt = torch.optim.AdamW(pgs, betas=tuple(tc.betas), weight_decay=tc.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, tc))
    collator = CountingCollator(processor, cfg.data.max_length, cfg.data.system_prompt)
    collator.tokens = []
    hf_args = TrainingArguments(
        output_dir=str(out),
        max_steps=steps,
        per_device_train_batch_size=tc.batch_size,
        gradient_accumulation_steps=tc.grad_accum,
        max_grad_norm=tc.max_grad_norm or 0.0,
        seed=cfg.seed,
        use_cpu=not torch.cuda.is_available(),
        bf16=_precision(cfg) == "bf16",  # what our Accelerator gets
        fp16=_precision(cfg) == "fp16",
        report_to=[],
        save_strategy="no",
        eval_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        dataloader_pin_memory=False,
        dataloader_drop_last=True,
    )
    clock = Clock()
    trainer = SameOrderTrainer(
        model=LossModel(mlm),
        args=hf_args,
        train_dataset=RecordDataset(records, Path(cfg.data.root or root), processor.sampling_rate),
        data_collator=collator,
        optimizers=(opt, sched),
        callbacks=[clock],
    )
    trainer.train()
    if len(clock.ends) != steps:
        raise RuntimeError(f"HF Trainer ran {len(clock.ends)} steps, expected {steps}")
    step_s = [b - a for a, b in itertools.pairwise(clock.ends)][warmup - 1 :]
    per_step = tc.batch_size * tc.grad_accum
    tok = [sum(collator.tokens[i * tc.grad_accum : (i + 1) * tc.grad_accum]) for i in range(steps)]
    return {"step_s": step_s, "tokens": tok[warmup:], "samples": [per_step] * (steps - warmup)}


def worker(args: argparse.Namespace) -> int:
    """One run in this (fresh) process; prints its result as one JSON line."""
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    for name in ("transformers", "accelerate", "commit_train", "peft"):
        logging.getLogger(name).setLevel(logging.ERROR)
    cfg = load_config(args.recipe, overrides(args))
    fn = run_ours if args.worker == "ours" else run_hf
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"hf-bench-{args.worker}-") as tmp:
        res = fn(cfg, args.steps, args.warmup, Path(tmp))
    res.update(
        wall_s=time.perf_counter() - t0,
        peak_rss_mb=peak_rss_mb(),
        threads=torch.get_num_threads(),
    )
    emit_result(res)
    return 0


def spawn(mode: str, args: argparse.Namespace) -> dict:
    res = run_worker(worker_cmd(__file__, mode, args), mode, ROOT)
    t = sum(res["step_s"])
    res["samples_per_s"] = sum(res["samples"]) / t
    res["tokens_per_s"] = sum(res["tokens"]) / t
    res["mean_step_s"] = statistics.fmean(res["step_s"])
    return res


def summarize(runs: dict[str, list[dict]]) -> dict:
    s: dict = {}
    for mode in MODES:
        rs = runs[mode]
        t = sum(sum(r["step_s"]) for r in rs)
        s[mode] = {
            "samples_per_s": sum(sum(r["samples"]) for r in rs) / t,
            "tokens_per_s": sum(sum(r["tokens"]) for r in rs) / t,
            "mean_step_s": t / sum(len(r["step_s"]) for r in rs),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in rs),
            "threads": sorted({r["threads"] for r in rs}),
        }
    s["ratio"] = s["ours"]["samples_per_s"] / s["hf"]["samples_per_s"]
    s["per_rep_ratio"] = [
        a["samples_per_s"] / b["samples_per_s"]
        for a, b in zip(runs["ours"], runs["hf"], strict=True)
    ]
    s["same_batches"] = all(
        a["tokens"] == b["tokens"] for a, b in zip(runs["ours"], runs["hf"], strict=True)
    )
    return s


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_run_args(
        ap,
        steps=14,
        reps=2,
        reps_help="ours/HF pairs, order flipped each time",
        quick_help="smoke run: 1 pair, 5 steps, batch 2",
    )
    ap.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.quick:
        args.reps, args.steps, args.warmup = 1, 5, 2
        args.batch_size = args.batch_size or 2
        args.max_records = args.max_records or 64
    if args.warmup < 1 or args.steps <= args.warmup:
        ap.error("need 1 <= --warmup < --steps (HF step times are end-to-end differences)")
    if args.worker:
        return worker(args)

    cfg = load_config(args.recipe, overrides(args))
    runs: dict[str, list[dict]] = {m: [] for m in MODES}
    t_start, load = time.perf_counter(), OtherLoad()
    for rep in range(args.reps):
        for mode in MODES if rep % 2 == 0 else MODES[::-1]:
            res = spawn(mode, args)
            runs[mode].append(res)
            print(
                f"rep {rep + 1}/{args.reps} {mode:>4}: {res['samples_per_s']:.2f} samples/s, "
                f"{res['tokens_per_s']:.0f} tokens/s, mean step {res['mean_step_s']:.3f} s, "
                f"peak RSS {res['peak_rss_mb']:.0f} MiB, run wall {res['wall_s']:.0f} s",
                flush=True,
            )
    wall, others = time.perf_counter() - t_start, load.cores()
    s = summarize(runs)
    o, h = s["ours"], s["hf"]
    lines = [
        f"ours: {o['samples_per_s']:.2f} samples/s, {o['tokens_per_s']:.0f} tokens/s, "
        f"step {o['mean_step_s']:.3f} s, peak RSS {o['peak_rss_mb']:.0f} MiB",
        f"HF:   {h['samples_per_s']:.2f} samples/s, {h['tokens_per_s']:.0f} tokens/s, "
        f"step {h['mean_step_s']:.3f} s, peak RSS {h['peak_rss_mb']:.0f} MiB",
        f"ratio ours/HF (samples/s): {s['ratio']:.3f} (per pair: "
        + ", ".join(f"{r:.3f}" for r in s["per_rep_ratio"])
        + ")",
        f"identical batches (token counts of every timed step): {s['same_batches']}",
        f"wall time: {wall:.0f} s; other processes used {others:.2f} cores on average",
    ]
    print("\n".join(lines))
    if args.quick or args.no_write:
        return 0
    given = sys.argv[1:] if argv is None else argv
    cmd = " ".join(["python benchmarks/hf_trainer_throughput.py", *given])
    recipe = args.recipe.relative_to(ROOT) if args.recipe.is_relative_to(ROOT) else args.recipe
    timed = args.steps - args.warmup
    threads = ", ".join(str(t) for t in sorted(set(o["threads"] + h["threads"])))
    body = f"""Command: `.venv/bin/commit prepare && .venv/bin/{cmd}`

Machine: {machine()}, {threads} torch intra-op thread(s). Recipe `{recipe}`
(SmolLM2-135M-Instruct with peft LoRA r=16 on q/k/v/o, EfficientNet-Lite0 + MLP projector
fully trained, AdamW, the recipe's LRs, schedule and max_grad_norm), batch
{cfg.train.batch_size}, max_length {cfg.data.max_length}. {args.reps} pairs of runs, order
flipped every pair, each run a fresh process training {args.steps} steps of which the first
{args.warmup} are untimed ({timed} timed steps per run). Ours: `method=constant` with the κ
probe never due (`balance.probe_every` > steps), tracking off, timed per `Trainer._step`.
HF: `transformers.Trainer` on the same model, built the same way (`load_model` +
`apply_tuning`), a thin loss wrapper around `MultimodalLM.forward`, the library collator and
our batch order; `report_to=[]`, no saving, eval or logging; timed between `on_step_end`
callbacks. Identical batches on both sides (non-padding token counts of every timed step
equal): **{"yes" if s["same_batches"] else "no"}**.

| | samples/s | tokens/s (non-padding) | mean step (s) | peak RSS (MiB) |
|---|---:|---:|---:|---:|
| ours (`commit_train.Trainer`) | {o["samples_per_s"]:.2f} | {o["tokens_per_s"]:.0f} | {o["mean_step_s"]:.3f} | {o["peak_rss_mb"]:.0f} |
| HF `Trainer` + peft | {h["samples_per_s"]:.2f} | {h["tokens_per_s"]:.0f} | {h["mean_step_s"]:.3f} | {h["peak_rss_mb"]:.0f} |
| ratio ours/HF | **{s["ratio"]:.3f}** | {o["tokens_per_s"] / h["tokens_per_s"]:.3f} | | |

- Per pair ratio (samples/s): {", ".join(f"{r:.3f}" for r in s["per_rep_ratio"])}. Target
  >= {TARGET:.1f}x: **{"met" if s["ratio"] >= TARGET else "missed"}**.
- Throughput is summed over the timed steps of all runs of a side (samples or tokens /
  timed seconds). Peak RSS is the largest `ru_maxrss` over that side's runs: the whole
  process (imports, model load, training), measured per run because each run is its own
  process.
- Total wall time {wall:.0f} s. Other processes on the machine used {others:.2f} of its
  {os.cpu_count()} cores on average meanwhile (busy CPU time minus this benchmark's
  processes){"; the machine was shared" if others > 0.25 else ""}.
"""
    write_section(SECTION, body, args.benchmarks_md)
    print(f"updated {args.benchmarks_md}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
