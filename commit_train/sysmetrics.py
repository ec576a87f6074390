"""``system/*`` metrics (CPU, memory, disk, network, GPU) for a run, when asked for.

MLflow's own collectors do the measuring (``SystemMetricsMonitor`` picks CPU, disk,
network and, when present, NVIDIA/ROCm GPU monitors), and the names are MLflow's
(``system/cpu_utilization_percentage``, ...), so the UI's "System metrics" tab shows them.
What is *not* MLflow's is the delivery: ``mlflow.enable_system_metrics_logging`` sends
each sample synchronously and its thread gives up for good at the first failed
``get_run``, so a tracking-server blip would end system metrics for the rest of a long
run. Here the samples go through :class:`~commit_train.tracking.RunTracker`'s buffer,
which batches them with the training metrics and retries while the server is away.

The step of a sample is the number of seconds since the run started, so a resumed run
continues the same axis instead of restarting at 0.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 10.0


class SystemMetricsSampler:
    """Background thread: sample every ``interval_s``, hand ``system/*`` dicts to ``emit``.

    ``emit(metrics, step)`` is ``RunTracker.log_metrics``. One last sample is taken in
    :meth:`stop`, so even a run shorter than the interval gets a data point.
    """

    def __init__(
        self,
        emit: Callable[[dict[str, float], int], None],
        run_id: str,
        tracking_uri: str,
        run_start_ms: int,
        interval_s: float | None = None,
    ) -> None:
        from mlflow.environment_variables import MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        # Only its collectors are used (no network call happens in the constructor).
        self._monitor = SystemMetricsMonitor(run_id, tracking_uri=tracking_uri)
        self.interval_s = float(
            interval_s or MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL.get() or DEFAULT_INTERVAL_S
        )
        self._emit = emit
        self._start_s = run_start_ms / 1000.0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.samples = 0
        self._monitor.collect_metrics()  # primes psutil's CPU counter (first read is 0)
        for m in self._monitor.monitors:
            m.clear_metrics()
        self._thread = threading.Thread(target=self._loop, name="system-metrics", daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        with self._lock:
            try:
                self._monitor.collect_metrics()
                values = self._monitor.aggregate_metrics()
                for m in self._monitor.monitors:
                    m.clear_metrics()
            except Exception as e:  # a collector failing must not touch training
                log.debug("system metrics sample failed: %s", e)
                return
            step = max(0, int(time.time() - self._start_s))
            self._emit({f"system/{k}": v for k, v in values.items()}, step)
            self.samples += 1

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def stop(self) -> None:
        """Take a final sample and stop the thread (idempotent)."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(timeout=5)
        self._sample()
