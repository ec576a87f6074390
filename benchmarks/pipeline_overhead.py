"""The main job's wall time, and what kfp.local adds over the same library steps called
directly in one process.

Two runs of the same job, side by side on the same machine (the order alternates with
``--reps`` so neither always gets the warmer page cache):

* **pipeline**: :func:`pipelines.local.run_local`, the main job exactly as
  ``commit pipeline run --local`` runs it (kfp.local SubprocessRunner: one process per
  task, artifacts copied between task dirs, executor I/O, the gate and registration);
* **direct**: the four library calls the components make, in one process and in order:
  :func:`commit_train.stage.stage`, :func:`commit_train.pipeline_steps.train_step`,
  :func:`evaluation.tracked.evaluate_tracked`, :func:`commit_train.registry.register_run_model`.

Both use a fresh sqlite MLflow store and output root per run. The overhead is the ratio
of wall times (target ≤ 1.1×); per-step times come from the pipeline's own task timings
where kfp.local records them, and from the direct run's clocks.

    .venv/bin/python benchmarks/pipeline_overhead.py            # the main job, both ways
    .venv/bin/python benchmarks/pipeline_overhead.py --quick    # 10 steps, 64 test questions
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._report import BENCHMARKS_MD, OtherLoad, machine, write_section  # noqa: E402

RESULT = "RESULT "


def _pipeline(work: Path, overrides: list[str], limit: int) -> dict:
    from pipelines.local import run_local

    r = run_local(
        overrides=overrides,
        eval_limit=limit,
        pipeline_root=work / "out",
        tracking_uri=f"sqlite:///{work}/mlflow.db",
        gate_threshold=0.0,
    )
    if r.status != "SUCCEEDED":
        raise RuntimeError(f"pipeline failed: {r.error}")
    b = r.benchmarks[0]
    return {
        "wall_s": r.wall_s,
        "accuracy": b.metrics.get("accuracy"),
        "version": r.version,
        "alias": r.alias,
        "train_s": r.train_metrics.get("train_s"),
    }


def _direct(work: Path, overrides: list[str], limit: int) -> dict:
    """The components' library calls, with the same arguments the pipeline gives them."""
    from commit_train.pipeline_steps import train_step
    from commit_train.registry import register_run_model
    from commit_train.stage import stage
    from evaluation.tracked import evaluate_tracked
    from pipelines import commit_pipeline as cp
    from pipelines.local import BUILTIN_RECIPES, main_job_overrides

    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work}/mlflow.db"
    recipe = cp.recipe_parameter(BUILTIN_RECIPES["vision"].read_text(encoding="utf-8"))
    times = {}
    t0 = time.perf_counter()
    stage("builtin:vision", work / "dataset")
    times["stage_s"] = time.perf_counter() - t0
    t = time.perf_counter()
    out = train_step(
        recipe, [*main_job_overrides("vision"), *overrides], "", str(work / "dataset"),
        str(work / "checkpoints"), "direct", "train", model_dir=work / "model",
    )  # fmt: skip
    times["train_s"] = time.perf_counter() - t
    t = time.perf_counter()
    ev = evaluate_tracked(
        out.model_dir, "vision", split="test", output_dir=work / "eval", limit=limit or None,
        run_id=out.run_id, tracking=True, progress=False,
    )  # fmt: skip
    times["evaluate_s"] = time.perf_counter() - t
    t = time.perf_counter()
    reg = register_run_model(out.run_id, "commit-vision", gate="eval/vision/accuracy")
    times["register_s"] = time.perf_counter() - t
    return {
        "wall_s": time.perf_counter() - t0,
        "accuracy": ev.metrics.get("accuracy"),
        "version": reg.version,
        **times,
    }


def _worker(mode: str, overrides: list[str], limit: int) -> None:
    with tempfile.TemporaryDirectory(prefix=f"overhead-{mode}-") as tmp:
        work = Path(tmp)
        os.chdir(work)  # nothing lands in the repo
        res = (_pipeline if mode == "pipeline" else _direct)(work, overrides, limit)
    print(RESULT + json.dumps(res), flush=True)


def _run(mode: str, overrides: list[str], limit: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", mode, "--limit", str(limit)]
    for o in overrides:
        cmd += ["--set", o]
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT)]
    if proc.returncode or not lines:
        raise RuntimeError(f"{mode} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1][len(RESULT) :])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", choices=("pipeline", "direct"), help=argparse.SUPPRESS)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--limit", type=int, default=0, help="test questions (0: all)")
    ap.add_argument("--reps", type=int, default=1, help="pairs of runs (order alternates)")
    ap.add_argument("--quick", action="store_true", help="10 steps, 64 test questions")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    if args.worker:
        _worker(args.worker, args.overrides, args.limit)
        return
    if args.quick:
        args.overrides = ["train.steps=10", "train.eval_every=5", "train.save_every=5"]
        args.limit = 64
    load = OtherLoad()
    runs: dict[str, list[dict]] = {"pipeline": [], "direct": []}
    for rep in range(args.reps):
        order = ("pipeline", "direct") if rep % 2 == 0 else ("direct", "pipeline")
        for mode in order:
            r = _run(mode, args.overrides, args.limit)
            runs[mode].append(r)
            print(f"{mode}: {r['wall_s']:.1f} s, accuracy {r['accuracy']:.4f}", flush=True)
    other = load.cores()

    def med(mode: str, key: str) -> float:
        vals = sorted(r[key] for r in runs[mode] if r.get(key) is not None)
        return vals[len(vals) // 2]

    p, d = med("pipeline", "wall_s"), med("direct", "wall_s")
    cmd = "python benchmarks/pipeline_overhead.py" + "".join(
        f" --{k} {v}" for k, v in (("reps", args.reps), ("limit", args.limit)) if v
    )
    if args.quick:
        cmd = "python benchmarks/pipeline_overhead.py --quick"
    from commit_train.data.builtin import chance_levels
    from evaluation.benchmarks import load_benchmark

    records = load_benchmark("vision", "test").records
    chance = chance_levels(records[: args.limit or None])["overall"]
    acc = med("pipeline", "accuracy")
    body = f"""The main job (`commit pipeline run --local`: stage → train → evaluate → gate →
register on the built-in vision benchmark) against the same four library calls made
directly in one process, each on a fresh sqlite MLflow store; {args.reps} pair(s), order
alternating, median reported.

Command: `{cmd}`
Machine: {machine()}; other processes used {other:.2f} cores on average meanwhile.

| run | wall time (s) | test accuracy | majority chance |
|---|---:|---:|---:|
| pipeline (kfp.local, SubprocessRunner) | {p:.1f} | {acc:.4f} | {chance:.4f} |
| direct (stage, train_step, evaluate_tracked, register) | {d:.1f} | {med("direct", "accuracy"):.4f} | {chance:.4f} |

Direct steps (s): stage {med("direct", "stage_s"):.1f}, train {med("direct", "train_s"):.1f},
evaluate {med("direct", "evaluate_s"):.1f}, register {med("direct", "register_s"):.1f}.

**kfp.local overhead: {p / d:.3f}×** (target ≤ 1.1×); main job wall time **{p / 60:.1f} min**
(target ≤ 10 min on 2 CPU cores).
"""
    print(body)
    if not args.no_write:
        write_section("Pipeline overhead", body, BENCHMARKS_MD)


if __name__ == "__main__":
    main()
