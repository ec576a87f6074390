"""Comparing runs: the tags every training run carries, and ``commit runs compare``.

METHOD.md §8(c) asks whether ``commit`` beats the baselines on the same data; answering
it means lining up runs that differ in exactly one thing. The tags set here make that a
filter instead of guesswork:

* ``method`` and ``benchmark``: what is compared, and on what;
* ``recipe_hash``: sha256 of the resolved recipe without where the run writes to
  (``train.output_dir``, the ``tracking`` section), so two seeds of one recipe differ
  only in ``seed`` and one recipe rerun elsewhere hashes the same;
* ``git_commit``: the code that ran (when run from a git checkout);
* ``data_manifest_hash``: the data that was trained on: the sha256 of the dataset's
  ``manifest.json`` when it has one (built-in and staged datasets), else of the train JSONL.

``compare_runs`` reads the *last* value of each metric (what MLflow keeps as a run's
latest metric) so the table is one request per experiment, not one per metric.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import subprocess
from pathlib import Path
from typing import Any

from commit_train.errors import CommitError

log = logging.getLogger(__name__)

#: tags shown as columns before the metrics
TAG_COLUMNS = ("method", "benchmark", "recipe_hash")
DEFAULT_METRICS = ("loss/val",)


# ---- tags set at training time -----------------------------------------------------------
def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def recipe_hash(resolved: dict[str, Any]) -> str:
    """sha256 of the resolved recipe minus the run's output location and tracking target."""
    content = json.loads(json.dumps(resolved))  # deep copy, JSON types only
    content.pop("tracking", None)
    (content.get("train") or {}).pop("output_dir", None)
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def benchmark_name(spec: str) -> str:
    """``builtin:vision`` -> ``vision``; ``textvqa:/data/x`` -> ``textvqa``; a JSONL path ->
    the name of its folder (a dataset directory names its dataset)."""
    from commit_train.data.specs import _FORMAT_SPEC

    if spec.startswith("builtin:"):
        return spec.split(":", 1)[1]
    m = _FORMAT_SPEC.match(spec)
    if m is not None and len(m.group("fmt")) > 1:
        return m.group("fmt").lower()
    return Path(spec).resolve().parent.name


def git_commit(path: Path | None = None) -> str | None:
    """HEAD of the git checkout holding this package, or None outside one (e.g. a wheel)."""
    where = path or Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    sha = out.stdout.strip()
    return sha if out.returncode == 0 and len(sha) >= 40 else None


def data_manifest_hash(train_jsonl: Path, data_root: Path | None = None) -> str:
    """sha256 of ``manifest.json`` next to the data (or in its media root), else of the JSONL."""
    for d in (train_jsonl.parent, data_root):
        if d is not None and (Path(d) / "manifest.json").is_file():
            return _sha256_file(Path(d) / "manifest.json")
    return _sha256_file(train_jsonl)


def comparison_tags(
    cfg: Any, train_jsonl: Path | None, data_root: Path | None = None
) -> dict[str, str]:
    """The tags listed in the module docstring for a run of ``cfg`` (a ``RunConfig``)."""
    tags = {
        "method": cfg.method,
        "benchmark": benchmark_name(cfg.data.train),
        "recipe_hash": recipe_hash(cfg.model_dump(mode="json")),
    }
    sha = git_commit()
    if sha:
        tags["git_commit"] = sha
    if train_jsonl is not None and Path(train_jsonl).is_file():
        tags["data_manifest_hash"] = data_manifest_hash(Path(train_jsonl), data_root)
    return tags


