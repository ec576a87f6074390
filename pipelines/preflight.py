"""Checks before the first task starts: a bad input fails in seconds, naming what to fix.

Compile, ``run --local`` and submit call :func:`check_inputs`; ``run --local`` also calls
:func:`check_local_environment` (MLflow reachable, S3 credentials for ``s3://`` roots, a
writable pipeline root), the things a cluster provides through its ConfigMap and Secrets.
The recipe is validated with the same config classes as ``commit train``
(:func:`commit_train.pipeline_steps.pipeline_config`), so a typo never reaches a pod.
"""

import os
import tempfile
from pathlib import Path

from commit_train import storage
from commit_train.config import METHODS, RunConfig
from commit_train.errors import CommitError, ConfigError
from commit_train.pipeline_steps import pipeline_config

#: built-in benchmarks and the modality of their media
BUILTIN_MODALITY = {"vision": "image", "audio": "audio"}


def check_inputs(
    recipe: str,
    overrides: list[str],
    method: str,
    benchmarks: list[str],
    gate_metric: str,
    data_source: str | None,
    recipe_source: str = "recipe",
) -> RunConfig:
    """Validate the run's parameters together; returns the resolved config.
    ``data_source`` None: the recipe's ``data.train``, which the pipeline stages."""
    if method and method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
    cfg = pipeline_config(recipe, overrides, method, source=recipe_source)
    if not benchmarks:
        raise ConfigError("no benchmark to evaluate on: pass --benchmarks vision (or others)")
    from evaluation.benchmarks import known_benchmarks

    known = known_benchmarks()
    for b in benchmarks:
        name = b.removeprefix("builtin:")
        if name.endswith(".jsonl"):
            if not Path(name).is_file():
                raise ConfigError(f"benchmark file {name} does not exist")
            continue
        if name not in known:
            raise ConfigError(
                f"unknown benchmark {b!r}; known: {', '.join(known)}, or a .jsonl path"
            )
        modality = BUILTIN_MODALITY.get(name)
        if modality is not None and modality != cfg.model.modality:
            raise ConfigError(
                f"benchmark {b!r} is {modality} but the recipe ({recipe_source}) trains an "
                f"{cfg.model.modality} model; use a recipe of that modality, or run one "
                "pipeline per modality"
            )
    names = {
        Path(b).stem if b.endswith(".jsonl") else b.removeprefix("builtin:") for b in benchmarks
    }
    parts = gate_metric.split("/")
    if gate_metric and (len(parts) < 3 or parts[0] != "eval" or parts[1] not in names):
        raise ConfigError(
            f"gate metric {gate_metric!r} must be eval/<benchmark>/<metric> for one of the "
            f"requested benchmarks ({', '.join(sorted(names))}), e.g. "
            f"eval/{sorted(names)[0]}/accuracy"
        )
    _check_source(data_source or cfg.data.train)
    return cfg


def _check_source(source: str) -> None:
    if source.startswith("builtin:"):
        name = source[len("builtin:") :].split("?", 1)[0]
        if name not in BUILTIN_MODALITY:
            raise ConfigError(
                f"unknown built-in data source {source!r}; known: "
                + ", ".join(f"builtin:{n}" for n in BUILTIN_MODALITY)
            )
        return
    if storage.is_s3(source):
        storage.split_s3(source)
        return
    fmt, sep, rest = source.partition(":")
    path = rest.split("?", 1)[0] if sep and len(fmt) > 1 else source
    if not Path(path).exists():
        raise ConfigError(f"data source {source!r}: {path} does not exist")


def check_local_environment(tracking_uri: str, roots: dict[str, str]) -> None:
    """MLflow answers, S3 credentials exist for ``s3://`` roots, local roots are writable.

    ``roots``: what each location is for (``{"pipeline root": path, ...}``), for the
    message."""
    from commit_train.registry import check_server
    from commit_train.tracking import resolve_tracking_uri

    check_server(resolve_tracking_uri(tracking_uri))
    for what, root in roots.items():
        if storage.is_s3(root):
            storage.split_s3(root)
            _check_s3_credentials(what, root)
        else:
            _check_writable(what, Path(root))


def _check_s3_credentials(what: str, root: str) -> None:
    import boto3

    if boto3.Session().get_credentials() is None:
        raise CommitError(
            f"the {what} {root} is on S3 but no S3 credentials were found: set "
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), and "
            "AWS_ENDPOINT_URL for a non-AWS store"
        )


def _check_writable(what: str, root: Path) -> None:
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=root, prefix=".write-test-"):
            pass
    except OSError as e:
        raise CommitError(
            f"the {what} {root} is not writable ({e.strerror or e}); pass a folder you can write to"
        ) from None
    if not os.access(root, os.W_OK | os.X_OK):
        raise CommitError(f"the {what} {root} is not writable; pass a folder you can write to")
