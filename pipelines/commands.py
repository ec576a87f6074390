"""``commit pipeline compile`` and ``commit pipeline run --local``.

compile: validate the recipe + overrides like ``commit train`` would, then write the IR
YAML (``pipelines/compiled/commit_pipeline.yaml``, committed; a test fails when it is
stale). run --local: the whole DAG with kfp.local on this machine, then a summary: where
MLflow is, the registered version and alias, the headline metrics and the reports.
"""

import argparse
import os
import tempfile
import textwrap
from pathlib import Path

from commit_train.errors import CommitError
from pipelines import commit_pipeline as cp


def compile_pipeline(
    output: str | Path = cp.COMPILED,
    recipe: str | Path = cp.DEFAULT_RECIPE,
    overrides: list[str] | tuple[str, ...] = (),
    settings_path: str | Path | None = None,
    image: str | None = None,
    benchmarks: list[str] | tuple[str, ...] = ("vision",),
) -> Path:
    """Validate, then compile the pipeline with ``recipe``/``overrides`` as its defaults;
    written atomically (a temp file renamed over ``output``)."""
    from kfp import compiler

    from pipelines.preflight import check_inputs
    from pipelines.settings import load_settings

    recipe = Path(recipe)
    if not recipe.is_file():
        raise CommitError(f"recipe file {recipe} does not exist (see recipes/)")
    text = cp.recipe_parameter(recipe.read_text(encoding="utf-8"))
    first = benchmarks[0].removeprefix("builtin:")
    defaults = {
        "overrides": list(overrides),
        "benchmarks": list(benchmarks),
        "model_name": f"commit-{first}",
        "gate_metric": f"eval/{first}/accuracy",
    }
    cfg = check_inputs(
        text, list(overrides), "", list(benchmarks), defaults["gate_metric"], None,
        recipe_source=str(recipe),
    )  # fmt: skip
    defaults["data_source"] = cfg.data.train
    settings = load_settings(settings_path, image=image)
    pipeline = cp.build_pipeline(settings, text, defaults)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp.yaml", dir=output.parent)
    os.close(fd)
    try:
        compiler.Compiler().compile(pipeline, tmp)
        os.replace(tmp, output)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return output


def _cmd_compile(args: argparse.Namespace) -> int:
    out = compile_pipeline(
        args.output, args.recipe, args.overrides, args.settings, args.image,
        _split(args.benchmarks),
    )  # fmt: skip
    print(f"compiled: {out}")
    return 0


def _split(text: str) -> list[str]:
    return [b.strip() for b in text.split(",") if b.strip()]


def _gate_threshold(value: str, benchmark: str) -> float:
    """A number, or ``chance``: the majority-answer accuracy of a built-in test split."""
    if value != "chance":
        try:
            return float(value)
        except ValueError:
            raise CommitError(f"--gate-threshold {value!r} is not a number or 'chance'") from None
    from commit_train.data.builtin import chance_levels
    from evaluation.benchmarks import load_benchmark

    name = benchmark.removeprefix("builtin:")
    if name not in ("vision", "audio"):
        raise CommitError(f"--gate-threshold chance needs a built-in benchmark, not {name!r}")
    return chance_levels(load_benchmark(name, "test").records)["overall"]


