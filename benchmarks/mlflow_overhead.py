"""What per-step MLflow logging costs the training loop, against a running tracking server.

Why: METHOD.md §7 asks for ~20 metrics every step, and a synchronous ``log_metric`` call
against a server costs tens of milliseconds. ``RunTracker`` only queues metrics in the
training thread and sends them from a background thread; this measures what that design
leaves on the training loop (issue 6, "Costs": target <= 1% of step time).

A real ``mlflow server`` (sqlite backend store and a local artifact directory in a temp
dir, a free loopback port, one worker, started and health-checked the way
``tests/integration/conftest.py`` does) runs for the whole benchmark. The built-in
vision recipe is trained by the real ``Trainer.fit`` with ``tracking.uri`` pointing at it
and ``train.log_every=1`` ("on"), and with ``tracking.enabled=false`` ("off"), alternating
(order flipped every pair), each run a fresh process so its peak RSS is its own. Both use
``method=constant`` with the κ probe never due and no validation or mid-run checkpoints,
so the loop does only training steps and logging.

Reported:

* mean loop iteration time both ways and their ratio: the time between the starts of
  consecutive ``Trainer._step`` calls, i.e. the step plus everything ``fit`` does after it
  (metric dict, ``tracker.log_metrics``, progress bar); the first ``--warmup`` steps are
  not timed. This includes indirect costs (the flush thread and the server competing for
  CPU and the GIL) but on a shared CPU machine the run-to-run noise is larger than 1%;
* the direct cost: seconds the training thread spends inside ``RunTracker.log_metrics``
  (measured by wrapping it) per timed step, as a fraction of the mean iteration time;
* for context: the flush thread's time in ``log_batch`` calls, the server process's CPU
  seconds during "on" runs, the one-off run start/close time, and a check that the server
  holds every step's ``loss/train``.

    .venv/bin/commit prepare        # once: the offline pretrained parts and the dataset
    .venv/bin/python benchmarks/mlflow_overhead.py --threads 1   # ~5 min on 2 CPU cores
    .venv/bin/python benchmarks/mlflow_overhead.py --quick       # smoke run, ~1-2 min

The full run replaces the "MLflow logging overhead" section of BENCHMARKS.md
(``--no-write`` not to).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._report import (  # noqa: E402
    OtherLoad,
    add_run_args,
    emit_result,
    machine,
    run_worker,
    worker_cmd,
    write_section,
)
from commit_train.local_servers import mlflow_server  # noqa: E402

SECTION = "MLflow logging overhead"
TARGET = 0.01
MODES = ("on", "off")


# ---- the server (commit_train.local_servers.mlflow_server) ----------------------------------
def wait_idle(pid: int, timeout_s: float = 120.0, window_s: float = 2.0) -> None:
    """Wait until the server uses < 10% of a core over ``window_s``.

    After ``/health`` answers, MLflow 3.x's server still starts its job runner and half a
    dozen huey consumer processes, each importing MLflow: ~15 CPU s over ~20 s on 2 cores.
    Measured from the first run on, that one-off would land on the first "on" run.
    """
    deadline = time.monotonic() + timeout_s
    last = server_cpu_s(pid)
    while time.monotonic() < deadline:
        time.sleep(window_s)
        now = server_cpu_s(pid)
        if now - last < 0.1 * window_s:
            return
        last = now
    raise RuntimeError(f"mlflow server still busy {timeout_s:.0f} s after start-up")


def warm_up(uri: str) -> None:
    """One throwaway run through the client, so first-request set-up is not timed."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("mlflow-overhead-warm-up")
    run = client.create_run(exp)
    client.log_batch(run.info.run_id, metrics=[Metric("warm_up", 0.0, 0, 0)])
    client.set_terminated(run.info.run_id)


