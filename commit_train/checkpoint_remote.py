"""Checkpoints and outputs of a run whose output directory is ``s3://bucket/prefix``.

A pod's disk goes away with the pod, so in a cluster the run directory lives on S3
(``commit train ... --output-dir s3://bucket/runs/x``, or ``train.output_dir`` set to an
``s3://`` URI). The trainer keeps working on a local staging directory (one per URI, under
``$COMMIT_CACHE/runs/``) exactly as for a local run; this module mirrors it:

* each checkpoint, once :func:`commit_train.checkpoint.save_checkpoint` has finished it
  locally, is published to ``<uri>/checkpoints/step-N/`` with the storage publish
  protocol (files first, ``_COMPLETE`` marker last), then older ones are pruned;
* ``--resume`` downloads the newest checkpoint *with* a marker into the staging directory
  and the trainer loads it from there. A run killed while uploading leaves a ``step-N``
  prefix without a marker, which is never chosen: the run resumes from the checkpoint
  before it and overwrites the leftover when it reaches that step again;
* at the end the model directory is published to ``<uri>/model/`` and the recipe and
  plot are copied next to it.

Uploads run on the main process only, and synchronously: a checkpoint is durable on S3
before training continues, which is what a preemptible pod needs. Under multi-process
training every process of a node shares the staging directory (per-rank RNG files are
written there), so resume with the same number of processes per node.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
from collections.abc import Callable
from pathlib import Path

from commit_train import storage
from commit_train.checkpoint import checkpoint_root
from commit_train.data.builtin import cache_root

log = logging.getLogger(__name__)
_STEP_DIR = re.compile(r"^step-(\d+)$")
#: files of the run directory copied to S3 at the end besides ``model/``
OUTPUT_FILES = ("recipe.yaml", "training.png")


def staging_dir(uri: str) -> Path:
    """The local directory a run writing to ``uri`` works in (stable across restarts)."""
    digest = hashlib.sha256(uri.rstrip("/").encode()).hexdigest()[:16]
    return cache_root() / "runs" / digest


class RemoteRun:
    """The S3 side of one run directory; the trainer holds one when its output is S3."""

    def __init__(self, uri: str, local_dir: Path | None = None):
        storage.split_s3(uri)  # validates the URI before any training starts
        self.uri = uri.rstrip("/")
        self.local_dir = Path(local_dir) if local_dir is not None else staging_dir(self.uri)

    @classmethod
    def for_output(cls, output_dir: str | Path) -> RemoteRun | None:
        """A RemoteRun for an ``s3://`` output directory, None for a local one."""
        return cls(output_dir) if storage.is_s3(output_dir) else None

    def preflight(self) -> None:
        """Check credentials, bucket and write permission before anything is trained
        (:func:`commit_train.storage.check_writable`); raises :class:`StorageError`."""
        storage.check_writable(self.uri)

    def discard_staging(self) -> None:
        """Remove the local staging directory after a failed run: everything worth keeping
        was published to S3 already (``--resume`` never trusts local leftovers), and a
        failed run must not leave a checkpoint-sized directory behind on the node."""
        shutil.rmtree(self.local_dir, ignore_errors=True)

    @property
    def checkpoints_uri(self) -> str:
        return storage.join(self.uri, "checkpoints")

    def _steps(self) -> list[tuple[int, str]]:
        return sorted(
            (int(m.group(1)), name)
            for name in storage.list_dirs(self.checkpoints_uri)
            if (m := _STEP_DIR.match(name))
        )

    def latest(self) -> str | None:
        """URI of the newest *complete* checkpoint, or None."""
        for _, name in reversed(self._steps()):
            uri = storage.join(self.checkpoints_uri, name)
            if storage.is_complete(uri):
                return uri
        return None

    def prepare(self, resume: bool, is_main: bool, barrier: Callable[[], None]) -> Path | None:
        """Reset the staging checkpoints and, with ``resume``, download the latest complete
        one into them. Local leftovers are never trusted: a checkpoint finished locally but
        killed during its upload does not exist as far as the run directory is concerned.
        """
        path = None
        if is_main:
            root = checkpoint_root(self.local_dir)
            shutil.rmtree(root, ignore_errors=True)
            latest = self.latest() if resume else None
            if latest is not None:
                path = storage.download_dir(latest, root / latest.rsplit("/", 1)[1])
                log.info("downloaded checkpoint %s to %s", latest, path)
            elif resume:
                log.warning("--resume: no complete checkpoint under %s", self.checkpoints_uri)
        barrier()
        return path

    def push_checkpoint(self, path: Path, keep: int) -> str:
        """Publish a finished local checkpoint, then prune all but the newest ``keep``."""
        uri = storage.join(self.checkpoints_uri, path.name)
        storage.publish_dir(path, uri)
        log.info("checkpoint published: %s", uri)
        steps = self._steps()
        complete = [
            s for s, name in steps if storage.is_complete(storage.join(self.checkpoints_uri, name))
        ]
        kept = complete[-keep:]
        for step, name in steps:
            # Older than every kept one: pruned whether complete or a killed upload's leftover.
            if kept and step < kept[0]:
                storage.delete_tree(storage.join(self.checkpoints_uri, name))
        return uri

    def push_outputs(self, local_dir: Path) -> str:
        """Publish ``model/`` and copy the recipe and plot; returns the model's URI."""
        model_uri = storage.join(self.uri, "model")
        storage.publish_dir(local_dir / "model", model_uri)
        for name in OUTPUT_FILES:
            if (local_dir / name).is_file():
                storage.upload_file(local_dir / name, storage.join(self.uri, name))
        log.info("run outputs published under %s", self.uri)
        return model_uri
