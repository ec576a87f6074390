"""``train_distributed``: the ``train`` step on N nodes x G GPUs, as a Kubeflow Trainer TrainJob.

Same inputs as ``train`` plus ``num_nodes``/``procs_per_node``. The task's own resources,
node selector, tolerations, affinity, env and volumes reach the component through
``dsl.TaskConfig`` and become the spec of *every training node*: set
``.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(8)`` and kfp-kubernetes
tolerations on this task as you would on ``train``. Resources are passed through only
(not applied to this launcher pod, which would double the GPUs); env and volumes are
both. The launcher pod itself only needs a little CPU. See docs/CLUSTER.md.
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Dataset, Input

from pipelines.platform import component_image


@dsl.component(
    base_image=component_image(),
    install_kfp_package=False,
    task_config_passthroughs=[
        dsl.TaskConfigField.RESOURCES,
        dsl.TaskConfigField.KUBERNETES_TOLERATIONS,
        dsl.TaskConfigField.KUBERNETES_NODE_SELECTOR,
        dsl.TaskConfigField.KUBERNETES_AFFINITY,
        dsl.TaskConfigPassthrough(field=dsl.TaskConfigField.ENV, apply_to_task=True),
        dsl.TaskConfigPassthrough(field=dsl.TaskConfigField.KUBERNETES_VOLUMES, apply_to_task=True),
    ],
)
def train_distributed(
    recipe: str,
    overrides: list,
    method: str,
    dataset: Input[Dataset],
    checkpoint_root: str,
    pipeline_run_id: str,
    task_name: str,
    num_nodes: int = 2,
    procs_per_node: int = 0,
    start_timeout_s: int = 1800,
    task_config: dsl.TaskConfig = None,
) -> NamedTuple("TrainDistributedOutputs", [("output_uri", str)]):
    """Create (or re-attach to) the TrainJob of this run and task and wait for it:
    :func:`pipelines.trainjob.launch`. The model lands in ``<output_uri>/model``."""
    import dataclasses
    import logging
    from collections import namedtuple

    from pipelines.trainjob import install_sigterm_handler, launch

    logging.basicConfig(level=logging.INFO)
    install_sigterm_handler()  # a canceled run deletes the TrainJob (frees the GPUs)
    uri = launch(
        recipe=recipe, overrides=list(overrides), method=method,
        dataset_uri=dataset.uri, dataset_path=dataset.path,
        checkpoint_root=checkpoint_root, run_id=pipeline_run_id, task=task_name,
        num_nodes=num_nodes, procs_per_node=procs_per_node or None,
        task_config=dataclasses.asdict(task_config) if task_config else None,
        start_timeout_s=start_timeout_s,
    )  # fmt: skip
    return namedtuple("TrainDistributedOutputs", ["output_uri"])(uri)