def _cmd_run(args: argparse.Namespace) -> int:
    from pipelines.local import plan_runs, run_local, summary
    from pipelines.settings import load_settings

    if not args.local:
        raise CommitError(
            "`commit pipeline run` runs on this machine: pass --local (for a cluster, "
            "`commit pipeline submit`)"
        )
    settings = load_settings(args.settings) if args.settings else None
    failed = 0
    plan = plan_runs(_split(args.benchmarks), args.recipe)
    for recipe, benchmarks in plan:
        first = benchmarks[0].removeprefix("builtin:")
        result = run_local(
            recipe=recipe,
            overrides=args.overrides,
            benchmarks=benchmarks,
            method=args.method,
            model_name=args.model_name if len(plan) == 1 else None,
            gate_metric=args.gate_metric,
            gate_threshold=_gate_threshold(args.gate_threshold, first),
            higher_is_better=args.higher_is_better,
            eval_limit=args.eval_limit,
            pipeline_root=args.pipeline_root,
            settings=settings,
            runner=args.runner,
            docker_image=args.image,
        )
        print(summary(result))
        failed += result.status != "SUCCEEDED"
    return 1 if failed else 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``commit pipeline compile`` and ``commit pipeline run``."""
    c = subparsers.add_parser(
        "compile",
        help="validate the recipe and write the pipeline's IR YAML",
        description="Validate the recipe and overrides with the same config classes as "
        "`commit train`, then compile the KFP pipeline with them as parameter defaults. "
        "Kubernetes settings (resources, accelerator, node selector, tolerations, retry, "
        "timeouts) come from --settings (pipelines/settings.py has the defaults).",
    )
    c.add_argument(
        "--recipe", default=str(cp.DEFAULT_RECIPE), help="YAML recipe (default: %(default)s)"
    )
    c.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="recipe override (repeatable)")  # fmt: skip
    c.add_argument("--benchmarks", default="vision", help="comma-separated (default: vision)")
    c.add_argument("--settings", help="YAML with PipelineSettings (pipelines/settings.py)")
    c.add_argument("--image", default=os.environ.get("COMMIT_IMAGE"),
                   help="component image (default: $COMMIT_IMAGE or the pinned tag)")  # fmt: skip
    c.add_argument("--output", "-o", default=str(cp.COMPILED), help="default: %(default)s")
    c.set_defaults(func=_cmd_compile)

    r = subparsers.add_parser(
        "run",
        help="run the whole pipeline on this machine (kfp.local)",
        description=textwrap.dedent(
            """\
            Run stage -> train -> evaluate -> gate -> register with kfp.local, each task a
            process of this venv (or a container: --runner docker). MLflow: $MLFLOW_TRACKING_URI
            or ./mlflow.db. Without --recipe: the built-in recipe of each benchmark's modality,
            shortened to fit about 10 minutes on 2 CPU cores (pipelines/local.py,
            main_job_overrides); vision,audio trains two models.

            examples:
              commit pipeline run --local
              commit pipeline run --local --benchmarks vision,audio
              commit pipeline run --local --recipe recipes/builtin_vision.yaml --set train.steps=300
            """
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    r.add_argument("--local", action="store_true", help="run here with kfp.local (required)")
    r.add_argument("--recipe", help="YAML recipe (default: the built-in one per benchmark)")
    r.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="recipe override (repeatable)")  # fmt: skip
    r.add_argument("--method", default="", help="training method (default: the recipe's)")
    r.add_argument("--benchmarks", default="vision", help="comma-separated (default: vision)")
    r.add_argument("--model-name", help="registered model (default: commit-<benchmark>)")
    r.add_argument("--gate-metric", help="default: eval/<first benchmark>/accuracy")
    r.add_argument("--gate-threshold", default="chance",
                   help="minimum gate value to register: a number, or 'chance' (default: the "
                   "majority-answer accuracy of the built-in test split)")  # fmt: skip
    r.add_argument("--lower-is-better", dest="higher_is_better", action="store_false",
                   help="the gate metric is better when smaller (WER, loss)")  # fmt: skip
    r.add_argument("--eval-limit", type=int, default=0, help="evaluate the first N examples")
    r.add_argument("--pipeline-root", default="local_outputs", help="default: %(default)s")
    r.add_argument("--settings", help="YAML with PipelineSettings (pipelines/settings.py)")
    r.add_argument("--runner", choices=("subprocess", "docker"), default="subprocess")
    r.add_argument("--image", help="image for --runner docker (default: the pinned tag)")
    r.set_defaults(func=_cmd_run)
