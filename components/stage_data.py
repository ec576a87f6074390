"""``stage_data``: a data source -> a validated, split, versioned dataset artifact."""

from kfp import dsl
from kfp.dsl import Dataset, Output

from pipelines.platform import component_image


@dsl.component(base_image=component_image(), install_kfp_package=False)
def stage_data(
    source: str,
    dataset: Output[Dataset],
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    strict: bool = False,
):
    """Stage ``source`` (``builtin:<name>``, ``<format>:<dir>``, a JSONL file or folder,
    local or ``s3://``) with :func:`commit_train.stage.stage`: every record and media file
    validated, bad ones dropped and listed in ``manifest.json`` (``strict``: fail instead)."""
    from commit_train.stage import stage

    result = stage(
        source, dataset.path, val_fraction=val_fraction, test_fraction=test_fraction,
        seed=seed, strict=strict,
    )  # fmt: skip
    m = result.manifest
    dataset.metadata.update(
        {"source": source, "dataset_sha256": m["dataset_sha256"], "counts": m["counts"],
         "n_rejected": m["n_rejected"]}
    )  # fmt: skip
