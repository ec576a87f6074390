"""Run the whole pipeline on this machine with ``kfp.local``, and collect what it made.

``SubprocessRunner(use_venv=False)`` runs each task as a process of this venv (the same
code the image holds); ``runner="docker"`` runs them in the component image through
``kfp.local.DockerRunner`` (``network_mode="host"``: this machine's dockerd has no
bridge). MLflow is the environment's ``MLFLOW_TRACKING_URI`` or ``./mlflow.db``; the
tasks get it, like the cluster's ConfigMap gives it to pods.

kfp.local keeps every task's outputs under ``<pipeline_root>/<pipeline>-<timestamp>/``;
:func:`run_local` reads them back into a :class:`LocalRunResult` (MLflow run, registered
version and alias, metrics and report per benchmark), so callers get a result instead of
a log to grep.
"""

import contextlib
import json
import logging
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from commit_train.errors import CommitError
from commit_train.tracking import resolve_tracking_uri
from pipelines import commit_pipeline as cp
from pipelines.preflight import BUILTIN_MODALITY, check_inputs, check_local_environment
from pipelines.settings import PipelineSettings, load_settings

log = logging.getLogger(__name__)
ROOT = cp.ROOT
#: recipe per built-in benchmark, for runs that name benchmarks but no recipe
BUILTIN_RECIPES = {
    "vision": ROOT / "recipes" / "builtin_vision.yaml",
    "audio": ROOT / "recipes" / "builtin_audio.yaml",
}
#: training steps of the main job (`commit pipeline run --local` with no recipe) per
#: built-in benchmark: ``(fast, slow)``. Fast: a GPU, or a CPU that computes bf16 natively
#: (then bf16 autocast makes a vision step ~2x cheaper); slow: plain fp32 on a CPU. Both fit
#: about 10 minutes on 2 CPU cores (BENCHMARKS.md, "Pipeline overhead").
MAIN_JOB_STEPS: dict[str, tuple[int, int]] = {"vision": (300, 150), "audio": (150, 150)}


def native_bf16() -> bool:
    """Does this CPU compute bf16 natively (AVX512-BF16 or AMX tiles)? Without it, bf16 is
    emulated and slower than fp32, so the main job stays in fp32 there."""
    import torch

    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    try:
        return any(bool(getattr(torch.cpu, c, lambda: False)()) for c in checks)
    except Exception:  # noqa: BLE001 - a private torch probe: any failure means "no"
        return False


def main_job_overrides(benchmark: str) -> list[str]:
    """What the main job changes in a built-in recipe (see :data:`MAIN_JOB_STEPS`)."""
    import torch

    gpu = torch.cuda.is_available()
    bf16 = not gpu and native_bf16()
    steps = MAIN_JOB_STEPS[benchmark][0 if gpu or bf16 else 1]
    out = [f"train.steps={steps}", f"train.eval_every={steps // 3}",
           f"train.save_every={steps // 3}"]  # fmt: skip
    if bf16:
        out.append("train.precision=bf16")  # on a GPU the recipe's `auto` already is
    return out


@dataclass
class BenchmarkResult:
    benchmark: str
    metrics: dict[str, float]
    report: Path | None
    results_dir: Path | None


@dataclass
class LocalRunResult:
    status: str  # SUCCEEDED | FAILED
    run_dir: Path | None  # <pipeline_root>/<pipeline>-<timestamp>
    mlflow_uri: str
    mlflow_run_id: str | None
    model_name: str
    gate_metric: str
    gate_threshold: float
    higher_is_better: bool
    gate_passed: bool | None
    gate_value: float | None
    version: str | None  # registered model version (None: gate failed or not reached)
    alias: str | None  # champion | challenger
    benchmarks: list[BenchmarkResult] = field(default_factory=list)
    train_metrics: dict[str, float] = field(default_factory=dict)
    closed_runs: int | None = None
    error: str | None = None
    wall_s: float = 0.0


def plan_runs(benchmarks: list[str], recipe: str | None) -> list[tuple[Path | None, list[str]]]:
    """``(recipe, benchmarks)`` per pipeline run. With a recipe, one run; without one,
    one run per built-in modality with its built-in recipe (a model takes one modality,
    so ``vision,audio`` means two models)."""
    if recipe is not None:
        return [(Path(recipe), list(benchmarks))]
    plan: dict[str, list[str]] = {}
    for b in benchmarks:
        name = b.removeprefix("builtin:")
        if name not in BUILTIN_RECIPES:
            raise CommitError(
                f"benchmark {b!r} has no built-in recipe; pass --recipe with a model for it"
            )
        plan.setdefault(BUILTIN_MODALITY[name], []).append(name)
    out = []
    for names in plan.values():
        out.append((None, names))
    return out


