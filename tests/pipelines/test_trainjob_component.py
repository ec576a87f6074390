"""The train_distributed component compiles with its TaskConfig passthroughs: the GPUs,
tolerations and node selector set on the task reach the TrainJob, not the launcher pod."""

import yaml


def test_train_distributed_passes_the_task_resources_and_scheduling_through(tmp_path):
    from kfp import compiler, dsl, kubernetes

    from components.train_distributed import train_distributed

    @dsl.pipeline(name="multi-node")
    def pipe(recipe: str = "method: commit"):
        data = dsl.importer(artifact_uri="s3://commit-mlops/data/x", artifact_class=dsl.Dataset)
        task = train_distributed(
            recipe=recipe, overrides=[], method="commit", dataset=data.output,
            checkpoint_root="s3://commit-mlops/checkpoints",
            pipeline_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER, task_name="train-distributed",
            num_nodes=4, procs_per_node=8,
        )  # fmt: skip
        task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(8)
        kubernetes.add_toleration(
            task, key="nvidia.com/gpu", operator="Exists", effect="NoSchedule"
        )
        kubernetes.add_node_selector(task, "gpu-pool", "h100")

    path = tmp_path / "p.yaml"
    compiler.Compiler().compile(pipe, str(path))
    spec, platform_doc = list(yaml.safe_load_all(path.read_text()))
    comp = spec["components"]["comp-train-distributed"]
    passthroughs = {p["field"]: p.get("applyToTask", False) for p in comp["taskConfigPassthroughs"]}
    # resources only passed through: applying them to the launcher would double the GPUs
    assert passthroughs == {
        "RESOURCES": False,
        "KUBERNETES_TOLERATIONS": False,
        "KUBERNETES_NODE_SELECTOR": False,
        "KUBERNETES_AFFINITY": False,
        "ENV": True,
        "KUBERNETES_VOLUMES": True,
    }
    (executor,) = [
        e for n, e in spec["deploymentSpec"]["executors"].items() if "train-distributed" in n
    ]
    assert executor["container"]["resources"]["accelerator"]["resourceCount"] == "8"
    (k8s_exec,) = platform_doc["platforms"]["kubernetes"]["deploymentSpec"]["executors"].values()
    assert k8s_exec["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert k8s_exec["nodeSelector"]["labels"] == {"gpu-pool": "h100"}
