"""``commit pipeline ...``: compile, run locally, submit and schedule the KFP pipeline.

Registered into the ``commit`` CLI through the ``commit.commands`` entry point (see
pyproject.toml), so the library never imports kfp. Each module below adds its own
subcommands with ``register(subparsers)``: local work (compile, run --local) and cluster
work (submit, schedule, runs, wait) stay in separate modules.
"""

from __future__ import annotations

import argparse
import importlib

#: modules adding ``commit pipeline <command>``; each has ``register(subparsers)``
PIPELINE_COMMAND_MODULES: tuple[str, ...] = ("pipelines.remote", "pipelines.commands")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "pipeline",
        help="compile, run (locally or on a KFP cluster) and schedule the pipeline",
        description="The Kubeflow Pipelines workflow: stage data -> train -> evaluate -> "
        "register. Run `commit pipeline <command> --help` for each command.",
    )
    sub = p.add_subparsers(dest="pipeline_command", metavar="command")
    for name in PIPELINE_COMMAND_MODULES:
        importlib.import_module(name).register(sub)

    def _help(_args: argparse.Namespace) -> int:
        p.print_help()
        return 2

    p.set_defaults(func=_help)
