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


def command_group(
    subparsers: argparse._SubParsersAction,
    name: str,
    modules: tuple[str, ...],
    **parser_kwargs: str,
) -> argparse.ArgumentParser:
    """Add ``commit <name>`` whose subcommands come from ``modules`` (each has
    ``register(subparsers)``); the group alone prints its help and exits 2."""
    p = subparsers.add_parser(name, **parser_kwargs)
    sub = p.add_subparsers(dest=f"{name}_command", metavar="command")
    for module in modules:
        importlib.import_module(module).register(sub)

    def _help(_args: argparse.Namespace) -> int:
        p.print_help()
        return 2

    p.set_defaults(func=_help)
    return p


def register(subparsers: argparse._SubParsersAction) -> None:
    command_group(
        subparsers,
        "pipeline",
        PIPELINE_COMMAND_MODULES,
        help="compile, run (locally or on a KFP cluster) and schedule the pipeline",
        description="The Kubeflow Pipelines workflow: stage data -> train -> evaluate -> "
        "register. Run `commit pipeline <command> --help` for each command.",
    )
