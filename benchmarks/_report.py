"""Shared helpers for benchmark scripts: machine description and BENCHMARKS.md sections.

Each script owns one ``## <title>`` section and replaces only that one, so scripts can be
re-run in any order without clobbering each other's figures.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

BENCHMARKS_MD = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"
HEADER = (
    "# Benchmarks\n\nEvery figure here was produced by a script in `benchmarks/`; each section "
    "gives the exact command and the machine. Re-run a script to refresh its section.\n"
)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"
    return f"{cpu}{_vector_isa()}, {os.cpu_count()} cores{gpu}, Python {platform.python_version()}, torch {torch.__version__}"


def _vector_isa() -> str:
    """The widest vector unit torch's CPU kernels use here: machines sold under one model
    name ("AMD EPYC") differ by 2x in a training step with and without AVX-512, so a
    timing without it cannot be compared with another machine's."""
    try:
        isa = torch.backends.cpu.get_cpu_capability()  # "AVX512", "AVX2", "DEFAULT", ...
    except Exception:  # older torch, or a platform that does not report it
        return ""
    return f" ({isa})" if isa else ""


class OtherLoad:
    """How busy the rest of the machine was while a benchmark ran, from CPU accounting.

    Timings on a shared machine are only comparable with that context, and a hand-written
    "other jobs were running" note is easy to forget or get wrong. This is the machine's
    busy CPU time minus that of this process tree (itself, waited-for children, live
    descendants), over wall time: the average number of cores other processes used. Call
    :meth:`cores` while the benchmark's own helper processes (e.g. servers) still run.
    """

    def __init__(self) -> None:
        self._t0 = time.monotonic()
        self._busy0, self._own0 = _busy_cpu_s(), _tree_cpu_s()

    def cores(self) -> float:
        wall = max(time.monotonic() - self._t0, 1e-9)
        other = (_busy_cpu_s() - self._busy0) - (_tree_cpu_s() - self._own0)
        return max(other, 0.0) / wall


def _busy_cpu_s() -> float:
    import psutil

    t = psutil.cpu_times()  # Linux: guest time is already inside user
    return t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)


def _tree_cpu_s() -> float:
    import psutil

    total = sum(os.times()[:4])  # this process and its waited-for children
    for child in psutil.Process().children(recursive=True):
        try:
            c = child.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += c.user + c.system + c.children_user + c.children_system
    return total


def quiet_training_logs(threads: int | None = None) -> None:
    """Warnings only, and none from the libraries a measured training loop logs through
    (their per-step INFO lines would cost time and bury the figures); ``threads``: torch's."""
    import logging

    if threads:
        torch.set_num_threads(threads)
    logging.basicConfig(level=logging.WARNING)
    for name in ("transformers", "accelerate", "commit_train"):
        logging.getLogger(name).setLevel(logging.ERROR)


def write_section(title: str, body: str, path: Path = BENCHMARKS_MD) -> None:
    """Replace (or append) the ``## title`` section of BENCHMARKS.md, atomically."""
    text = path.read_text() if path.exists() else HEADER
    section = f"## {title}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text)
    else:
        text = text.rstrip() + "\n\n" + section
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(text.rstrip() + "\n")
    os.replace(tmp, path)


# ---- the run options every training benchmark takes ---------------------------------------
def add_run_args(
    ap: Any, *, steps: int, reps: int, reps_help: str, quick_help: str, max_records: bool = True
) -> None:
    """Recipe, steps, warm-up, repetitions, batch size, threads and output options, in one
    place: :func:`worker_cmd` forwards exactly these to a worker process."""
    ap.add_argument(
        "--recipe", type=Path, default=BENCHMARKS_MD.parent / "recipes" / "builtin_vision.yaml"
    )
    ap.add_argument("--steps", type=int, default=steps, help="optimizer steps per run")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps at the start of a run")
    ap.add_argument("--reps", type=int, default=reps, help=reps_help)
    ap.add_argument("--batch-size", type=int, default=None, help="default: the recipe's")
    if max_records:
        ap.add_argument("--max-records", type=int, default=None, help="data.max_train_records")
    ap.add_argument("--quick", action="store_true", help=quick_help)
    ap.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads (default: torch's)"
    )
    ap.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    ap.add_argument("--benchmarks-md", type=Path, default=BENCHMARKS_MD)


# ---- worker subprocesses: one run per fresh process, so its peak RSS is its own ------------
RESULT_TAG = "RESULT "


def worker_cmd(script: str | Path, mode: str, args: Any, *extra: str) -> list[str]:
    """``python <script> --worker <mode> ...`` with the shared run options of ``args``."""
    cmd = [sys.executable, str(Path(script).resolve()), "--worker", mode, *extra]
    cmd += ["--recipe", str(args.recipe), "--steps", str(args.steps)]
    cmd += ["--warmup", str(args.warmup)]
    for flag in ("batch_size", "max_records", "threads"):
        if getattr(args, flag, None):
            cmd += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    return cmd


def emit_result(res: dict) -> None:
    """Worker side: print the result where :func:`run_worker` finds it."""
    print(RESULT_TAG + json.dumps(res), flush=True)


def run_worker(cmd: list[str], mode: str, cwd: Path, drop_env: tuple[str, ...] = ()) -> dict:
    """Run one worker offline and return its result dict; its stderr tail on failure."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    for key in drop_env:
        env.pop(key, None)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_TAG)]
    if proc.returncode or not lines:
        raise RuntimeError(f"{mode} run failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1][len(RESULT_TAG) :])
