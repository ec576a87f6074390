"""``commit k8s ...``: cluster tooling (``commit k8s doctor``).

Registered through the ``commit.commands`` entry point (pyproject.toml); the modules in
K8S_COMMAND_MODULES each add their subcommands with ``register(subparsers)``.
"""

from __future__ import annotations

import argparse

from pipelines.cli import command_group

K8S_COMMAND_MODULES: tuple[str, ...] = ("pipelines.doctor",)


def register(subparsers: argparse._SubParsersAction) -> None:
    command_group(
        subparsers,
        "k8s",
        K8S_COMMAND_MODULES,
        help="check a Kubernetes cluster for the commit-mlops stack",
        description="Kubernetes tooling. Run `commit k8s <command> --help` for each command.",
    )
