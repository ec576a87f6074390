"""Typed, validated run configuration loaded from YAML recipes.

A recipe is one YAML file with the sections below; command-line overrides are
``dotted.key=value`` strings whose value is parsed as YAML (so ``train.steps=10`` is an int
and ``model.lora.target_modules.llm=[q_proj,v_proj]`` a list). Everything is checked at
load (unknown keys, wrong types, impossible values) so a long run never dies late on a
typo; errors name the key and the file.
"""

from __future__ import annotations

import copy
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from commit_train.errors import ConfigError

Tuning = Literal["freeze", "lora", "full"]
METHODS = (
    "constant",
    "feature_cd",
    "language_cd",
    "alternating_cd",
    "commit_sched",
    "commit_clr",
    "commit",
)


# ---- YAML as recipes mean it ------------------------------------------------------------------
class _RecipeLoader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 booleans: only ``true``/``false``.

    PyYAML follows YAML 1.1, where ``yes``/``no``/``on``/``off``/``y``/``n`` are booleans too,
    so ``train.precision=no`` arrived as ``False`` and a run name ``off`` as a bool. Under
    1.2 (what most other YAML tools read) those are strings, and a field that really is a
    boolean still accepts them (pydantic reads ``"yes"``/``"off"`` as booleans).
    """


_BOOL_TAG = "tag:yaml.org,2002:bool"
_RecipeLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != _BOOL_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_RecipeLoader.add_implicit_resolver(
    _BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def load_yaml(text: str) -> Any:
    """Parse recipe YAML (or an override value) with YAML 1.2 booleans (:class:`_RecipeLoader`).
    Use this, not ``yaml.safe_load``, for anything that becomes a :class:`RunConfig`."""
    return yaml.load(text, Loader=_RecipeLoader)  # noqa: S506 - a SafeLoader subclass


def _takes_bool(annotation: Any) -> bool:
    if annotation is bool or annotation is Any:
        return True
    if typing.get_origin(annotation) in (Union, types.UnionType):
        return any(_takes_bool(a) for a in typing.get_args(annotation))
    return False


class _Section(BaseModel):
    # allow_inf_nan=False: ``train.lr_llm=.inf`` passed validation and the run diverged at
    # step 2; no number of a recipe has a meaning at infinity or NaN.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_other_types(cls, value: Any, info: Any) -> Any:
        """A boolean where a number or a name is expected is a YAML accident, not a value:
        pydantic would turn ``train.steps=true`` into 1 and ``lr=false`` into 0.0."""
        if isinstance(value, bool) and not _takes_bool(
            cls.model_fields[info.field_name].annotation
        ):
            raise ValueError(
                f"got the boolean {str(value).lower()}, which is not a value of this key; "
                "write a number or a name (quote it if YAML reads it as a boolean)"
            )
        return value


class EncoderConfig(_Section):
    """The media encoder of a composite model built from parts."""

    type: Literal["hf", "efficientnet_lite0", "whisper_encoder"] = Field(
        "hf", description="hf: any AutoModel vision/audio encoder dir or id; or a wrapper"
    )
    path: str | None = Field(None, description="local dir or HF id (hf, whisper_encoder)")
    image_size: int = Field(112, ge=16, le=1024, description="input side in pixels (image)")
    feature_layer: int = Field(-1, description="hidden layer whose output is used (hf)")
    drop_cls: bool = Field(False, description="drop the first (CLS) token (hf ViT/CLIP)")


class ProjectorConfig(_Section):
    type: Literal["mlp", "linear"] = "mlp"
    hidden_size: int | None = Field(None, ge=1, description="MLP width; default = LLM width")
    num_layers: int = Field(2, ge=1, le=8)
    activation: Literal["gelu", "relu", "silu"] = "gelu"
    downsample: int = Field(1, ge=1, le=64, description="concatenate k adjacent tokens")
    input_norm: bool = Field(True, description="LayerNorm on encoder features first")


class LoraConfig(_Section):
    r: int = Field(16, ge=1, le=1024)
    alpha: float = Field(32.0, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: dict[Literal["encoder", "llm"], list[str]] = Field(
        default_factory=lambda: {
            "encoder": ["q_proj", "k_proj", "v_proj", "query", "key", "value"],
            "llm": ["q_proj", "k_proj", "v_proj", "o_proj"],
        }
    )


class TuningConfig(_Section):
    encoder: Tuning = "full"
    projector: Literal["freeze", "full"] = "full"
    llm: Tuning = "lora"


class ModelConfig(_Section):
    """Either ``path`` (a saved model dir or HF id) or the parts of a composite model."""

    family: Literal["auto", "composite", "llava", "blip2", "qwen2_audio"] = "auto"
    path: str | None = Field(None, description="saved model dir or HF id")
    modality: Literal["image", "audio"] = "image"
    encoder: EncoderConfig | None = None
    llm: str | None = Field(None, description="causal LM dir or HF id (composite)")
    projector: ProjectorConfig = Field(default_factory=ProjectorConfig)
    tuning: TuningConfig = Field(default_factory=TuningConfig)
    lora: LoraConfig = Field(default_factory=LoraConfig)
    projector_side: Literal["encoder", "llm"] = "encoder"
    side_prefixes: dict[Literal["encoder", "projector", "llm"], list[str]] | None = Field(
        None, description="parameter-name prefixes for an architecture we do not know"
    )
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"

    @model_validator(mode="after")
    def _source(self) -> ModelConfig:
        if self.path is None and (self.encoder is None or self.llm is None):
            raise ValueError("set model.path, or both model.encoder and model.llm")
        if self.path is not None and (self.encoder is not None or self.llm is not None):
            raise ValueError("model.path and model.encoder/model.llm are exclusive")
        return self


class DataConfig(_Section):
    train: str = Field(..., description="canonical JSONL file, or builtin:<name>")
    val: str | None = Field(None, description="JSONL for validation loss")
    root: str | None = Field(None, description="media root; default: the JSONL's folder")
    max_length: int = Field(256, ge=8, le=32768, description="tokens incl. media tokens")
    skip_bad: bool = Field(False, description="skip and count bad records instead of failing")
    system_prompt: str | None = None
    max_train_records: int | None = Field(None, ge=1)
    max_val_records: int | None = Field(None, ge=1)


class TrainConfig(_Section):
    steps: int = Field(200, ge=1, description="optimizer steps")
    batch_size: int = Field(8, ge=1, description="per process, per micro-batch")
    grad_accum: int = Field(1, ge=1)
    lr_encoder: float = Field(1e-4, ge=0)
    lr_llm: float = Field(2e-4, ge=0)
    lr_projector: float | None = Field(
        None,
        gt=0,
        description="base LR of the projector (LLaVA's mm_projector_lr); None = its side's LR. "
        "It follows its side's warm-up, decay and CoMMIT multiplier.",
    )
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = Field(10, ge=0)
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    min_lr_ratio: float = Field(0.0, ge=0, le=1)
    max_grad_norm: float | None = Field(1.0, gt=0)
    precision: Literal["auto", "fp32", "bf16", "fp16", "no"] = Field(
        "auto", description="auto: bf16 on a GPU that has it, else fp32; 'no' = fp32 (old name)"
    )
    eval_every: int = Field(50, ge=0, description="steps between val losses; 0 = end only")
    eval_batches: int | None = Field(None, ge=1)
    save_every: int = Field(50, ge=0, description="steps between checkpoints; 0 = end only")
    keep_checkpoints: int = Field(2, ge=1)
    log_every: int = Field(1, ge=1)
    output_dir: str = "runs/default"

    @field_validator("precision")
    @classmethod
    def _precision_name(cls, value: str) -> str:
        # "no" is accelerate's name for full precision, kept so older recipes still load;
        # fp32 says what it means and is not a YAML 1.1 boolean.
        return "fp32" if value == "no" else value

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if not all(0 <= b < 1 for b in self.betas):
            raise ValueError("train.betas must lie in [0, 1)")
        return self


#: the coordinated scheduler's update rules (docs/METHOD.md): ``robust`` (default),
#: ``slow_dominant`` (same decisions, only ever slows the dominant side) and
#: ``proportional`` (the first rule: every update follows the window mean)
RULES = ("robust", "slow_dominant", "proportional")
#: per-rule defaults of the settings left unset (``None``) in a recipe
RULE_DEFAULTS = {
    "robust": {"gain": 0.25, "r_min": 0.1, "r_max": 10.0},
    "slow_dominant": {"gain": 0.25, "r_min": 0.1, "r_max": 10.0},
    "proportional": {"gain": 1.0, "r_min": 0.01, "r_max": 100.0},
}


class BalanceConfig(_Section):
    """κ probe, coordinated scheduler and aux loss (METHOD.md §2-§4, docs/METHOD.md)."""

    probe_every: int = Field(10, ge=1)
    # measured noise vs cost (BENCHMARKS.md, "Probe noise vs cost"): size 1 every 10 steps
    # costs 2.7% and is no noisier per probe than size 4 or 8
    probe_size: int = Field(1, ge=1)
    epsilon: float = Field(1e-8, gt=0)
    signal: Literal["share", "kappa"] = "share"
    rule: Literal[RULES] = Field(  # type: ignore[valid-type]
        "robust", description="scheduler update rule: robust | slow_dominant | proportional"
    )
    update_every: int = Field(50, ge=1)
    window: int = Field(
        5, ge=1, description="proportional rule: the last N probes averaged into the signal"
    )
    min_probes: int = Field(
        3, ge=2, description="robust rules: valid probes since the last update needed to move r"
    )
    z: float = Field(2.0, ge=0, description="robust rules: dead zone in standard errors")
    std_floor: float = Field(
        0.1, gt=0, lt=1, description="robust rules: floor on the per-probe signal std"
    )
    freeze_below: float = Field(
        0.25, ge=0, lt=1, description="robust rules: r frozen once the LR factor falls below"
    )
    # replay of the cached x10 runs (docs/METHOD.md): at the first guarded update the value
    # was >= 0.62 in the 6 runs that ended well and <= 0.50 in the 4 that degraded
    guard_ratio: float = Field(
        0.6,
        ge=0,
        lt=1,
        description="robust rules: the degradation guard fires while the encoder's "
        "normalised grad norm over the LLM's is below this fraction of its early value "
        "(0 = off)",
    )
    guard_lower: float = Field(
        0.5,
        gt=0,
        le=1,
        description="robust rules: factor on r at each update while the guard fires "
        "(1 = only block raising the encoder side)",
    )
    s_target: float = Field(0.5, gt=0, lt=1)
    gain: float | None = Field(None, gt=0, description="None = the rule's default")
    r_min: float | None = Field(None, gt=0, description="None = the rule's default")
    r_max: float | None = Field(None, gt=0, description="None = the rule's default")
    aux: str = "self_distill"
    aux_weight: float = Field(0.1, ge=0, description="λ")
    aux_temperature: float = Field(0.5, gt=0, description="τ")
    aux_weighting: Literal["deviation", "excess"] = Field(
        "deviation",
        description="deviation: λ·|s̄ − s_target|/s_target (METHOD.md §4); excess: only the "
        "part of the deviation beyond the robust rule's dead zone (z standard errors), 0 "
        "until the first update; robust rules only",
    )
    cd_period: int = Field(10, ge=1)

    @field_validator("aux")
    @classmethod
    def _known_aux(cls, name: str) -> str:
        from commit_train.losses import known_aux  # lazy: the registry lives with torch code

        if name not in known_aux():
            raise ValueError(f"unknown auxiliary loss {name!r}; known: {', '.join(known_aux())}")
        return name

    @model_validator(mode="after")
    def _check(self) -> BalanceConfig:
        if self.lr_bounds[0] > self.lr_bounds[1]:
            lo, hi = self.lr_bounds
            raise ValueError(f"balance.r_min ({lo}) > balance.r_max ({hi})")
        if self.aux_weighting == "excess" and self.rule == "proportional":
            raise ValueError(
                "balance.aux_weighting: excess needs a standard error of s̄, which only the "
                "robust rules (balance.rule: robust | slow_dominant) estimate; use "
                "aux_weighting: deviation with balance.rule: proportional"
            )
        return self

    def _resolved(self, name: str) -> float:
        value = getattr(self, name)
        return float(RULE_DEFAULTS[self.rule][name] if value is None else value)

    @property
    def step_gain(self) -> float:
        """``gain``, or the rule's default (robust rules 0.25, proportional 1)."""
        return self._resolved("gain")

    @property
    def lr_bounds(self) -> tuple[float, float]:
        """(r_min, r_max), each the recipe's value or the rule's default."""
        return self._resolved("r_min"), self._resolved("r_max")

    def schedule_problems(self) -> list[str]:
        """Why probe_every/update_every/window cannot drive this rule (empty: they can).

        Only a scheduled method needs them to agree, so the method's set-up raises on these
        (a baseline that probes rarely, or never, is fine).
        """
        per_update = self.update_every // self.probe_every
        if self.rule == "proportional" and self.window > per_update:
            return [
                f"balance.window ({self.window}) > balance.update_every ({self.update_every}) "
                f"// balance.probe_every ({self.probe_every}) = {per_update}: the window "
                "would reach back past the previous update and reuse probes it already acted "
                "on; lower the window or probe more often"
            ]
        if self.rule != "proportional" and per_update < self.min_probes:
            return [
                f"balance.update_every ({self.update_every}) // balance.probe_every "
                f"({self.probe_every}) = {per_update} probes per update, fewer than "
                f"balance.min_probes ({self.min_probes}): the {self.rule} rule would never "
                "move the LR ratio; raise update_every or probe more often"
            ]
        return []


