"""``commit pipeline submit | schedule | runs | wait``: the pipeline on a KFP cluster.

Each command is a few ``kfp.Client`` calls (via :mod:`pipelines.kfp_client`, which owns
host, auth and the wait loop). What this module adds is the checking done *before*
anything reaches the cluster, because a mistake found there costs a pod start at best
and a night's scheduled run at worst:

* the compiled package exists and is a KFP pipeline;
* the recipe and its overrides load and validate (the same check ``commit train`` does);
* every runtime parameter is one the pipeline declares, with the declared type;
* no parameter is, or contains, a secret: run parameters are stored in KFP's database
  and shown in its UI. Credentials reach the pods only as Kubernetes Secrets, which the
  compiled package references by name (its platform spec).

The pipeline is uploaded once and then versioned: a new version only when the package's
content changed (the version name carries its hash), so re-submitting the same package
reuses the version and runs stay comparable in the UI.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import logging
import os
import textwrap
from pathlib import Path
from typing import Any

import yaml

from commit_train.errors import CommitError
from pipelines import kfp_client
from pipelines.kfp_client import KfpError, RunNotSucceeded, api_call

log = logging.getLogger(__name__)

DEFAULT_PACKAGE = Path("pipelines/compiled/commit_pipeline.yaml")
DEFAULT_EXPERIMENT = "commit-mlops"
DEFAULT_SCHEDULE_NAME = "commit-retune"
#: MLflow tag the pipeline steps set to the KFP run id (commit_train.orchestration
#: TAG_PIPELINE_RUN); `runs` finds the MLflow run by it
MLFLOW_RUN_TAG = "kfp.run_id"

#: CLI flag -> pipeline parameter names it may fill (first one the package declares)
_FLAG_PARAMS = {
    "recipe": ("recipe",),
    "method": ("method",),
    "overrides": ("overrides",),
    "benchmarks": ("benchmarks", "benchmark"),
}


# ------------------------------------------------------------------------------ package


def load_package(path: str | Path) -> dict[str, Any]:
    """The PipelineSpec document of a compiled package (plus ``_platform``, if any)."""
    path = Path(path)
    if not path.is_file():
        raise CommitError(
            f"compiled pipeline {path} does not exist: run `commit pipeline compile` first "
            f"(or pass --package)"
        )
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
    except yaml.YAMLError as e:
        raise CommitError(f"compiled pipeline {path} is not valid YAML: {e}") from None
    if not docs or not isinstance(docs[0], dict) or "pipelineInfo" not in docs[0]:
        raise CommitError(f"{path} is not a compiled KFP pipeline (no pipelineInfo)")
    spec = dict(docs[0])
    spec["_platform"] = docs[1] if len(docs) > 1 else {}
    return spec


def declared_parameters(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{name: {"parameterType": ..., "defaultValue"?: ...}}`` of the pipeline's inputs."""
    return dict(spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {}) or {})


