"""The model registry: promote a run's tuned model, and evaluate ``models:/name@alias``.

``commit register --run <id> --name <model>`` turns the ``model/`` artifact directory a
training run uploaded (HF-format safetensors, processor/tokenizer, ``commit_recipe.yaml``)
into a new version of a registered model. Why the aliases work the way they do:

* every registration gets ``challenger``: "the newest candidate", for a canary or a
  side-by-side evaluation;
* ``champion`` (what serving and ``commit evaluate --model models:/<name>@champion``
  pick up) moves only when ``--gate eval/<benchmark>/<metric>`` strictly beats the current
  champion's value, or when there is no champion yet. A worse model never replaces a
  better one by being registered later.

Registration is idempotent: pipelines retry steps, and a retried ``register`` finds the
version already created for the same run and source instead of adding a duplicate.

The version's source is the run's ``model/`` directory itself (not a copy), so the
registry never holds weights the run does not; an evaluation report logged to the run
under ``eval/`` is copied into ``model/eval/`` first so the version carries it.

All errors a user can cause (typo in the tracking URI, server down, unknown model or
alias, a gate metric the run never logged, missing or rejected S3 credentials) become a
:class:`~commit_train.errors.CommitError` that says what to set; credentials are masked
in every message (:mod:`commit_train.redaction`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from commit_train.errors import CommitError, ModelLoadError
from commit_train.redaction import redact_text
from commit_train.tracking import resolve_tracking_uri

log = logging.getLogger(__name__)

CHALLENGER = "challenger"
CHAMPION = "champion"
MODEL_ARTIFACT = "model"
_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))/?$")
_S3_AUTH_CODES = (
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AccessDenied",
    "InvalidToken",
    "ExpiredToken",
    "InvalidClientTokenId",
)
_S3_HELP = (
    "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) to credentials for the "
    "artifact bucket, and MLFLOW_S3_ENDPOINT_URL when the store is not AWS S3 (MinIO, Ceph)"
)


# ---- connecting, and errors that say what to fix --------------------------------------------
def _chain(e: BaseException) -> list[BaseException]:
    out, seen = [], set()
    while e is not None and id(e) not in seen:
        out.append(e)
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return out


def tracking_error(e: BaseException, uri: str, doing: str) -> CommitError:
    """Translate a failure while ``doing`` something at ``uri`` into a user-facing error."""
    shown = redact_text(uri)
    chain = _chain(e)
    names = {type(x).__name__ for x in chain}
    text = redact_text(" ".join(str(x) for x in chain))
    if names & {"NoCredentialsError", "PartialCredentialsError"} or (
        "Unable to locate credentials" in text
    ):
        return CommitError(f"{doing}: no S3 credentials were found; {_S3_HELP}")
    code = next((c for c in _S3_AUTH_CODES if c in text), None)
    if code is not None:
        return CommitError(f"{doing}: the S3 store rejected the credentials ({code}); {_S3_HELP}")
    if "EndpointConnectionError" in names or "Could not connect to the endpoint" in text:
        endpoint = os.environ.get("MLFLOW_S3_ENDPOINT_URL", "(AWS default)")
        return CommitError(
            f"{doing}: cannot reach the S3 endpoint {redact_text(endpoint)}; check "
            "MLFLOW_S3_ENDPOINT_URL"
        )
    if names & {"ConnectionError", "MaxRetryError", "NewConnectionError", "ConnectTimeout"}:
        return CommitError(
            f"{doing}: cannot reach the MLflow tracking server at {shown}; check "
            "MLFLOW_TRACKING_URI / --tracking-uri and that the server is running"
        )
    first = text.splitlines()[0][:400] if text else type(e).__name__
    return CommitError(f"{doing} at {shown} failed: {first}")


def check_server(uri: str, timeout_s: float = 5.0) -> None:
    """For an http(s) tracking URI, fail fast and clearly if ``/health`` does not answer.

    The MLflow client retries a refused connection for minutes (its HTTP backoff is sized
    for rate limits); a CLI user who mistyped the port deserves an answer in seconds.
    """
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https"):
        return
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    health = f"{parts.scheme}://{netloc}{parts.path.rstrip('/')}/health"
    try:
        with urllib.request.urlopen(health, timeout=timeout_s) as r:
            if r.status == 200:
                return
            problem = f"HTTP {r.status}"
    except urllib.error.HTTPError as e:
        problem = f"HTTP {e.code}"
    except (OSError, ValueError) as e:
        problem = f"{type(e).__name__}: {getattr(e, 'reason', e)}"
    raise CommitError(
        f"cannot reach the MLflow tracking server at {redact_text(uri)} ({redact_text(problem)}); "
        "check MLFLOW_TRACKING_URI / --tracking-uri (scheme, host, port) and that "
        "`mlflow server` is running"
    )


def connect(tracking_uri: str | None = None) -> tuple[Any, str]:
    """``(MlflowClient, shown_uri)`` for ``tracking_uri`` or the environment, checked."""
    from mlflow.tracking import MlflowClient

    uri = resolve_tracking_uri(tracking_uri)
    check_server(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri), redact_text(uri)


# ---- registering --------------------------------------------------------------------------
@dataclass
class Registration:
    name: str
    version: str
    run_id: str
    source: str
    created: bool  # False when an identical earlier registration was reused
    champion: bool  # True when this version holds the champion alias now
    gate: str | None
    value: float | None
    previous_champion: str | None
    previous_value: float | None


def _gate_value(run: Any, gate: str | None) -> float | None:
    if gate is None:
        return None
    if gate not in run.data.metrics:
        evals = sorted(k for k in run.data.metrics if k.startswith("eval/"))
        raise CommitError(
            f"run {run.info.run_id} has no metric {gate!r} to gate on; its eval/ metrics: "
            f"{', '.join(evals) or '(none: run `commit evaluate --run-id ' + run.info.run_id + '`)'}"
        )
    return float(run.data.metrics[gate])


def _attach_eval_report(client: Any, run_id: str) -> bool:
    """Copy the run's ``eval/`` artifacts into ``model/eval/`` (once), so the version has them."""
    if not client.list_artifacts(run_id, "eval"):
        return False
    if client.list_artifacts(run_id, f"{MODEL_ARTIFACT}/eval"):
        return True
    with tempfile.TemporaryDirectory() as tmp:
        local = client.download_artifacts(run_id, "eval", tmp)
        client.log_artifacts(run_id, local, f"{MODEL_ARTIFACT}/eval")
    return True