# ---- reading runs back -------------------------------------------------------------------
def compare_runs(
    experiment: str,
    metrics: list[str] | None = None,
    tracking_uri: str | None = None,
    sort_by: str | None = None,
) -> tuple[list[str], list[dict[str, Any]]]:
    """``(metric_columns, rows)`` for every run of ``experiment``, best first.

    Without ``metrics`` the columns are ``loss/val`` plus every ``eval/<benchmark>/<metric>``
    any run logged (per-question-type breakdowns left out). Rows are sorted by ``sort_by``
    (default: the first column), lowest first for losses and highest first otherwise;
    runs without that metric go last.
    """
    from commit_train.registry import connect, tracking_error

    client, uri = connect(tracking_uri)
    try:
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            names = sorted(e.name for e in client.search_experiments())
            raise CommitError(
                f"no MLflow experiment named {experiment!r} at {uri}; experiments there: "
                f"{', '.join(names) or '(none)'}"
            )
        runs = client.search_runs([exp.experiment_id], max_results=5000)
    except CommitError:
        raise
    except Exception as e:
        raise tracking_error(e, uri, f"reading experiment {experiment!r}") from None
    if metrics:
        columns = list(metrics)
    else:
        evals = sorted(
            {k for r in runs for k in r.data.metrics if k.startswith("eval/") and k.count("/") == 2}
        )
        columns = list(DEFAULT_METRICS) + evals
    rows = []
    for r in runs:
        row: dict[str, Any] = {
            "run": r.info.run_name or r.info.run_id[:8],
            "run_id": r.info.run_id,
            "status": r.info.status,
        }
        row.update({t: r.data.tags.get(t, "") for t in TAG_COLUMNS})
        row.update({m: r.data.metrics.get(m) for m in columns})
        rows.append(row)
    key = sort_by or (columns[0] if columns else None)
    if key is not None:
        lower_better = "loss" in key or key.endswith(("/wer", "/cer", "/error"))

        def order(row: dict[str, Any]) -> tuple[int, float]:
            v = row.get(key)
            if v is None or not math.isfinite(v):
                return (1, 0.0)
            return (0, v if lower_better else -v)

        rows.sort(key=order)
    return columns, rows


def format_table(columns: list[str], rows: list[dict[str, Any]]) -> str:
    """Fixed-width text table: run, method, benchmark, recipe hash (12 chars), metrics."""
    head = ["run", "method", "benchmark", "recipe", "status", *columns]
    body = []
    for r in rows:
        cells = [r["run"], r["method"], r["benchmark"], (r["recipe_hash"] or "")[:12], r["status"]]
        cells += ["-" if r.get(m) is None else f"{r[m]:.4f}" for m in columns]
        body.append(cells)
    widths = [max(len(str(c)) for c in col) for col in zip(head, *body, strict=True)]

    def line(cells: list[Any]) -> str:
        return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return "\n".join([line(head), "  ".join("-" * w for w in widths)] + [line(b) for b in body])


def _cmd_compare(args: argparse.Namespace) -> int:
    columns, rows = compare_runs(
        args.experiment, metrics=args.metric, tracking_uri=args.tracking_uri, sort_by=args.sort
    )
    if not rows:
        print(f"experiment {args.experiment!r} has no runs")
        return 0
    print(format_table(columns, rows))
    return 0


def register(subparsers: Any) -> None:
    """Add ``commit runs compare``."""
    p = subparsers.add_parser(
        "runs",
        help="compare MLflow runs (methods vs final metrics)",
        description="Work with the MLflow runs of an experiment.",
    )
    sub = p.add_subparsers(dest="runs_command", metavar="runs-command", required=True)
    c = sub.add_parser(
        "compare",
        help="table of runs: method, benchmark, recipe hash and final metrics",
        description="One row per run of --experiment with the last value of each metric "
        "(default: loss/val and every eval/<benchmark>/<metric>), best first by --sort "
        "(lowest first for losses). Reads $MLFLOW_TRACKING_URI unless --tracking-uri.\n\n"
        "example:\n  commit runs compare --experiment commit --metric loss/val "
        "--metric eval/vision/accuracy",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    c.add_argument("--experiment", required=True, help="MLflow experiment name")
    c.add_argument(
        "--metric", action="append", help="metric column (repeatable); default: see above"
    )
    c.add_argument("--sort", help="metric to sort by (default: the first column)")
    c.add_argument("--tracking-uri", help="default: $MLFLOW_TRACKING_URI or ./mlflow.db")
    c.set_defaults(func=_cmd_compare)
