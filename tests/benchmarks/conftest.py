"""Benchmark scripts configure the process they run in (logger levels, torch threads) as
a CLI should; run in-process by a test, that must not leak into the tests that follow
(``commit_train`` at ERROR hid the tracker's debug dump from a later test's caplog)."""

from __future__ import annotations

import logging

import pytest
import torch

_LOGGERS = ("", "transformers", "accelerate", "commit_train", "peft", "mlflow")


@pytest.fixture(autouse=True)
def _restore_process_settings():
    levels = {name: logging.getLogger(name).level for name in _LOGGERS}
    threads = torch.get_num_threads()
    yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    torch.set_num_threads(threads)
