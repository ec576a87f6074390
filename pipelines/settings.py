"""Compile-time settings of the pipeline: what Kubernetes needs to know before a run.

Resources, the accelerator, node selector, tolerations, retry and timeouts are fixed
when the pipeline is compiled, for two reasons: kfp-kubernetes takes node selectors and
tolerations as literals, and kfp.local 2.17.3 cannot resolve a pipeline parameter used as
a resource inside a control-flow group (the run dies with "Parent pipeline input argument
'pipelinechannel--...' not found"), so runtime resources would break local runs. What a
user picks per run (recipe, method, benchmarks, gate) are pipeline parameters instead.

Defaults fit a GPU node pool tainted ``nvidia.com/gpu:NoSchedule``; load another set with
``commit pipeline compile --settings my.yaml`` (every key optional, unknown keys rejected):

.. code-block:: yaml

    accelerator: {type: null}            # CPU-only cluster (kind)
    node_selector: {}
    tolerations: []
    train: {cpu_request: "2", memory_request: 8Gi, memory_limit: 12Gi}
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from commit_train.errors import ConfigError
from pipelines.platform import DEFAULT_IMAGE

_CPU = re.compile(r"^([0-9]+(\.[0-9]+)?|[0-9]+m)$")
_MEMORY = re.compile(r"^[0-9]+(\.[0-9]+)?([EPTGMK]i?|[eE][0-9]+)?$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Resources(_Section):
    """Kubernetes requests/limits of one task (quantities as strings: "2", "500m", "8Gi")."""

    cpu_request: str | None = None
    cpu_limit: str | None = None
    memory_request: str | None = None
    memory_limit: str | None = None

    @field_validator("cpu_request", "cpu_limit")
    @classmethod
    def _cpu(cls, v: str | None) -> str | None:
        if v is not None and not _CPU.match(str(v)):
            raise ValueError(f"{v!r} is not a CPU quantity (e.g. '2', '0.5', '500m')")
        return None if v is None else str(v)

    @field_validator("memory_request", "memory_limit")
    @classmethod
    def _memory(cls, v: str | None) -> str | None:
        if v is not None and not _MEMORY.match(str(v)):
            raise ValueError(f"{v!r} is not a memory quantity (e.g. '8Gi', '512Mi')")
        return None if v is None else str(v)


class Accelerator(_Section):
    type: str | None = Field("nvidia.com/gpu", description="resource name; null: no GPU")
    count: int = Field(1, ge=1, description="per task")
    on_evaluate: bool = Field(True, description="evaluate tasks get one too (generation)")


class Toleration(_Section):
    key: str | None = None
    operator: Literal["Exists", "Equal"] = "Exists"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = Field(None, ge=0)


class Retry(_Section):
    """``set_retry`` of the train task (a preempted or OOM-killed pod resumes from its
    checkpoint) and of the other tasks (transient S3/MLflow errors)."""

    train: int = Field(3, ge=0, le=20)
    others: int = Field(2, ge=0, le=20)
    backoff_s: int = Field(30, ge=0)
    backoff_factor: float = Field(2.0, ge=1)
    backoff_max_s: int = Field(600, ge=0)


class PipelineSettings(_Section):
    image: str = Field(DEFAULT_IMAGE, description="the component image (pin a tag or digest)")
    train: Resources = Field(
        default_factory=lambda: Resources(
            cpu_request="4", cpu_limit="8", memory_request="16Gi", memory_limit="32Gi"
        )
    )
    evaluate: Resources = Field(
        default_factory=lambda: Resources(
            cpu_request="2", cpu_limit="4", memory_request="8Gi", memory_limit="16Gi"
        )
    )
    light: Resources = Field(
        default_factory=lambda: Resources(
            cpu_request="1", cpu_limit="2", memory_request="2Gi", memory_limit="4Gi"
        ),
        description="stage, gate, register and the exit handler",
    )
    accelerator: Accelerator = Field(default_factory=Accelerator)
    node_selector: dict[str, str] = Field(
        default_factory=lambda: {"nvidia.com/gpu.present": "true"},
        description="for accelerator tasks",
    )
    tolerations: list[Toleration] = Field(
        default_factory=lambda: [
            Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")
        ],
        description="for accelerator tasks",
    )
    retry: Retry = Field(default_factory=Retry)
    train_timeout_s: int = Field(24 * 3600, ge=60)
    timeout_s: int = Field(2 * 3600, ge=60, description="every other task")

    @field_validator("image")
    @classmethod
    def _pinned(cls, v: str) -> str:
        last = v.rsplit("/", 1)[-1]
        if "@" not in v and (":" not in last or last.endswith(":latest")):
            raise ValueError(f"image {v!r} must carry a version tag or digest (not :latest)")
        return v


def load_settings(path: str | Path | None = None, image: str | None = None) -> PipelineSettings:
    """Defaults, or the YAML file at ``path`` over them; ``image`` (e.g. $COMMIT_IMAGE)
    wins over both. Raises :class:`ConfigError` naming the bad key."""
    raw: dict = {}
    source = "pipeline settings"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise ConfigError(f"pipeline settings file {path} does not exist")
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"pipeline settings {path} are not valid YAML: {e}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"pipeline settings {path} must be a mapping")
    if image:
        raw = {**raw, "image": image}
    try:
        return PipelineSettings.model_validate(raw)
    except ValidationError as e:
        lines = [
            f"  {'.'.join(str(p) for p in err['loc']) or '(top level)'}: "
            + ("unknown key" if err["type"] == "extra_forbidden" else err["msg"])
            for err in e.errors()
        ]
        raise ConfigError(f"invalid pipeline settings in {source}:\n" + "\n".join(lines)) from None