def server_cpu_s(pid: int) -> float:
    """CPU seconds used so far by the server process and its workers."""
    import psutil

    p = psutil.Process(pid)
    total = 0.0
    for q in [p, *p.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            t = q.cpu_times()
            total += t.user + t.system
    return total


# ---- one run (in a fresh process) ---------------------------------------------------------
def overrides(args: argparse.Namespace, mode: str, uri: str | None) -> list[str]:
    out = [
        "method=constant",
        f"balance.probe_every={args.steps + 1}",
        "data.val=null",
        "train.eval_every=0",
        "train.save_every=0",
        "train.log_every=1",
        f"train.steps={args.steps}",
    ]
    if mode == "on":
        out += [
            f"tracking.uri={uri}",
            "tracking.experiment=mlflow-overhead-benchmark",
            "tracking.log_model=false",
        ]
    else:
        out.append("tracking.enabled=false")
    if args.batch_size:
        out.append(f"train.batch_size={args.batch_size}")
    if args.max_records:
        out.append(f"data.max_train_records={args.max_records}")
    return out


def _timed(fn, into: list):
    """``fn`` wrapped to append (args, kwargs, seconds) of every call to ``into``."""

    def wrapper(*a, **kw):
        t0 = time.perf_counter()
        try:
            return fn(*a, **kw)
        finally:
            into.append((a, kw, time.perf_counter() - t0))

    return wrapper


def one_run(args: argparse.Namespace) -> dict:
    from commit_train.config import load_config
    from commit_train.tracking import RunTracker
    from commit_train.trainer import Trainer

    cfg = load_config(args.recipe, overrides(args, args.worker, args.uri))
    log_calls, sends, starts, closes = [], [], [], []
    RunTracker.log_metrics = _timed(RunTracker.log_metrics, log_calls)
    RunTracker._send_some = _timed(RunTracker._send_some, sends)
    RunTracker.__init__ = _timed(RunTracker.__init__, starts)
    RunTracker.close = _timed(RunTracker.close, closes)
    step_starts: list[float] = []
    rss_train: list[float] = []
    with tempfile.TemporaryDirectory(prefix=f"mlflow-bench-{args.worker}-") as tmp:
        tr = Trainer(cfg, output_dir=tmp)
        inner = tr._step

        def step(batches, i):
            step_starts.append(time.perf_counter())
            out = inner(batches, i)
            if i == args.steps - 1:  # ru_maxrss only grows: the peak up to the end of training
                rss_train.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
            return out

        tr._step = step
        result = tr.fit()
    w = args.warmup
    iters = [b - a for a, b in zip(step_starts[w:-1], step_starts[w + 1 :], strict=True)]
    # log_metrics(logs, step=done) runs after step done-1: steps w .. steps-2 are timed
    timed_steps = set(range(w + 1, args.steps))
    direct = [s for a, kw, s in log_calls if kw.get("step", a[-1]) in timed_steps]
    res = {
        "iter_s": iters,
        "direct_s": direct,
        "send_s": [s for *_, s in sends],
        "start_s": sum(s for *_, s in starts),
        "close_s": sum(s for *_, s in closes),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_rss_train_mb": rss_train[0],
        "threads": torch.get_num_threads(),
        "batch_size": cfg.train.batch_size,
        "run_id": result.run_id,
    }
    if args.worker == "on":
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=args.uri)
        res["server_loss_points"] = len(client.get_metric_history(result.run_id, "loss/train"))
        res["server_metric_names"] = len(client.get_run(result.run_id).data.metrics)
    return res


