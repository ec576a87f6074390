"""The KFP pipeline: stage -> train -> evaluate (per benchmark) -> gate -> register.

::

    exit handler: close_runs (a failed pipeline's MLflow runs end FAILED)
    └─ stage_data(data_source) ─► train(recipe, overrides, method) ─► ParallelFor(benchmarks):
                                                                         evaluate(benchmark)
                                   ─► check_gate(gate_metric >= gate_threshold)
                                   ─► If passed: register(model_name)  (champion only if better)

Runtime choices are pipeline parameters; what Kubernetes must know up front comes from
:class:`pipelines.settings.PipelineSettings` (see there why). Every task gets the
endpoints from the ConfigMap and the credentials from Secrets as env vars (names in
:mod:`pipelines.platform`; never parameters), runs as the image's numeric non-root user,
and has caching off: its inputs (a recipe naming ``builtin:``/``s3://`` data, a registry
whose champion moves) are not captured by KFP's cache key.
"""

import json
from pathlib import Path
from typing import Any

from kfp import dsl, kubernetes

from commit_train.config import load_yaml
from components.close_runs import close_runs
from components.evaluate import evaluate
from components.register import check_gate, register
from components.stage_data import stage_data
from components.train import train
from pipelines import platform
from pipelines.settings import PipelineSettings, Resources

PIPELINE_NAME = "commit-pipeline"
ROOT = Path(__file__).resolve().parents[1]
#: the recipe the compiled pipeline carries as its default ``recipe`` parameter
DEFAULT_RECIPE = ROOT / "recipes" / "builtin_vision.yaml"
COMPILED = Path(__file__).resolve().parent / "compiled" / "commit_pipeline.yaml"


def recipe_parameter(text: str) -> str:
    """The recipe as the one-line JSON text the ``recipe`` parameter carries.

    JSON is YAML, so the train step reads it like the file; one line, because the
    compiler copies parameter defaults into the YAML header comment, and a multi-line
    default there makes the compiled file unparseable (kfp 2.17.3).
    """
    raw = load_yaml(text)  # YAML 1.2 booleans, as `commit train` reads the file
    return json.dumps(raw, ensure_ascii=False, separators=(",", ":"))


def _env(task: dsl.PipelineTask) -> None:
    """Endpoints (ConfigMap) and credentials (Secrets) as env vars of the same names."""
    kubernetes.use_config_map_as_env(
        task, platform.CONFIG_MAP, {k: k for k in platform.CONFIG_KEYS}
    )
    kubernetes.use_secret_as_env(task, platform.S3_SECRET, {k: k for k in platform.S3_SECRET_KEYS})
    kubernetes.use_secret_as_env(
        task, platform.MLFLOW_SECRET, {k: k for k in platform.MLFLOW_SECRET_KEYS}, optional=True
    )


def _resources(task: dsl.PipelineTask, r: Resources) -> None:
    if r.cpu_request:
        task.set_cpu_request(r.cpu_request)
    if r.cpu_limit:
        task.set_cpu_limit(r.cpu_limit)
    if r.memory_request:
        task.set_memory_request(r.memory_request)
    if r.memory_limit:
        task.set_memory_limit(r.memory_limit)


def _accelerator(task: dsl.PipelineTask, s: PipelineSettings) -> None:
    if s.accelerator.type is None:
        return
    task.set_accelerator_type(s.accelerator.type).set_accelerator_limit(s.accelerator.count)
    for key, value in sorted(s.node_selector.items()):
        kubernetes.add_node_selector(task, key, value)
    for t in s.tolerations:
        kubernetes.add_toleration(
            task, key=t.key, operator=t.operator, value=t.value, effect=t.effect,
            toleration_seconds=t.toleration_seconds,
        )  # fmt: skip


