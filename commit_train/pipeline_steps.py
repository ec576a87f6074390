"""Library calls shaped for one orchestrated step each (the KFP components wrap them).

A pipeline task gets its inputs as parameters and artifact paths, may be retried with the
same inputs, and must leave its outputs where the orchestrator looks. The training step
needs more than :func:`commit_train.trainer.train` for that, and this module holds it so
the component stays a few lines and nothing of it is kfp-specific:

* the recipe arrives as text (a pod has no copy of the file) and is validated with the
  same config classes as ``commit train``;
* training reads the *staged* dataset the previous step produced, not the recipe's source;
* checkpoints go to ``<checkpoint_root>/<pipeline run id>/<task>`` (S3 on a cluster, so
  they outlive the pod), and every attempt resumes from the newest one there: a retried
  task continues instead of starting over;
* the MLflow run is the step's run (:func:`commit_train.orchestration.step_run`), so a
  retry appends to the same run and the exit handler can find it by its tags.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from commit_train import storage
from commit_train.checkpoint import latest_checkpoint
from commit_train.checkpoint_remote import RemoteRun
from commit_train.config import RunConfig, load_config_text

log = logging.getLogger(__name__)


@dataclass
class TrainStepResult:
    run_id: str | None
    output_dir: str  # where checkpoints (and, for s3://, the model) live
    model_dir: Path  # the exported model as the step's output
    resumed_from_step: int
    metrics: dict[str, float] = field(default_factory=dict)
    model_metadata: dict[str, Any] = field(default_factory=dict)


def staged_data_overrides(dataset_dir: str | Path) -> list[str]:
    """Overrides pointing ``data.train``/``data.val`` at a staged dataset's splits."""
    val = storage.join(dataset_dir, "val.jsonl")
    return [
        f"data.train={storage.join(dataset_dir, 'train.jsonl')}",
        f"data.val={val}" if storage.exists(val) else "data.val=",
        "data.root=",  # staged media paths are relative to the split files
    ]


def pipeline_config(
    recipe: str,
    overrides: list[str] | tuple[str, ...] = (),
    method: str = "",
    dataset_dir: str | Path | None = None,
    source: str = "pipeline parameter 'recipe'",
) -> RunConfig:
    """The run config a pipeline's train step uses: ``recipe`` text + ``overrides`` +
    ``method`` (empty: the recipe's) + the staged dataset, validated. Compile/submit call
    it without ``dataset_dir`` to fail early on exactly the keys the step will see."""
    # One MLflow for every step: the environment's (the cluster's ConfigMap, or what
    # `commit pipeline run --local` sets), never a per-recipe URI only train would see.
    extra = [*overrides, "tracking.uri="]
    if method:
        extra.append(f"method={method}")
    if dataset_dir is not None:
        extra += staged_data_overrides(dataset_dir)
    return load_config_text(recipe, extra, source=source)


def resume_step(output_dir: str) -> int:
    """Step of the newest complete checkpoint under ``output_dir`` (0: none yet)."""
    if storage.is_s3(output_dir):
        latest = RemoteRun(output_dir).latest()
        name = latest.rsplit("/", 1)[1] if latest else None
    else:
        path = latest_checkpoint(output_dir)
        name = path.name if path else None
    return int(name.split("-", 1)[1]) if name else 0


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)  # same file system: no second copy of the weights
    except OSError:
        shutil.copy2(src, dst)


def publish_model(src: Path, dst: str | Path) -> Path:
    """Put the exported model dir at ``dst`` (an orchestrator's output path)."""
    dst = Path(dst)
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, copy_function=_link_or_copy)
    return dst


def train_step(
    recipe: str,
    overrides: list[str],
    method: str,
    dataset_dir: str,
    checkpoint_root: str,
    pipeline_run_id: str,
    task_name: str,
    model_dir: str | Path,
) -> TrainStepResult:
    """Train (or resume) one pipeline run's model; see the module docstring."""
    from commit_train.orchestration import step_run
    from commit_train.trainer import train

    cfg = pipeline_config(recipe, overrides, method, dataset_dir)
    output_dir = storage.join(checkpoint_root.rstrip("/"), pipeline_run_id, task_name)
    if not storage.is_s3(output_dir):
        output_dir = str(Path(output_dir).resolve())
    start = resume_step(output_dir)
    if start:
        log.info("resuming pipeline run %s task %s from step %d", pipeline_run_id, task_name, start)
    run_id = None
    if cfg.tracking.enabled:
        run_id = step_run(
            pipeline_run_id, task_name, cfg.tracking.experiment, cfg.tracking.run_name,
            cfg.tracking.uri,
        )  # fmt: skip
    # resume only what exists: a first attempt is a fresh start, not a failed resume
    result = train(cfg, output_dir=output_dir, resume=start > 0, run_id=run_id)
    published = publish_model(result.model_dir, model_dir)
    metrics = {
        "steps": float(result.steps),
        "resumed_from_step": float(start),
        "train_loss": result.final_train_loss,
        "median_step_s": result.step_time_s,
    }
    if result.final_val_loss is not None:
        metrics["val_loss"] = result.final_val_loss
    meta = {
        "mlflow_run_id": result.run_id or "",
        "checkpoints": output_dir,
        "method": cfg.method,
        "modality": cfg.model.modality,
    }
    return TrainStepResult(result.run_id, output_dir, published, start, metrics, meta)