class TrackingConfig(_Section):
    uri: str | None = Field(
        None, description="MLflow URI; default: $MLFLOW_TRACKING_URI or local sqlite"
    )
    experiment: str = "commit"
    run_name: str | None = None
    enabled: bool = True
    log_model: bool = True
    flush_every_s: float = Field(2.0, gt=0)
    system_metrics: bool = Field(
        False, description="also log system/* (CPU, memory, disk, network, GPU) metrics"
    )


class RunConfig(_Section):
    method: Literal[METHODS] = "constant"  # type: ignore[valid-type]
    seed: int = 0
    model: ModelConfig
    data: DataConfig
    train: TrainConfig = Field(default_factory=TrainConfig)
    balance: BalanceConfig = Field(default_factory=BalanceConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    @model_validator(mode="after")
    def _method_fits_tuning(self) -> RunConfig:
        t = self.model.tuning
        enc_trainable = t.encoder != "freeze" or (
            t.projector != "freeze" and self.model.projector_side == "encoder"
        )
        llm_trainable = t.llm != "freeze" or (
            t.projector != "freeze" and self.model.projector_side == "llm"
        )
        if self.method in ("alternating_cd", "commit_sched", "commit_clr", "commit") and not (
            enc_trainable and llm_trainable
        ):
            raise ValueError(
                f"method {self.method!r} needs both sides trainable, but the "
                f"{'encoder' if not enc_trainable else 'LLM'} side is frozen by model.tuning"
            )
        return self

    def to_flat_dict(self) -> dict[str, Any]:
        """``{"train.lr_llm": 2e-4, ...}`` for MLflow params."""
        return flatten(self.model_dump(mode="json"))


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides to a raw recipe dict (values parsed as YAML 1.2:
    ``no``/``off`` stay strings, see :class:`_RecipeLoader`)."""
    raw = copy.deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form dotted.key=value")
        key, _, value = item.partition("=")
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"override {item!r} has an empty key segment")
        node = raw
        for p in parts[:-1]:
            if node.get(p) is None:
                node[p] = {}
            if not isinstance(node[p], dict):
                raise ConfigError(f"override {item!r}: {p!r} is not a section")
            node = node[p]
        try:
            node[parts[-1]] = load_yaml(value) if value != "" else None
        except yaml.YAMLError as e:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({e})") from e
    return raw


def _format_errors(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see recipes/ for the known keys)"
        elif e["type"] == "missing":
            msg = "required key is missing"
        else:
            msg = e["msg"]
            if "input" in e and e["type"] not in ("value_error", "assertion_error"):
                msg += f" (got {e['input']!r})"
        lines.append(f"  {loc}: {msg}")
    return f"invalid configuration in {source}:\n" + "\n".join(lines)


def validate(raw: dict[str, Any], source: str = "<dict>") -> RunConfig:
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_format_errors(e, source)) from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Load a YAML recipe, apply overrides, validate. Raises :class:`ConfigError`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"recipe file {path} does not exist (see recipes/ for shipped recipes)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"recipe {path} is not valid YAML: {e}") from None
    return load_config_text(text, overrides, source=str(path))


def load_config_text(
    text: str, overrides: list[str] | None = None, source: str = "<recipe text>"
) -> RunConfig:
    """:func:`load_config` for a recipe held as text (a pipeline parameter carries the
    recipe itself, so a pod needs no copy of the file); ``source`` names it in errors."""
    try:
        raw = load_yaml(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"recipe {source} is not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(
            f"recipe {source} must be a mapping of sections, got {type(raw).__name__}"
        )
    shown = source + (f" (with overrides {' '.join(overrides)})" if overrides else "")
    raw = apply_overrides(raw, overrides or [])
    return validate(raw, shown)