def _existing_version(client: Any, name: str, run_id: str, source: str) -> Any | None:
    for v in client.search_model_versions(f"name = '{name}'"):
        if v.run_id == run_id and v.source.rstrip("/") == source.rstrip("/"):
            return v
    return None


def register_run_model(
    run_id: str,
    name: str,
    gate: str | None = None,
    higher_is_better: bool = True,
    tracking_uri: str | None = None,
) -> Registration:
    """Register run ``run_id``'s ``model/`` as a version of ``name``; move aliases.

    See the module docstring for the alias rules. Raises :class:`CommitError` for anything
    the user can fix.
    """
    from mlflow.exceptions import MlflowException

    client, shown = connect(tracking_uri)
    try:
        run = client.get_run(run_id)
    except MlflowException as e:
        if "RESOURCE_DOES_NOT_EXIST" in str(e.error_code):
            raise CommitError(f"no MLflow run {run_id!r} at {shown}") from None
        raise tracking_error(e, shown, f"reading run {run_id}") from None
    except Exception as e:
        raise tracking_error(e, shown, f"reading run {run_id}") from None
    value = _gate_value(run, gate)
    doing = f"registering run {run_id} as {name!r}"
    try:
        if not client.list_artifacts(run_id, MODEL_ARTIFACT):
            raise CommitError(
                f"run {run_id} has no {MODEL_ARTIFACT}/ artifact to register (was it trained "
                "with tracking.log_model=false, or did it fail before the end?)"
            )
        _attach_eval_report(client, run_id)
        source = f"{run.info.artifact_uri.rstrip('/')}/{MODEL_ARTIFACT}"
        try:
            client.create_registered_model(
                name, description="CoMMIT fine-tuned multimodal LLM (HF-format directory)"
            )
        except MlflowException as e:
            if "ALREADY_EXISTS" not in str(e.error_code):
                raise
        version = _existing_version(client, name, run_id, source)
        created = version is None
        if created:
            tags = {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")}
            if gate is not None:
                tags[gate] = str(value)
            version = client.create_model_version(
                name, source, run_id=run_id, tags=redact_tags(tags), await_creation_for=60
            )
        client.set_registered_model_alias(name, CHALLENGER, version.version)
        prev, prev_value, promote = _champion_decision(
            client, name, gate, value, higher_is_better, version.version
        )
        if promote:
            client.set_registered_model_alias(name, CHAMPION, version.version)
    except CommitError:
        raise
    except Exception as e:
        raise tracking_error(e, shown, doing) from None
    holds = promote or (prev is not None and prev == str(version.version))
    log.info(
        "%s: version %s (%s), challenger; champion %s",
        name,
        version.version,
        "new" if created else "existing",
        "moved here" if promote else f"stays at version {prev}",
    )
    return Registration(
        name=name,
        version=str(version.version),
        run_id=run_id,
        source=source,
        created=created,
        champion=holds,
        gate=gate,
        value=value,
        previous_champion=prev,
        previous_value=prev_value,
    )


def redact_tags(tags: dict[str, str]) -> dict[str, str]:
    from commit_train.redaction import redact_params

    return redact_params(tags, limit=5000)


def _champion_decision(
    client: Any,
    name: str,
    gate: str | None,
    value: float | None,
    higher_is_better: bool,
    candidate: str,
) -> tuple[str | None, float | None, bool]:
    """``(current champion version, its gate value, promote?)``."""
    from mlflow.exceptions import MlflowException

    try:
        current = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None, None, True  # no champion yet: the first model is the champion
    prev = str(current.version)
    if prev == str(candidate) or gate is None:
        return prev, None, False
    prev_value = client.get_run(current.run_id).data.metrics.get(gate) if current.run_id else None
    if prev_value is None:
        log.warning("champion %s v%s has no %s; the gated candidate replaces it", name, prev, gate)
        return prev, None, True
    better = value > prev_value if higher_is_better else value < prev_value
    return prev, float(prev_value), better


# ---- resolving models:/ URIs for evaluation ----------------------------------------------
def is_registry_uri(model: str | Path) -> bool:
    return isinstance(model, str) and model.startswith(("models:/", "runs:/"))


def _cache_dir() -> Path:
    from commit_train.data.builtin import cache_root

    return cache_root() / "registry"


def resolve_model_uri(
    model: str | Path, tracking_uri: str | None = None, cache_dir: Path | None = None
) -> Path:
    """A local model directory for ``model``: paths unchanged; ``models:/name@alias``,
    ``models:/name/<version>`` and ``runs:/<id>/model`` downloaded into a cache.

    Registered versions are immutable, so the cache is keyed by server, name and version
    and reused; a ``runs:/`` URI is downloaded each time (a run's artifacts can change).
    """
    if not is_registry_uri(model):
        return Path(model)
    from mlflow.artifacts import download_artifacts

    model = str(model)
    client, shown = connect(tracking_uri)
    uri = resolve_tracking_uri(tracking_uri)
    server_key = hashlib.sha256(redact_text(uri).encode()).hexdigest()[:12]
    root = Path(cache_dir or _cache_dir()) / server_key
    if model.startswith("runs:/"):
        key, source = "runs/" + model[len("runs:/") :].strip("/").replace("/", "_"), model
    else:
        m = _MODELS_URI.match(model)
        if m is None:
            raise CommitError(
                f"model URI {model!r} is not models:/<name>@<alias> or models:/<name>/<version>"
            )
        version = _lookup_version(client, shown, m.group("name"), m.group("alias"), m["version"])
        key, source = f"models/{version.name}/{version.version}", version.source
    dest = root / key
    marker = dest / ".commit_registry.json"
    if marker.is_file() and not model.startswith("runs:/"):
        return dest
    tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=_mkdir(root)))
    try:
        got = Path(download_artifacts(artifact_uri=source, dst_path=str(tmp), tracking_uri=uri))
    except Exception as e:  # MlflowException, botocore errors, connection errors
        shutil.rmtree(tmp, ignore_errors=True)
        raise tracking_error(e, shown, f"downloading {model}") from None
    (got / marker.name).write_text(json.dumps({"uri": model, "source": redact_text(source)}))
    shutil.rmtree(dest, ignore_errors=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    got.rename(dest)
    shutil.rmtree(tmp, ignore_errors=True)
    log.info("%s -> %s", model, dest)
    return dest


def _mkdir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def _lookup_version(
    client: Any, shown: str, name: str, alias: str | None, version: str | None
) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException as e:
        if "RESOURCE_DOES_NOT_EXIST" not in str(e.error_code):
            raise tracking_error(e, shown, f"looking up model {name!r}") from None
        known = sorted(r.name for r in client.search_registered_models(max_results=100))
        raise ModelLoadError(
            f"no registered model named {name!r} at {shown}; registered: "
            f"{', '.join(known) or '(none)'} (register one with `commit register --run <id> "
            f"--name {name}`)"
        ) from None
    except Exception as e:
        raise tracking_error(e, shown, f"looking up model {name!r}") from None
    try:
        if alias is not None:
            return client.get_model_version_by_alias(name, alias)
        return client.get_model_version(name, version)
    except MlflowException:
        aliases = sorted(client.get_registered_model(name).aliases)
        what = f"alias {alias!r}" if alias is not None else f"version {version}"
        raise ModelLoadError(
            f"registered model {name!r} has no {what}; its aliases: {', '.join(aliases) or '(none)'}"
        ) from None


def trained_system_prompt(model_dir: Path) -> str | None:
    """The ``data.system_prompt`` the model was trained with (from its saved recipe)."""
    import yaml

    from commit_train.modeling import RECIPE_NAME

    recipe = Path(model_dir) / RECIPE_NAME
    if not recipe.is_file():
        return None
    return (yaml.safe_load(recipe.read_text()).get("data") or {}).get("system_prompt")


# ---- CLI ----------------------------------------------------------------------------------
def _cmd_register(args: argparse.Namespace) -> int:
    if args.gate is not None and not args.gate.startswith("eval/"):
        raise CommitError(f"--gate {args.gate!r} must be an eval/<benchmark>/<metric> name")
    r = register_run_model(
        args.run,
        args.name,
        gate=args.gate,
        higher_is_better=args.higher_is_better,
        tracking_uri=args.tracking_uri,
    )
    print(
        f"{r.name} version {r.version} ({'registered' if r.created else 'already registered'}) "
        f"from run {r.run_id}\nalias {CHALLENGER}: version {r.version}"
    )
    if r.champion:
        print(f"alias {CHAMPION}: version {r.version}" + _gate_note(r))
    else:
        print(f"alias {CHAMPION}: stays at version {r.previous_champion}" + _gate_note(r))
    print(f"evaluate with: commit evaluate --model models:/{r.name}@{CHAMPION} --benchmark ...")
    return 0


def _gate_note(r: Registration) -> str:
    if r.gate is None:
        return "" if r.previous_champion is None else " (no --gate: champion only set once)"
    prev = "none" if r.previous_value is None else f"{r.previous_value:.4f}"
    return f" ({r.gate}: {r.value:.4f} vs champion {prev})"


def register(subparsers: Any) -> None:
    """Add ``commit register``."""
    p = subparsers.add_parser(
        "register",
        help="register a run's model in the MLflow model registry",
        description="Register the model/ directory of a training run as a new version of "
        "--name, give it the alias 'challenger', and move 'champion' to it when --gate "
        "beats the current champion (or there is none). Re-running with the same run "
        "reuses its version. Reads $MLFLOW_TRACKING_URI unless --tracking-uri.\n\n"
        "example:\n  commit register --run 0123abcd... --name commit-vision "
        "--gate eval/vision/accuracy",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--run", required=True, help="MLflow run id of the training run")
    p.add_argument("--name", required=True, help="registered model name")
    p.add_argument("--gate", help="eval/<benchmark>/<metric> deciding champion promotion")
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--higher-is-better",
        dest="higher_is_better",
        action="store_true",
        default=True,
        help="the gate metric is better when larger (default; accuracy, BLEU)",
    )
    g.add_argument(
        "--lower-is-better",
        dest="higher_is_better",
        action="store_false",
        help="the gate metric is better when smaller (WER, loss)",
    )
    p.add_argument("--tracking-uri", help="default: $MLFLOW_TRACKING_URI or ./mlflow.db")
    p.set_defaults(func=_cmd_register)