def package_digest(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _coerce(name: str, value: Any, ptype: str, path: Path) -> Any:
    """``value`` as the type the pipeline declares for ``name`` (KFP checks it too, late)."""
    try:
        if ptype == "STRING":
            return value if isinstance(value, str) else json.dumps(value)
        if ptype == "NUMBER_INTEGER":
            return int(value)
        if ptype == "NUMBER_DOUBLE":
            return float(value)
        if ptype == "BOOLEAN":
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("true", "1", "yes"):
                return True
            if str(value).lower() in ("false", "0", "no"):
                return False
            raise ValueError(value)
        if ptype in ("LIST", "STRUCT"):
            v = json.loads(value) if isinstance(value, str) else value
            if not isinstance(v, list if ptype == "LIST" else dict):
                raise ValueError(value)
            return v
    except (TypeError, ValueError):
        raise CommitError(
            f"parameter {name}={value!r} is not a {ptype} (as declared in {path})"
        ) from None
    return value


def build_parameters(args: argparse.Namespace, spec: dict[str, Any], path: Path) -> dict:
    """Runtime parameters from the CLI flags, checked against what the package declares."""
    declared = declared_parameters(spec)
    # the spellings of `commit pipeline compile/run` too: --set KEY=VALUE, --benchmarks a,b
    args.overrides = [*(getattr(args, "overrides", None) or []), *(args.set_overrides or [])]
    if args.benchmarks_csv:
        extra = [b.strip() for b in args.benchmarks_csv.split(",") if b.strip()]
        args.benchmarks = [*(args.benchmarks or []), *extra]
    given: dict[str, Any] = {}
    for flag, names in _FLAG_PARAMS.items():
        value = getattr(args, flag, None)
        if value in (None, []):
            continue
        name = next((n for n in names if n in declared), None)
        if name is None:
            raise CommitError(
                f"--{flag}: the pipeline in {path} has no parameter {names[0]!r} "
                f"(it declares: {', '.join(sorted(declared)) or 'none'})"
            )
        if flag == "recipe":  # the pipeline carries the recipe text: pods need no copy
            recipe_path = Path(value)
            if not recipe_path.is_file():
                raise CommitError(f"--recipe {value}: no such file (see recipes/)")
            from pipelines.commit_pipeline import recipe_parameter

            value = recipe_parameter(recipe_path.read_text(encoding="utf-8"))
        given[name] = value
    for item in args.param or []:
        name, eq, value = item.partition("=")
        if not eq or not name:
            raise CommitError(f"--param {item!r} is not of the form NAME=VALUE")
        if name not in declared:
            raise CommitError(
                f"--param {name}: the pipeline in {path} has no such parameter "
                f"(it declares: {', '.join(sorted(declared)) or 'none'})"
            )
        given[name] = value
    params = {
        n: _coerce(n, v, declared[n].get("parameterType", "STRING"), path) for n, v in given.items()
    }
    check_no_secrets(params)
    return params


def check_no_secrets(params: dict[str, Any]) -> None:
    """Refuse parameters that are, or carry, credentials (they would sit in KFP's DB/UI)."""
    from commit_train.redaction import is_secret_key, redact_text

    secret_values = {v for k, v in os.environ.items() if is_secret_key(k) and v and len(v) >= 8}
    for name, value in params.items():
        text = value if isinstance(value, str) else json.dumps(value)
        if is_secret_key(name):
            raise CommitError(
                f"parameter {name!r} looks like a credential: pipeline parameters are "
                f"stored and shown by KFP. Put it in a Kubernetes Secret (docs/CLUSTER.md)"
            )
        if redact_text(text) != text or any(s in text for s in secret_values):
            raise CommitError(
                f"parameter {name!r} contains a credential (a URI with user:password, a "
                f"token, or the value of a secret environment variable); credentials "
                f"reach the pods only through Kubernetes Secrets"
            )


def validate_run(params: dict[str, Any], spec: dict[str, Any], source: str) -> None:
    """Check the run as the pipeline will see it (given values over the package defaults):
    the pipeline's own check when it declares the evaluation parameters, else the train
    step's config resolution. Fails here, not in a pod an hour later."""
    declared = declared_parameters(spec)
    run = {n: d.get("defaultValue") for n, d in declared.items()}
    run.update(params)
    recipe = run.get("recipe")
    if not recipe:
        return
    overrides = run.get("overrides") or []
    if isinstance(overrides, str):
        overrides = json.loads(overrides) if overrides.startswith("[") else overrides.split()
    method = run.get("method") or ""
    if "benchmarks" in run and "gate_metric" in run:
        from pipelines.preflight import check_inputs

        check_inputs(
            recipe, list(overrides), method, list(run["benchmarks"] or []),
            run["gate_metric"] or "", run.get("data_source") or None, recipe_source=source,
        )  # fmt: skip
        return
    from commit_train.pipeline_steps import pipeline_config

    pipeline_config(recipe, list(overrides), method, source=source)


# ------------------------------------------------------------------------- KFP objects


def find_experiment(client, host: str, name: str, namespace: str | None, create: bool) -> str:
    """The id of experiment ``name``; created only when ``create`` (else a clear error)."""
    flt = json.dumps({"predicates": [{"operation": 1, "key": "display_name", "stringValue": name}]})
    res = api_call(
        f"looking up experiment {name!r}",
        host,
        lambda: client.list_experiments(filter=flt, namespace=namespace, page_size=2),
    )
    if res.experiments:
        return res.experiments[0].experiment_id
    if not create:
        raise KfpError(
            f"KFP at {host} has no experiment {name!r}: create it in the UI, or pass "
            f"--create-experiment"
        )
    exp = api_call(
        f"creating experiment {name!r}",
        host,
        lambda: client.create_experiment(name=name, namespace=namespace),
    )
    return exp.experiment_id


def ensure_version(client, host: str, package: Path, name: str) -> tuple[str, str, bool]:
    """``(pipeline_id, version_id, new)``: upload the pipeline, or a version of it if new.

    Each version's description records the package's sha256 (the first version, made
    by the pipeline upload, inherits the pipeline's description), so the same bytes are
    recognised and reused instead of piling up identical versions.
    """
    digest = package_digest(package)[:12]
    version_name = f"{name}-{digest}"
    description = f"package sha256 {digest}"
    pipeline_id = api_call(
        f"looking up pipeline {name!r}", host, lambda: client.get_pipeline_id(name)
    )
    if pipeline_id is None:
        p = api_call(
            f"uploading {package}",
            host,
            lambda: client.upload_pipeline(
                str(package), pipeline_name=name, description=description
            ),
        )
        pipeline_id, new = p.pipeline_id, True
    else:
        new = False
    versions = api_call(
        "listing pipeline versions",
        host,
        lambda: client.list_pipeline_versions(
            pipeline_id, page_size=100, sort_by="created_at desc"
        ),
    )
    for v in versions.pipeline_versions or []:
        if new or v.display_name == version_name or (v.description or "") == description:
            return pipeline_id, v.pipeline_version_id, new
    if new:
        raise KfpError(f"KFP at {host} created pipeline {name!r} without a version")
    v = api_call(
        f"uploading {package} as version {version_name}",
        host,
        lambda: client.upload_pipeline_version(
            str(package), version_name, pipeline_id=pipeline_id, description=description
        ),
    )
    return pipeline_id, v.pipeline_version_id, True


def _prepare(args: argparse.Namespace):
    """Shared by submit and schedule: package, parameters, client, experiment, version."""
    package = Path(args.package)
    spec = load_package(package)
    params = build_parameters(args, spec, package)
    validate_run(params, spec, args.recipe or "the recipe parameter")
    host = kfp_client.resolve_host(args.host)
    client = kfp_client.connect(host, args.namespace)
    name = args.pipeline_name or spec["pipelineInfo"]["name"]
    create = args.create_experiment or args.experiment is None
    experiment_id = find_experiment(
        client, host, args.experiment or DEFAULT_EXPERIMENT, args.namespace, create
    )
    pipeline_id, version_id, new = ensure_version(client, host, package, name)
    print(
        f"pipeline {name}: {'uploaded new' if new else 'reusing'} version {version_id} "
        f"({kfp_client.ui_url(host, f'/#/pipelines/details/{pipeline_id}/version/{version_id}')})"
    )
    return host, client, experiment_id, pipeline_id, version_id, params, name


# ---------------------------------------------------------------------------- commands


def cmd_submit(args: argparse.Namespace) -> int:
    host, client, experiment_id, pipeline_id, version_id, params, name = _prepare(args)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    run = api_call(
        "creating the run",
        host,
        lambda: client.run_pipeline(
            experiment_id=experiment_id,
            job_name=args.run_name or f"{name}-{stamp}",
            pipeline_id=pipeline_id,
            version_id=version_id,
            params=params,
            service_account=args.service_account,
        ),
    )
    print(f"run {run.run_id}: {kfp_client.ui_url(host, f'/#/runs/details/{run.run_id}')}")
    if args.wait:
        return _wait(client, host, run.run_id, args.timeout, args.poll)
    return 0


def cmd_schedule(args: argparse.Namespace) -> int:
    cron = kfp_client.validate_cron(args.cron)
    if args.max_concurrency < 1:
        raise CommitError(f"--max-concurrency must be >= 1 (got {args.max_concurrency})")
    host, client, experiment_id, pipeline_id, version_id, params, _ = _prepare(args)
    # KFP cannot update a recurring run: replace the one of the same name, so re-running
    # `schedule` (e.g. from GitOps) is idempotent instead of stacking schedules.
    existing = api_call(
        "listing recurring runs",
        host,
        lambda: client.list_recurring_runs(experiment_id=experiment_id, page_size=100),
    )
    for rr in existing.recurring_runs or []:
        if rr.display_name == args.name:
            api_call(
                f"deleting the old recurring run {rr.recurring_run_id}",
                host,
                lambda rr=rr: client.delete_recurring_run(rr.recurring_run_id),
            )
            print(f"replaced recurring run {rr.recurring_run_id} ({args.name})")
    rr = api_call(
        "creating the recurring run",
        host,
        lambda: client.create_recurring_run(
            experiment_id=experiment_id,
            job_name=args.name,
            description=f"commit pipeline schedule, cron {cron} (UTC)",
            cron_expression=cron,
            max_concurrency=args.max_concurrency,
            no_catchup=not args.catchup,
            params=params,
            pipeline_id=pipeline_id,
            version_id=version_id,
            enabled=True,
            service_account=args.service_account,
        ),
    )
    print(
        f"recurring run {rr.recurring_run_id} ({args.name}): cron '{cron}' UTC, "
        f"max_concurrency={args.max_concurrency}, catchup={'on' if args.catchup else 'off'}: "
        f"{kfp_client.ui_url(host, f'/#/recurringrun/details/{rr.recurring_run_id}')}"
    )
    return 0


def _mlflow_links(run_ids: list[str], tracking_uri: str | None) -> dict[str, str]:
    """KFP run id -> MLflow run URL, for runs whose MLflow run carries ``MLFLOW_RUN_TAG``."""
    if not tracking_uri or not run_ids:
        return {}
    from mlflow.tracking import MlflowClient

    try:
        mc = MlflowClient(tracking_uri=tracking_uri)
        exps = [e.experiment_id for e in mc.search_experiments()]
        links: dict[str, str] = {}
        base = tracking_uri.rstrip("/") if tracking_uri.startswith("http") else tracking_uri
        for rid in run_ids:
            found = mc.search_runs(
                exps, filter_string=f"tags.`{MLFLOW_RUN_TAG}` = '{rid}'", max_results=1
            )
            if found:
                r = found[0].info
                links[rid] = f"{base}/#/experiments/{r.experiment_id}/runs/{r.run_id}"
        return links
    except Exception as e:  # the listing is still useful without links
        from commit_train.redaction import redact_text

        log.warning("MLflow links unavailable (%s)", redact_text(str(e)))
        return {}


def _plugin_link(run) -> str | None:
    """The MLflow link KFP's own MLflow plugin recorded for the run, when it is enabled."""
    out = (getattr(run, "plugins_output", None) or {}).get("mlflow")
    for key, entry in (getattr(out, "entries", None) or {}).items():
        value = getattr(entry, "value", None)
        if "url" in key.lower() and isinstance(value, str):
            return value
    return None


def cmd_runs(args: argparse.Namespace) -> int:
    host = kfp_client.resolve_host(args.host)
    client = kfp_client.connect(host, args.namespace)
    experiment_id = None
    if args.experiment:
        experiment_id = find_experiment(client, host, args.experiment, args.namespace, False)
    res = api_call(
        "listing runs",
        host,
        lambda: client.list_runs(
            experiment_id=experiment_id,
            namespace=args.namespace,
            page_size=args.limit,
            sort_by="created_at desc",
        ),
    )
    runs = res.runs or []
    tracking = args.mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI")
    links = _mlflow_links([r.run_id for r in runs], tracking)
    rows = [("RUN ID", "NAME", "STATE", "CREATED (UTC)", "DURATION", "MLFLOW")]
    for r in runs:
        created = r.created_at.strftime("%Y-%m-%d %H:%M") if r.created_at else "-"
        rows.append(
            (
                r.run_id,
                r.display_name or "",
                kfp_client.state_of(r),
                created,
                kfp_client.format_duration(kfp_client.duration(r)),
                _plugin_link(r) or links.get(r.run_id, "-"),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[-1])
    if not runs:
        print("(no runs)")
    return 0


def _wait(client, host: str, run_id: str, timeout: float, poll: float) -> int:
    def on_change(state: str, run) -> None:
        print(f"run {run_id}: {state}", flush=True)

    run = kfp_client.wait_for_run(
        client, run_id, host=host, timeout_s=timeout, poll_s=poll, on_change=on_change
    )
    state = kfp_client.state_of(run)
    took = kfp_client.format_duration(kfp_client.duration(run))
    if state in ("FAILED", "CANCELED"):
        why = f": {run.error.message}" if getattr(run, "error", None) and run.error.message else ""
        raise RunNotSucceeded(
            f"run {run_id} ended {state} after {took}{why} "
            f"({kfp_client.ui_url(host, f'/#/runs/details/{run_id}')})"
        )
    print(f"run {run_id} ended {state} after {took}")
    return 0


def cmd_wait(args: argparse.Namespace) -> int:
    host = kfp_client.resolve_host(args.host)
    client = kfp_client.connect(host, args.namespace)
    return _wait(client, host, args.run_id, args.timeout, args.poll)


# ------------------------------------------------------------------------------ parser


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", help=f"KFP API URL (default ${kfp_client.HOST_ENV})")
    p.add_argument("--namespace", help="KFP namespace (multi-user installs only)")


def _run_args(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("--package", default=str(DEFAULT_PACKAGE), help="compiled pipeline YAML")
    p.add_argument("--pipeline-name", help="pipeline name in KFP (default: the package's)")
    p.add_argument(
        "--experiment",
        help=f"KFP experiment (default {DEFAULT_EXPERIMENT}, created if missing; a named "
        "one must exist unless --create-experiment)",
    )
    p.add_argument("--create-experiment", action="store_true")
    p.add_argument("--recipe", help="recipe path as the image has it, e.g. recipes/x.yaml")
    p.add_argument("--method", help="training method (sets the recipe's method)")
    p.add_argument("overrides", nargs="*", metavar="dotted.key=value", help="recipe overrides")
    p.add_argument(
        "--set", dest="set_overrides", action="append", default=[], metavar="KEY=VALUE",
        help="a recipe override (repeatable; same as the positional form)",
    )  # fmt: skip
    p.add_argument(
        "--benchmark", dest="benchmarks", action="append", help="evaluation benchmark (repeat)"
    )
    p.add_argument("--benchmarks", dest="benchmarks_csv", help="comma-separated benchmarks")
    p.add_argument(
        "--param", action="append", metavar="NAME=VALUE", help="any other pipeline parameter"
    )
    p.add_argument("--service-account", help="run as this service account (default: KFP's)")


def register(subparsers: argparse._SubParsersAction) -> None:
    auth = textwrap.dedent(
        f"""\
        Auth: a bearer token from ${kfp_client.TOKEN_ENV}, else the service-account token
        mounted in a pod; never a command-line parameter. See docs/CLUSTER.md."""
    )
    fmt = argparse.RawDescriptionHelpFormatter
    s = subparsers.add_parser(
        "submit",
        help="upload (or version) the compiled pipeline and start a run",
        description="Upload the compiled pipeline (a new version only when it changed), "
        "create a run with the given parameters and print its UI link.\n\nexample:\n"
        "  commit pipeline submit --host http://localhost:8080 \\\n"
        "      --recipe recipes/builtin_vision.yaml --method commit train.steps=100\n\n" + auth,
        formatter_class=fmt,
    )
    _run_args(s)
    s.add_argument("--run-name", help="run display name")
    s.add_argument("--wait", action="store_true", help="wait for the run to end (see `wait`)")
    s.add_argument("--timeout", type=float, default=24 * 3600, help="--wait limit, seconds")
    s.add_argument("--poll", type=float, default=10.0, help="seconds between state checks")
    s.set_defaults(func=cmd_submit)

    c = subparsers.add_parser(
        "schedule",
        help="create (or replace) a recurring run on a 6-field UTC cron",
        description="Recurring retuning: KFP starts the pipeline on a 6-field cron "
        "(seconds first, UTC), one run at a time, without back-filling missed slots. "
        "A recurring run with the same --name is replaced.\n\nexample:\n"
        "  commit pipeline schedule --cron '0 0 3 * * *' --recipe recipes/builtin_vision.yaml\n\n"
        + auth,
        formatter_class=fmt,
    )
    _run_args(c)
    c.add_argument("--cron", required=True, help="6 fields: sec min hour dom month dow (UTC)")
    c.add_argument("--name", default=DEFAULT_SCHEDULE_NAME, help="recurring run name")
    c.add_argument("--max-concurrency", type=int, default=1)
    c.add_argument(
        "--catchup", action="store_true", help="back-fill missed slots (default: no catch-up)"
    )
    c.set_defaults(func=cmd_schedule)

    r = subparsers.add_parser(
        "runs",
        help="list recent runs: state, duration, MLflow link",
        description="Recent runs, newest first. The MLflow column links the run KFP's MLflow "
        f"plugin recorded, else the MLflow run tagged {MLFLOW_RUN_TAG}=<run id> "
        "(--mlflow-uri, default $MLFLOW_TRACKING_URI).\n\n" + auth,
        formatter_class=fmt,
    )
    _common(r)
    r.add_argument("--experiment", help="only runs of this experiment")
    r.add_argument("--limit", type=int, default=20)
    r.add_argument("--mlflow-uri", help="MLflow tracking URI for the links")
    r.set_defaults(func=cmd_runs)

    w = subparsers.add_parser(
        "wait",
        help="wait until a run ends; exit 0 on SUCCEEDED/SKIPPED, 1 on FAILED/CANCELED",
        description="Poll a run until SUCCEEDED, FAILED, CANCELED or SKIPPED (kfp's own "
        "wait_for_run_completion misses CANCELED). Exit 0 when it succeeded or was "
        "skipped, 1 when it failed or was canceled, 2 on a bad host/run id/timeout.\n\n" + auth,
        formatter_class=fmt,
    )
    _common(w)
    w.add_argument("run_id")
    w.add_argument("--timeout", type=float, default=24 * 3600, help="seconds (default 1 day)")
    w.add_argument("--poll", type=float, default=10.0, help="seconds between state checks")
    w.set_defaults(func=cmd_wait)
