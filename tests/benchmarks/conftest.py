"""Benchmark scripts configure the process they run in (logger levels, torch threads) as
a CLI should; run in-process by a test, that must not leak into the tests that follow
(``commit_train`` at ERROR hid the tracker's debug dump from a later test's caplog)."""

from __future__ import annotations

import logging

import pytest
import torch


def _loggers() -> dict[str, logging.Logger]:
    found = logging.root.manager.loggerDict.items()
    return {"": logging.root} | {n: lg for n, lg in found if isinstance(lg, logging.Logger)}


@pytest.fixture(autouse=True)
def _restore_process_settings():
    """Every logger's level as before the test (new ones back to NOTSET), and torch's threads."""
    levels = {name: lg.level for name, lg in _loggers().items()}
    threads = torch.get_num_threads()
    yield
    for name, lg in _loggers().items():
        lg.setLevel(levels.get(name, logging.NOTSET))
    torch.set_num_threads(threads)