@contextlib.contextmanager
def _env(values: dict[str, str]):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _params(task_dir: Path) -> dict[str, Any]:
    return _read(task_dir / "executor_output.json").get("parameterValues", {})


def _artifact(task_dir: Path, name: str) -> dict[str, Any]:
    arts = _read(task_dir / "executor_output.json").get("artifacts", {})
    found = (arts.get(name) or {}).get("artifacts") or [{}]
    return found[0]


def collect(run_dir: Path, result: LocalRunResult) -> LocalRunResult:
    """Fill ``result`` from the task outputs kfp.local left in ``run_dir``."""
    train = _params(run_dir / "train")
    result.mlflow_run_id = train.get("mlflow_run_id") or result.mlflow_run_id
    result.train_metrics = dict(_artifact(run_dir / "train", "metrics").get("metadata", {}))
    for ev in sorted(run_dir.glob("for-loop-*/evaluate")):
        meta = dict(_artifact(ev, "metrics").get("metadata", {}))
        results_dir = meta.pop("results_dir", None)
        bench = next((k.split("/", 1)[0] for k in meta if "/" in k), "?")
        metrics = {k.split("/", 1)[1]: float(v) for k, v in meta.items() if "/" in k}
        uri = _artifact(ev, "report").get("uri")
        result.benchmarks.append(
            BenchmarkResult(
                bench,
                metrics,
                Path(uri) if uri else None,
                Path(results_dir) if results_dir else None,
            )
        )
    gate = _params(run_dir / "check-gate")
    if "Output" in gate:
        result.gate_passed = bool(gate["Output"])
        value = _artifact(run_dir / "check-gate", "gate").get("metadata", {}).get("value")
        result.gate_value = float(value) if value is not None else None
    reg = _params(next(run_dir.glob("**/register"), run_dir / "register"))
    if reg:
        result.version = str(reg.get("version"))
        result.alias = str(reg.get("alias"))
    closed = _params(run_dir / "close-runs")
    if "Output" in closed:
        result.closed_runs = int(closed["Output"])
    return result


def _runner(kind: str, image: str, env: dict[str, str], run_args: dict[str, Any] | None):
    from kfp import local

    if kind == "subprocess":
        return local.SubprocessRunner(use_venv=False)
    if kind == "docker":
        args = {"network_mode": "host", **(run_args or {})}
        args["environment"] = {**env, **(args.get("environment") or {})}
        return local.DockerRunner(**args)
    raise CommitError(f"unknown local runner {kind!r}; use subprocess or docker")


def local_settings(settings: PipelineSettings | None, image: str | None) -> PipelineSettings:
    """Settings for a local run: no backoff wait between attempts (nothing to wait for)."""
    s = settings or load_settings()
    update: dict[str, Any] = {"retry": s.retry.model_copy(update={"backoff_s": 0})}
    if image:
        update["image"] = image
    return s.model_copy(update=update)