def _configure(
    task: dsl.PipelineTask,
    s: PipelineSettings,
    resources: Resources,
    retries: int,
    timeout_s: int,
) -> dsl.PipelineTask:
    task.set_caching_options(False)
    if task.container_spec is not None and task.container_spec.image != s.image:
        task.set_container_image(s.image)
    _resources(task, resources)
    _env(task)
    kubernetes.set_security_context(
        task,
        run_as_user=platform.RUN_AS_USER,
        run_as_group=platform.RUN_AS_GROUP,
        run_as_non_root=True,
    )
    kubernetes.set_timeout(task, timeout_s)
    if retries:
        r = s.retry
        task.set_retry(
            retries,
            backoff_duration=f"{r.backoff_s}s",
            backoff_factor=r.backoff_factor,
            backoff_max_duration=f"{r.backoff_max_s}s",
        )
    return task


def build_pipeline(settings: PipelineSettings, recipe_text: str, defaults: dict[str, Any]):
    """The pipeline function for ``settings``; ``recipe_text`` and ``defaults`` (any other
    parameter) become its parameter defaults, which the compiled YAML carries."""
    s = settings
    d = {
        "overrides": [],
        "method": "",
        "data_source": "builtin:vision",
        "benchmarks": ["vision"],
        "eval_split": "test",
        "eval_limit": 0,
        "model_name": "commit-vision",
        "gate_metric": "eval/vision/accuracy",
        "gate_threshold": 0.0,
        "higher_is_better": True,
        "checkpoint_root": platform.CLUSTER_CHECKPOINT_ROOT,
        **defaults,
    }

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="CoMMIT multimodal instruction tuning: stage data, tune, evaluate per "
        "benchmark, register the model when it passes the gate (champion only if better).",
    )
    def commit_pipeline(
        recipe: str = recipe_text,
        overrides: list = d["overrides"],
        method: str = d["method"],
        data_source: str = d["data_source"],
        benchmarks: list = d["benchmarks"],
        eval_split: str = d["eval_split"],
        eval_limit: int = d["eval_limit"],
        model_name: str = d["model_name"],
        gate_metric: str = d["gate_metric"],
        gate_threshold: float = d["gate_threshold"],
        higher_is_better: bool = d["higher_is_better"],
        checkpoint_root: str = d["checkpoint_root"],
    ):
        exit_task = close_runs(pipeline_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER)
        _configure(exit_task, s, s.light, 0, s.timeout_s)
        with dsl.ExitHandler(exit_task, name="run-and-record"):
            staged = stage_data(source=data_source)
            _configure(staged, s, s.light, s.retry.others, s.timeout_s)

            trained = train(
                recipe=recipe,
                overrides=overrides,
                method=method,
                dataset=staged.outputs["dataset"],
                checkpoint_root=checkpoint_root,
                pipeline_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                task_name=dsl.PIPELINE_TASK_NAME_PLACEHOLDER,
            )
            _configure(trained, s, s.train, s.retry.train, s.train_timeout_s)
            _accelerator(trained, s)
            run_id = trained.outputs["mlflow_run_id"]

            with dsl.ParallelFor(benchmarks) as benchmark:
                scored = evaluate(
                    model=trained.outputs["model"],
                    benchmark=benchmark,
                    split=eval_split,
                    limit=eval_limit,
                )
                _configure(scored, s, s.evaluate, s.retry.others, s.timeout_s)
                if s.accelerator.on_evaluate:
                    _accelerator(scored, s)

            gate = check_gate(
                mlflow_run_id=run_id,
                gate_metric=gate_metric,
                gate_threshold=gate_threshold,
                higher_is_better=higher_is_better,
            ).after(scored)
            _configure(gate, s, s.light, s.retry.others, s.timeout_s)
            with dsl.If(gate.outputs["Output"] == True, name="gate-passed"):  # noqa: E712
                registered = register(
                    mlflow_run_id=run_id,
                    model_name=model_name,
                    gate_metric=gate_metric,
                    higher_is_better=higher_is_better,
                )
                _configure(registered, s, s.light, s.retry.others, s.timeout_s)

    return commit_pipeline
