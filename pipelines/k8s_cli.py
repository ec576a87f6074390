"""``commit k8s ...``: cluster tooling (``commit k8s doctor``).

Registered through the ``commit.commands`` entry point (pyproject.toml); the modules in
K8S_COMMAND_MODULES each add their subcommands with ``register(subparsers)``.
"""

from __future__ import annotations

import argparse
import importlib

K8S_COMMAND_MODULES: tuple[str, ...] = ("pipelines.doctor",)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "k8s",
        help="check a Kubernetes cluster for the commit-mlops stack",
        description="Kubernetes tooling. Run `commit k8s <command> --help` for each command.",
    )
    sub = p.add_subparsers(dest="k8s_command", metavar="command")
    for name in K8S_COMMAND_MODULES:
        importlib.import_module(name).register(sub)

    def _help(_args: argparse.Namespace) -> int:
        p.print_help()
        return 2

    p.set_defaults(func=_help)