def worker(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    for name in ("transformers", "accelerate", "commit_train", "peft", "mlflow"):
        logging.getLogger(name).setLevel(logging.ERROR)
    res = one_run(args)
    emit_result(res)
    return 0


def spawn(mode: str, args: argparse.Namespace, uri: str, server_pid: int) -> dict:
    cmd = worker_cmd(__file__, mode, args, "--uri", uri)
    cpu0, t0 = server_cpu_s(server_pid), time.perf_counter()
    res = run_worker(cmd, mode, ROOT, drop_env=("MLFLOW_TRACKING_URI",))
    wall = time.perf_counter() - t0
    res["server_cpu_s"] = server_cpu_s(server_pid) - cpu0
    res["wall_s"] = wall
    res["mean_iter_s"] = statistics.fmean(res["iter_s"])
    res["direct_per_step_s"] = sum(res["direct_s"]) / len(res["iter_s"])
    return res


def summarize(runs: dict[str, list[dict]]) -> dict:
    def mean_iter(rs):
        return sum(sum(r["iter_s"]) for r in rs) / sum(len(r["iter_s"]) for r in rs)

    on, off = runs["on"], runs["off"]
    n_on = sum(len(r["iter_s"]) for r in on)
    n_off = sum(len(r["iter_s"]) for r in off)
    s = {
        "iter_on": mean_iter(on),
        "iter_off": mean_iter(off),
        "direct_on": sum(sum(r["direct_s"]) for r in on) / n_on,
        "direct_off": sum(sum(r["direct_s"]) for r in off) / n_off,
        "per_rep_ratio": [
            a["mean_iter_s"] / b["mean_iter_s"] for a, b in zip(on, off, strict=True)
        ],
        "sends": sum(len(r["send_s"]) for r in on),
        "send_s": sum(sum(r["send_s"]) for r in on),
        "server_cpu_on": sum(r["server_cpu_s"] for r in on),
        "server_cpu_off": sum(r["server_cpu_s"] for r in off),
        "wall_on": sum(r["wall_s"] for r in on),
        "start_s": statistics.fmean(r["start_s"] for r in on),
        "close_s": statistics.fmean(r["close_s"] for r in on),
        "rss_on": max(r["peak_rss_mb"] for r in on),
        "rss_off": max(r["peak_rss_mb"] for r in off),
        "rss_train_on": max(r["peak_rss_train_mb"] for r in on),
        "rss_train_off": max(r["peak_rss_train_mb"] for r in off),
        "loss_points": [r["server_loss_points"] for r in on],
        "metric_names": max(r["server_metric_names"] for r in on),
        "threads": sorted({r["threads"] for r in on + off}),
        "batch_size": on[0]["batch_size"],
    }
    s["ratio"] = s["iter_on"] / s["iter_off"]
    s["direct_frac"] = s["direct_on"] / s["iter_on"]
    return s


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_run_args(
        ap,
        steps=14,
        reps=2,
        reps_help="on/off pairs, order flipped each time",
        quick_help="smoke run: 1 pair, 5 steps, batch 2",
    )
    ap.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    ap.add_argument("--uri", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.quick:
        args.reps, args.steps, args.warmup = 1, 5, 1
        args.batch_size = args.batch_size or 2
        args.max_records = args.max_records or 64
    if args.steps < args.warmup + 2:
        ap.error("--steps must exceed --warmup by at least 2 (iterations are start-to-start)")
    if args.worker:
        return worker(args)

    runs: dict[str, list[dict]] = {m: [] for m in MODES}
    t_start, load = time.perf_counter(), OtherLoad()
    with (
        tempfile.TemporaryDirectory(prefix="mlflow-server-") as tmp,
        mlflow_server(Path(tmp)) as (uri, pid),
    ):
        up_s = time.perf_counter() - t_start
        warm_up(uri)
        wait_idle(pid)
        warm = {"cpu_s": server_cpu_s(pid), "wall_s": time.perf_counter() - t_start}
        print(
            f"mlflow server at {uri} (pid {pid}): /health after {up_s:.0f} s, idle after "
            f"{warm['wall_s']:.0f} s and {warm['cpu_s']:.1f} CPU s (incl. a warm-up run)",
            flush=True,
        )
        for rep in range(args.reps):
            for mode in MODES if rep % 2 == 0 else MODES[::-1]:
                res = spawn(mode, args, uri, pid)
                runs[mode].append(res)
                print(
                    f"rep {rep + 1}/{args.reps} tracking {mode:>3}: mean iteration "
                    f"{res['mean_iter_s']:.3f} s, log_metrics "
                    f"{res['direct_per_step_s'] * 1e3:.2f} ms/step, server CPU "
                    f"{res['server_cpu_s']:.1f} s, peak RSS {res['peak_rss_mb']:.0f} MiB, "
                    f"run wall {res['wall_s']:.0f} s",
                    flush=True,
                )
        others = load.cores()  # while the server (part of this benchmark) still runs
    wall = time.perf_counter() - t_start
    s = summarize(runs)
    lines = [
        f"mean iteration, tracking on:  {s['iter_on']:.3f} s",
        f"mean iteration, tracking off: {s['iter_off']:.3f} s",
        f"ratio on/off: {s['ratio']:.3f} (per pair: "
        + ", ".join(f"{r:.3f}" for r in s["per_rep_ratio"])
        + ")",
        f"log_metrics in the training thread: {s['direct_on'] * 1e3:.2f} ms/step on, "
        f"{s['direct_off'] * 1e3:.2f} ms/step off = {s['direct_frac']:.3%} of a step",
        f"flush thread: {s['sends']} log_batch flushes, {s['send_s']:.2f} s in total",
        f"server CPU: {s['server_cpu_on']:.1f} s during on runs, "
        f"{s['server_cpu_off']:.1f} s during off runs",
        f"peak RSS to the end of training: on {s['rss_train_on']:.0f} MiB, off "
        f"{s['rss_train_off']:.0f} MiB; whole run: on {s['rss_on']:.0f}, off {s['rss_off']:.0f}",
        f"loss/train points on the server per run: {s['loss_points']} (steps {args.steps})",
        f"wall time: {wall:.0f} s; other processes used {others:.2f} cores on average",
    ]
    print("\n".join(lines))
    if args.quick or args.no_write:
        return 0
    given = sys.argv[1:] if argv is None else argv
    cmd = " ".join(["python benchmarks/mlflow_overhead.py", *given])
    recipe = args.recipe.relative_to(ROOT) if args.recipe.is_relative_to(ROOT) else args.recipe
    threads = ", ".join(str(t) for t in s["threads"])
    timed = args.steps - args.warmup - 1
    body = f"""Command: `.venv/bin/commit prepare && .venv/bin/{cmd}`

Machine: {machine()}, {threads} torch intra-op thread(s). Recipe `{recipe}`, batch
{s["batch_size"]}, `method=constant` with the κ probe never due, no validation or mid-run
checkpoints, `train.log_every=1`. A local `mlflow server` (sqlite backend store, local
artifact directory, one worker) on the same machine for the whole benchmark. {args.reps}
on/off pairs of `Trainer.fit` runs, order flipped every pair, each run a fresh process of
{args.steps} steps; {timed} loop iterations per run timed (start of one `_step` to the next,
after {args.warmup} untimed steps).

| tracking | mean loop iteration (s) | `log_metrics` in the training thread (ms/step) | peak RSS, training (MiB) | peak RSS, whole run (MiB) |
|---|---:|---:|---:|---:|
| on (server, every step) | {s["iter_on"]:.3f} | {s["direct_on"] * 1e3:.2f} | {s["rss_train_on"]:.0f} | {s["rss_on"]:.0f} |
| off (`tracking.enabled=false`) | {s["iter_off"]:.3f} | {s["direct_off"] * 1e3:.2f} | {s["rss_train_off"]:.0f} | {s["rss_off"]:.0f} |
| ratio on/off | {s["ratio"]:.3f} | | | |

- Direct cost (time the training thread spends in `RunTracker.log_metrics`, measured by
  wrapping it) per step: **{s["direct_frac"]:.3%}** of the mean step with tracking on.
  Target <= {TARGET:.0%}: **{"met" if s["direct_frac"] <= TARGET else "missed"}**.
- Step-time ratio on/off: {s["ratio"]:.3f} (per pair: {", ".join(f"{r:.3f}" for r in s["per_rep_ratio"])}).
  It includes the indirect costs (the flush thread and the server sharing the CPU and the
  GIL with training) but also run-to-run noise, which on this machine is of the order of
  the target itself; it is the upper-bound figure, the direct cost the lower bound.
- Off the training thread: {s["sends"]} `log_batch` flushes took {s["send_s"]:.2f} s in the
  flush thread over {len(runs["on"])} runs; the server used {s["server_cpu_on"]:.1f} CPU s
  during the "on" runs ({s["wall_on"]:.0f} s of wall time, including process start and
  model load) and {s["server_cpu_off"]:.1f} s during the "off" runs. Starting the run
  (experiment, tags, all recipe params) took {s["start_s"]:.2f} s and closing it (final
  flush, status) {s["close_s"]:.2f} s per run, once, outside the loop; each run ended with
  {s["metric_names"]} metric names.
- Delivery: the server held {", ".join(str(n) for n in s["loss_points"])} `loss/train`
  points for the {args.steps}-step runs.
- Peak RSS is `ru_maxrss` of each run's process, the largest over that mode's runs:
  read at the end of the last training step ("training": imports, model load, training)
  and at the end of the run ("whole run": also the end-of-run checkpoint and the model
  export, which deep-copies the model to merge LoRA).
- Before the first timed run the server was warmed up by one throwaway client run and
  left to settle until idle (after `/health` answers it still starts a job runner and
  several huey consumer processes): start-up took {warm["wall_s"]:.0f} s and
  {warm["cpu_s"]:.1f} CPU s, a one-off that would otherwise land on the first "on" run.
- Total wall time {wall:.0f} s. Other processes on the machine used {others:.2f} of its
  {os.cpu_count()} cores on average meanwhile (busy CPU time minus this benchmark's
  processes, the server included){"; the machine was shared" if others > 0.25 else ""}.
"""
    write_section(SECTION, body, args.benchmarks_md)
    print(f"updated {args.benchmarks_md}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