def run_local(
    recipe: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    benchmarks: list[str] | tuple[str, ...] = ("vision",),
    method: str = "",
    model_name: str | None = None,
    gate_metric: str | None = None,
    gate_threshold: float = 0.0,
    higher_is_better: bool = True,
    eval_split: str = "test",
    eval_limit: int = 0,
    data_source: str | None = None,
    pipeline_root: str | Path = "local_outputs",
    checkpoint_root: str | None = None,
    tracking_uri: str | None = None,
    settings: PipelineSettings | None = None,
    runner: Literal["subprocess", "docker"] = "subprocess",
    docker_image: str | None = None,
    docker_run_args: dict[str, Any] | None = None,
) -> LocalRunResult:
    """Run the pipeline once with ``kfp.local`` (see the module docstring).

    ``recipe`` None: the built-in recipe of the first benchmark plus
    :func:`main_job_overrides` (the main job). ``checkpoint_root`` defaults to
    ``<pipeline_root>/checkpoints``. Every input is checked before the first task
    (:mod:`pipelines.preflight`); a failed task gives ``status="FAILED"`` and ``error``.
    """
    from kfp import local

    benchmarks = list(benchmarks)
    first = benchmarks[0].removeprefix("builtin:") if benchmarks else "vision"
    if recipe is None:
        if first not in BUILTIN_RECIPES:
            raise CommitError(f"benchmark {first!r} has no built-in recipe; pass a recipe")
        recipe = BUILTIN_RECIPES[first]
        overrides = [*main_job_overrides(first), *overrides]
    recipe_path = Path(recipe)
    if not recipe_path.is_file():
        raise CommitError(f"recipe file {recipe_path} does not exist (see recipes/)")
    text = cp.recipe_parameter(recipe_path.read_text(encoding="utf-8"))
    gate_metric = gate_metric if gate_metric is not None else f"eval/{first}/accuracy"
    model_name = model_name or f"commit-{first}"
    cfg = check_inputs(
        text, list(overrides), method, benchmarks, gate_metric, data_source,
        recipe_source=str(recipe_path),
    )  # fmt: skip
    data_source = data_source or cfg.data.train
    pipeline_root = Path(pipeline_root).resolve()
    checkpoint_root = checkpoint_root or str(pipeline_root / "checkpoints")
    uri = resolve_tracking_uri(tracking_uri)
    check_local_environment(
        uri, {"pipeline root": str(pipeline_root), "checkpoint root": checkpoint_root}
    )

    s = local_settings(settings, docker_image if runner == "docker" else None)
    pipeline = cp.build_pipeline(s, text, {})
    args = {
        "recipe": text,
        "overrides": list(overrides),
        "method": method,
        "data_source": data_source,
        "benchmarks": benchmarks,
        "eval_split": eval_split,
        "eval_limit": eval_limit,
        "model_name": model_name,
        "gate_metric": gate_metric,
        "gate_threshold": float(gate_threshold),
        "higher_is_better": higher_is_better,
        "checkpoint_root": checkpoint_root,
    }
    env = {"MLFLOW_TRACKING_URI": uri}
    result = LocalRunResult(
        status="FAILED",
        run_dir=None,
        mlflow_uri=uri,
        mlflow_run_id=None,
        model_name=model_name,
        gate_metric=gate_metric,
        gate_threshold=float(gate_threshold),
        higher_is_better=higher_is_better,
        gate_passed=None,
        gate_value=None,
        version=None,
        alias=None,
    )
    before = set(pipeline_root.glob(f"{cp.PIPELINE_NAME}-*"))
    t0 = time.perf_counter()
    with _env(env), warnings.catch_warnings():
        # kfp.local says, per task, that resources/accelerators are ignored and that our
        # image is not a python one; both are expected here.
        warnings.filterwarnings("ignore", message=".*(not supported|non-Python|ignored).*")
        warnings.filterwarnings("ignore", category=UserWarning, module="kfp")
        local.init(
            runner=_runner(runner, s.image, env, docker_run_args),
            pipeline_root=str(pipeline_root),
            raise_on_error=True,
        )
        try:
            pipeline(**args)
            result.status = "SUCCEEDED"
        except RuntimeError as e:
            result.error = str(e)
    result.wall_s = time.perf_counter() - t0
    new = sorted(set(pipeline_root.glob(f"{cp.PIPELINE_NAME}-*")) - before)
    if new:
        result.run_dir = new[-1]
        collect(result.run_dir, result)
    log.debug("local pipeline run: %s", result)
    return result


def summary(r: LocalRunResult) -> str:
    """What `commit pipeline run --local` prints at the end."""
    lines = [f"pipeline {r.status} in {r.wall_s:.0f}s" + (f": {r.error}" if r.error else "")]
    if r.run_dir:
        lines.append(f"task outputs: {r.run_dir}")
    if "steps" in r.train_metrics:
        lines.append(f"trained {r.train_metrics['steps']:.0f} steps")
    lines.append(
        f"MLflow: {r.mlflow_uri}  run {r.mlflow_run_id or '(none)'}"
        + ("  (`mlflow ui` in this directory)" if r.mlflow_uri.startswith("sqlite") else "")
    )
    for b in r.benchmarks:
        head = ", ".join(
            f"{k} {v:.4f}"
            for k, v in b.metrics.items()
            if k in ("accuracy", "mc_accuracy", "exact_match", "chance")
        )
        lines.append(f"  {b.benchmark}: {head}")
        if b.report:
            lines.append(f"    report: {b.report}")
    if r.gate_passed is not None:
        op = ">=" if r.higher_is_better else "<="
        lines.append(
            f"gate {r.gate_metric} = {r.gate_value:.4f} (needs {op} {r.gate_threshold:.4f}): "
            + ("passed" if r.gate_passed else "failed, not registered")
        )
    if r.version:
        lines.append(f"registered: {r.model_name} version {r.version}, alias {r.alias}")
        lines.append(
            f"use it: commit evaluate --model models:/{r.model_name}@{r.alias} --benchmark ..."
        )
    if r.closed_runs:
        lines.append(f"{r.closed_runs} MLflow run(s) marked FAILED by the exit handler")
    return "\n".join(lines)
