"""``check_gate`` and ``register``: the gated step into the MLflow model registry."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Metrics, Output

from pipelines.platform import component_image


@dsl.component(base_image=component_image(), install_kfp_package=False)
def check_gate(
    mlflow_run_id: str,
    gate_metric: str,
    gate_threshold: float,
    gate: Output[Metrics],
    higher_is_better: bool = True,
) -> bool:
    """Does the run's ``gate_metric`` reach ``gate_threshold``
    (:func:`commit_train.orchestration.check_gate`)? ``register`` runs only if it does.

    The decision is the single ``Output`` parameter (the metric value goes to the ``gate``
    Metrics artifact): kfp.local 2.17.3 resolves a ``dsl.If`` on a task output only when
    it is named ``Output``; a named output (``passed``) reads as missing and skips."""
    from commit_train.orchestration import check_gate as decide

    g = decide(mlflow_run_id, gate_metric, gate_threshold, higher_is_better)
    print(g.describe())
    if g.value is not None:
        gate.log_metric("value", g.value)
    gate.metadata["passed"] = g.passed
    return g.passed


@dsl.component(base_image=component_image(), install_kfp_package=False)
def register(
    mlflow_run_id: str, model_name: str, gate_metric: str, higher_is_better: bool = True
) -> NamedTuple(
    "RegisterOutputs", [("version", str), ("alias", str), ("champion", bool), ("created", bool)]
):
    """Register the run's model (:func:`commit_train.registry.register_run_model`): a new
    version with alias ``challenger``, ``champion`` only if it beats the current one on
    ``gate_metric``. Idempotent: a retry reuses the version made for this run."""
    from collections import namedtuple

    from commit_train.registry import CHALLENGER, CHAMPION, register_run_model

    r = register_run_model(mlflow_run_id, model_name, gate=gate_metric or None,
                           higher_is_better=higher_is_better)  # fmt: skip
    out = namedtuple("RegisterOutputs", ["version", "alias", "champion", "created"])
    return out(r.version, CHAMPION if r.champion else CHALLENGER, r.champion, r.created)
