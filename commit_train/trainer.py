"""The training loop: accelerate, one AdamW per side, exact resume, MLflow logging.

One optimizer per side is the design CoMMIT needs (METHOD.md §2): the encoder side steps
first, then the LLM side, so the κ probe can measure each side's effect on the output
distribution between the two steps without copying weights. ``StepHooks`` is where the
balance machinery plugs in; the default does nothing and trains with the base schedule.

``train(cfg)`` is the one library call the CLI and the KFP train component wrap: inputs
and outputs are paths, nothing global.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from accelerate import Accelerator
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from commit_train import storage
from commit_train.checkpoint import (
    NonFiniteState,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from commit_train.checkpoint_remote import RemoteRun
from commit_train.config import RunConfig
from commit_train.data.collate import Collator, RecordDataset
from commit_train.data.records import read_records
from commit_train.data.sources import resolve_source
from commit_train.data.specs import media_roots
from commit_train.errors import TrainingDiverged
from commit_train.hooks import SIDES, StepHooks
from commit_train.lr import lr_factor
from commit_train.methods import MethodHooks
from commit_train.modeling import RECIPE_NAME, load_model, save_model_dir
from commit_train.partition import apply_tuning, param_groups
from commit_train.plots import plot_training
from commit_train.precision import make_accelerator, probe_autocast
from commit_train.runs import comparison_tags
from commit_train.sampler import ResumableBatchSampler
from commit_train.tracking import RunTracker

log = logging.getLogger(__name__)
#: the records data.skip_bad dropped (file, line, field, reason), in the run dir and MLflow
SKIPPED_NAME = "skipped_records.jsonl"
#: how a training run can go on despite bad records (read_records names it in its error)
SKIP_BAD_HINT = (
    "Fix these records, or set data.skip_bad=true to skip them (listed in the run's "
    f"{SKIPPED_NAME} and its MLflow artifacts)."
)


@dataclass
class TrainResult:
    output_dir: Path
    model_dir: Path
    run_id: str | None
    steps: int
    final_train_loss: float
    final_val_loss: float | None
    step_time_s: float
    metrics: dict[str, float] = field(default_factory=dict)


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    out = {}
    for k, v in batch.items():
        if isinstance(v, dict):
            out[k] = {kk: vv.to(device) for kk, vv in v.items()}
        elif isinstance(v, torch.Tensor):
            out[k] = v.to(device)
        else:
            out[k] = v
    return out


def _grad_norm(params: list[torch.nn.Parameter]) -> float:
    grads = [p.grad.detach().float().norm() for p in params if p.grad is not None]
    return float(torch.stack(grads).norm()) if grads else 0.0


def _param_norm(params: list[torch.nn.Parameter]) -> float:
    norms = [p.detach().float().norm() for p in params]
    return float(torch.stack(norms).norm()) if norms else 0.0


class Trainer:
    """Holds the state of one run; :meth:`fit` runs it. Use :func:`train` from outside."""

    def __init__(
        self,
        cfg: RunConfig,
        output_dir: str | Path | None = None,
        resume: bool = False,
        hooks: StepHooks | None = None,
        accelerator: Accelerator | None = None,
        run_id: str | None = None,
    ):
        self.cfg = cfg
        self._run_id_given = run_id
        # An s3:// output dir: work in a local staging dir and publish checkpoints and
        # the model to S3 (commit_train/checkpoint_remote.py).
        self.remote = RemoteRun.for_output(output_dir or cfg.train.output_dir)
        self.output_dir = (
            self.remote.local_dir if self.remote else Path(output_dir or cfg.train.output_dir)
        )
        self.resume = resume
        self._hooks_given = hooks
        self.acc = accelerator or make_accelerator(cfg)
        self.scaler = torch.amp.GradScaler("cuda") if self.acc.mixed_precision == "fp16" else None
        self.main = self.acc.is_main_process

    # ---- set-up: everything that can fail on input fails here, before training ---------
    def setup(self) -> None:
        cfg = self.cfg
        if self.remote is not None:  # credentials, bucket, permission: before data and model
            self.remote.preflight()
        torch.manual_seed(cfg.seed)
        self.train_records, self.train_root = self._load_split(
            cfg.data.train, "train", cfg.data.max_train_records
        )
        self.val_records, self.val_root = [], self.train_root
        if cfg.data.val:
            self.val_records, self.val_root = self._load_split(
                cfg.data.val, "val", cfg.data.max_val_records
            )

        self.mlm, self.processor = load_model(cfg.model, seed=cfg.seed)
        self.modes = apply_tuning(self.mlm, cfg.model)
        self.hooks = self._hooks_given or MethodHooks(
            cfg,
            self.mlm,
            autocast=probe_autocast(self.acc, self.mlm),
            reduce_mean=lambda t: self.acc.reduce(t, reduction="mean"),
        )
        self.groups = param_groups(self.mlm, cfg.model)
        for side in self.hooks.frozen_sides:  # e.g. feature_cd: no LLM grads at all
            for p in self.groups.params(side):
                p.requires_grad_(False)
            setattr(self.groups, side, [])
        if self.main:
            log.info("parameter partition:\n%s", self.groups.summary(self.modes))
        self.collator = Collator(self.processor, cfg.data.max_length, cfg.data.system_prompt)
        self.optimizers: dict[str, torch.optim.AdamW | None] = {}
        for side in SIDES:
            base = cfg.train.lr_encoder if side == "encoder" else cfg.train.lr_llm
            other, proj = self.groups.split_projector(side)
            # "base_lr" rides in the param group (and its state dict): the step scales it by
            # the side's schedule factor and CoMMIT multiplier.
            pgs = [{"params": other, "base_lr": base}] if other else []
            if proj:
                pgs.append({"params": proj, "base_lr": cfg.train.lr_projector or base})
            self.optimizers[side] = (
                torch.optim.AdamW(
                    pgs,
                    lr=base,
                    betas=tuple(cfg.train.betas),
                    weight_decay=cfg.train.weight_decay,
                )
                if pgs
                else None
            )
        if all(o is None for o in self.optimizers.values()):
            raise TrainingDiverged("nothing to train: every component is frozen in model.tuning")
        self.model = self.acc.prepare_model(self.mlm)
        self.start_step = 0
        self.run_id: str | None = self._run_id_given
        if self.remote is not None:  # staging holds only the remote's latest checkpoint
            self.remote.prepare(self.resume, self.main, self.acc.wait_for_everyone)
        ckpt = latest_checkpoint(self.output_dir) if self.resume else None
        if self.resume and ckpt is None and self.main:
            log.warning("--resume: no checkpoint under %s, starting from step 0", self.output_dir)
        if ckpt is not None:
            state = load_checkpoint(ckpt, self.mlm.model, self.optimizers, self.acc.process_index)
            self.start_step = int(state["step"])
            self.run_id = state.get("run_id") or self.run_id
            self.hooks.load_state_dict(state.get("balance", {}))
            if self.main:
                log.info("resumed from %s at step %d", ckpt, self.start_step)

    def _load_split(self, spec: str, split: str, limit: int | None) -> tuple[list, Path]:
        """Resolve and validate every record of a split (raises before any training)."""
        data = self.cfg.data
        jsonl, root = resolve_source(spec, split, self.output_dir)
        root = Path(data.root or root)
        self.data_files = {**getattr(self, "data_files", {}), split: Path(jsonl)}
        records, report = read_records(
            jsonl,
            root=root,
            modality=self.cfg.model.modality,
            skip_bad=data.skip_bad,
            media_roots=media_roots(spec),
            hint=SKIP_BAD_HINT,
        )
        if report.n_bad and self.main:
            log.warning("%s", report.summary())
        self.skipped = getattr(self, "skipped", []) + [
            {"split": split, "file": p.file, "line": p.line, "field": p.field,
             "reason": p.reason, "message": p.message}
            for p in report.problems
        ]  # fmt: skip
        return (records[:limit] if limit else records), root

    def _loader(self, start_micro_batch: int) -> DataLoader:
        sampler = ResumableBatchSampler(
            len(self.train_records),
            self.cfg.train.batch_size,
            self.cfg.seed,
            rank=self.acc.process_index,
            world_size=self.acc.num_processes,
            start_micro_batch=start_micro_batch,
        )
        ds = RecordDataset(self.train_records, self.train_root, self.processor.sampling_rate)
        # Own generator: creating the iterator must not draw from the global RNG, or a
        # resumed run (iterator made after the RNG is restored) would diverge.
        return DataLoader(
            ds,
            batch_sampler=sampler,
            collate_fn=self.collator,
            num_workers=0,
            generator=torch.Generator(),
        )

    # ---- one optimizer step ---------------------------------------------------------------
    def _forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The (DDP-wrapped) model on a collated batch, under the run's autocast."""
        with self.acc.autocast():
            return self.model(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                labels=batch["labels"],
                media=batch["media"],
            )

    def _loss(
        self, batch: dict[str, Any], step: int
    ) -> tuple[torch.Tensor, dict[str, float], dict[str, torch.Tensor]]:
        out = self._forward(batch)
        ce = F.cross_entropy(out["logits"].float(), out["targets"])
        parts = {"loss/ce": ce}
        parts.update(self.hooks.extra_loss(step, out))
        loss = sum(parts.values())
        return loss, {k: float(v.detach()) for k, v in parts.items()}, out

    def _check_finite(self, loss: torch.Tensor, step: int) -> None:
        bad = torch.tensor(
            0.0 if math.isfinite(float(loss.detach())) else 1.0, device=self.acc.device
        )
        if float(self.acc.reduce(bad, reduction="sum")) > 0:
            what = f"loss became {float(loss.detach())} at step {step + 1}; stopped."
            fix = (
                "Lower train.lr_encoder / train.lr_llm, enable train.max_grad_norm, or use "
                "train.precision=bf16 instead of fp16"
            )
            try:
                path = self._checkpoint(step)
            except NonFiniteState as e:
                # The weights are already NaN/inf: saving them would name a checkpoint
                # nobody can resume from as "good".
                last = latest_checkpoint(self.output_dir)
                where = (
                    f"the last good checkpoint is {self._shown(last)}; {fix}, then resume "
                    "with --resume."
                    if last is not None
                    else f"there is no earlier checkpoint; {fix} and start again."
                )
                raise TrainingDiverged(
                    f"{what} The weights are already non-finite ({len(e.bad)} of {e.total} "
                    f"tensors hold NaN or inf), so no checkpoint was written for this step: "
                    f"{where}"
                ) from None
            raise TrainingDiverged(
                f"{what} The last good state is saved in {self._shown(path)}. {fix}, then "
                "resume with --resume."
            )

    def _shown(self, path: Path) -> str:
        """Where a checkpoint is for the user: its S3 URI for an s3:// run (the local
        staging copy is removed when the run fails)."""
        if self.remote is None:
            return str(path)
        return storage.join(self.remote.checkpoints_uri, path.name)

    def _step(self, batches, step: int) -> dict[str, float]:
        cfg = self.cfg.train
        sides = self.hooks.trainable_sides(step)
        accum = cfg.grad_accum
        logs: dict[str, float] = {}
        n_samples = n_tokens = 0
        for micro in range(accum):
            batch = _to_device(next(batches), self.acc.device)
            n_samples += batch["input_ids"].shape[0]
            n_tokens += int(batch["attention_mask"].sum())
            last = micro == accum - 1
            ctx = self.acc.no_sync(self.model) if not last else _nullcontext()
            with ctx:
                loss, parts, out = self._loss(batch, step)
                self._check_finite(loss, step)
                scaled = loss / accum
                (self.scaler.scale(scaled) if self.scaler else scaled).backward()
            for k, v in parts.items():
                logs[k] = logs.get(k, 0.0) + v / accum
        if self.acc.num_processes > 1:  # log the global mean, not rank 0's share
            keys = sorted(logs)
            vals = torch.tensor([logs[k] for k in keys], device=self.acc.device)
            logs = dict(zip(keys, self.acc.reduce(vals, reduction="mean").tolist(), strict=True))
        logs["loss/train"] = sum(v for k, v in logs.items() if k.startswith("loss/"))
        self.hooks.after_backward(step, batch, out)
        del out
        mult = self.hooks.lr_multipliers(step)
        factor = lr_factor(step, cfg)
        for side in SIDES:
            opt = self.optimizers[side]
            # one scale per side: its schedule factor times its CoMMIT multiplier
            scale = factor * mult[side] if side in sides else 0.0
            base = cfg.lr_encoder if side == "encoder" else cfg.lr_llm
            logs[f"lr/{side}"] = base * scale
            if cfg.lr_projector and side == self.cfg.model.projector_side:
                logs["lr/projector"] = cfg.lr_projector * scale
            if opt is None:
                continue
            for g in opt.param_groups:
                g["lr"] = g["base_lr"] * scale
            if self.scaler:
                self.scaler.unscale_(opt)
            params = self.groups.params(side)
            norm = _grad_norm(params)
            logs[f"grad_norm/{side}"] = norm
            logs[f"grad_norm/{side}_normalized"] = norm / max(_param_norm(params), 1e-12)
            if cfg.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        # Encoder side first, then the LLM side: the probe measures in between.
        stepped = []
        for side in SIDES:
            opt = self.optimizers[side]
            if opt is not None and side in sides:
                if self.scaler:
                    self.scaler.step(opt)
                else:
                    opt.step()
                stepped.append(side)
            if side == "encoder":
                self.hooks.after_encoder_step(step, "encoder" in stepped)
        if self.scaler:
            self.scaler.update()
        for opt in self.optimizers.values():
            if opt is not None:
                opt.zero_grad(set_to_none=True)
        logs.update(self.hooks.after_step(step, tuple(stepped)))
        logs["_samples"] = n_samples
        logs["_tokens"] = n_tokens
        return logs

    # ---- validation, checkpoints ------------------------------------------------------------
    @torch.no_grad()
    def validate(self) -> float | None:
        if not self.val_records:
            return None
        self.model.eval()
        ds = RecordDataset(self.val_records, self.val_root, self.processor.sampling_rate)
        bs = self.cfg.train.batch_size
        idx = list(range(self.acc.process_index, len(ds), self.acc.num_processes))
        chunks = [idx[i : i + bs] for i in range(0, len(idx), bs)]
        if self.cfg.train.eval_batches:
            chunks = chunks[: self.cfg.train.eval_batches]
        total = torch.zeros(2, device=self.acc.device, dtype=torch.float64)
        for chunk in chunks:
            batch = _to_device(self.collator([ds[i] for i in chunk]), self.acc.device)
            out = self._forward(batch)
            ce = F.cross_entropy(out["logits"].float(), out["targets"], reduction="sum")
            total += torch.stack([ce.double(), torch.tensor(len(out["targets"])).double()])
        total = self.acc.reduce(total, reduction="sum")
        self.model.train()
        return float(total[0] / total[1].clamp(min=1))

    def _checkpoint(self, step: int) -> Path:
        state = {
            "run_id": self.run_id,
            "micro_batches": step * self.cfg.train.grad_accum,
            "balance": self.hooks.state_dict(),
        }
        path = save_checkpoint(
            self.output_dir,
            step,
            self.mlm.model,
            self.optimizers,
            state,
            rank=self.acc.process_index,
            world_size=self.acc.num_processes,
            barrier=self.acc.wait_for_everyone,
            keep=self.cfg.train.keep_checkpoints,
        )
        if self.remote is not None and self.main:
            self.remote.push_checkpoint(path, keep=self.cfg.train.keep_checkpoints)
        return path

    # ---- the run ------------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        try:
            return self._fit()
        except BaseException:
            if self.remote is not None and self.acc.is_local_main_process:
                self.remote.discard_staging()
            raise

    def _fit(self) -> TrainResult:
        cfg = self.cfg
        self.setup()
        self.output_dir.mkdir(parents=True, exist_ok=True)
        if self.main:
            recipe = yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
            (self.output_dir / "recipe.yaml").write_text(recipe)
        tags = {"method": cfg.method, "family": self.mlm.family, "modality": cfg.model.modality}
        if self.main:  # method, benchmark, recipe/data/code hashes (commit_train/runs.py)
            tags.update(
                comparison_tags(cfg, getattr(self, "data_files", {}).get("train"), self.train_root)
            )
        tracker = RunTracker(
            cfg.tracking,
            params=cfg.to_flat_dict(),
            tags=tags,
            run_id=self.run_id,
            enabled=cfg.tracking.enabled,
            is_main_process=self.main,
        )
        status = "FAILED"
        with tracker:
            self.run_id = tracker.run_id
            if self.main and getattr(self, "skipped", None):  # data.skip_bad dropped these
                path = self.output_dir / SKIPPED_NAME
                path.write_text("".join(json.dumps(r) + "\n" for r in self.skipped))
                tracker.log_artifact(path, "")
                log.warning("%d skipped record(s) listed in %s", len(self.skipped), path)
            try:
                result = self._fit_loop(tracker)
                status = "FINISHED"
                return result
            except KeyboardInterrupt:
                status = "KILLED"
                raise
            finally:
                tracker.close(status=status)

    def _fit_loop(self, tracker: RunTracker) -> TrainResult:
        cfg = self.cfg.train
        self.model.train()
        batches = iter(self._loader(self.start_step * cfg.grad_accum))
        bar = tqdm(
            total=cfg.steps,
            initial=self.start_step,
            disable=not self.main,
            desc="train",
            dynamic_ncols=True,
        )
        loss_ema = None
        step_times: list[float] = []
        train_time = 0.0
        val_loss = None
        step = self.start_step
        for step in range(self.start_step, cfg.steps):
            t0 = time.perf_counter()
            logs = self._step(batches, step)
            dt = time.perf_counter() - t0
            step_times.append(dt)
            samples = logs.pop("_samples") * self.acc.num_processes
            tokens = logs.pop("_tokens") * self.acc.num_processes
            logs["throughput/samples_per_s"] = samples / dt
            logs["throughput/tokens_per_s"] = tokens / dt
            train_time += dt
            logs["time/probe_fraction"] = self.hooks.probe_seconds / max(train_time, 1e-9)
            loss_ema = (
                logs["loss/train"]
                if loss_ema is None
                else 0.9 * loss_ema + 0.1 * logs["loss/train"]
            )
            done = step + 1
            if cfg.eval_every and done % cfg.eval_every == 0 and done < cfg.steps:
                val_loss = self.validate()
                if val_loss is not None:
                    logs["loss/val"] = val_loss
            if done % cfg.log_every == 0 or done == cfg.steps:
                if self.collator.n_truncated:  # questions cut to fit data.max_length so far
                    logs["data/truncated_examples"] = float(self.collator.n_truncated)
                tracker.log_metrics(logs, step=done)
            bar.set_postfix(
                loss=f"{loss_ema:.3f}",
                lr_enc=f"{logs['lr/encoder']:.1e}",
                lr_llm=f"{logs['lr/llm']:.1e}",
                refresh=False,
            )
            bar.update(1)
            if cfg.save_every and done % cfg.save_every == 0 and done < cfg.steps:
                # Metrics up to a checkpoint are durable before it becomes visible: a
                # killed run resumes from it and re-logs only the steps after it.
                tracker.flush(timeout_s=10.0)
                self._checkpoint(done)
        bar.close()
        val_loss = self.validate()
        if val_loss is not None:
            tracker.log_metrics({"loss/val": val_loss}, step=cfg.steps)
        self._checkpoint(cfg.steps)
        model_dir = self.output_dir / "model"
        if self.main:
            recipe = (self.output_dir / "recipe.yaml").read_text()
            save_model_dir(self.mlm, self.processor, model_dir, {RECIPE_NAME: recipe})
        self.acc.wait_for_everyone()
        if self.main:
            plot = self.output_dir / "training.png"
            plot_training(tracker.history, plot)
            tracker.log_artifact(plot, "")
            if self.cfg.tracking.log_model:
                tracker.log_artifacts(model_dir, "model")
            tracker.log_artifact(self.output_dir / "recipe.yaml", "")
        if self.remote is not None and self.main:
            self.remote.push_outputs(self.output_dir)
        median = sorted(step_times)[len(step_times) // 2] if step_times else float("nan")
        return TrainResult(
            output_dir=self.output_dir,
            model_dir=model_dir,
            run_id=self.run_id,
            steps=cfg.steps,
            final_train_loss=float(loss_ema) if loss_ema is not None else float("nan"),
            final_val_loss=val_loss,
            step_time_s=median,
        )


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def train(
    cfg: RunConfig,
    output_dir: str | Path | None = None,
    resume: bool = False,
    hooks: StepHooks | None = None,
    run_id: str | None = None,
) -> TrainResult:
    """Train per ``cfg``; write checkpoints and the final model under ``output_dir``.

    ``run_id``: log into this existing MLflow run instead of creating one (an orchestrator
    made it, e.g. KFP's MLflow integration or the pipeline's train step); a checkpoint
    being resumed keeps the run it names.
    """
    return Trainer(cfg, output_dir=output_dir, resume=resume, hooks=hooks, run_id=run_id).fit()
