"""Where a recipe's ``data.train`` / ``data.val`` come from.

* ``builtin:<name>``: a built-in dataset (generated on first use);
* ``<format>:<dir>[?opt=value&...]``: one of the paper's datasets in its own published layout
  (``textvqa:/data/textvqa``, ``aokvqa:/data/aokvqa?mode=da``, ``clotho_aqa:/data/clotho``),
  converted by :mod:`evaluation.formats` into canonical JSONL under the run directory, so
  the same validation pass checks it before training;
* ``s3://bucket/dataset/<split>.jsonl``: a dataset staged by ``commit stage``, downloaded
  once into a local cache keyed by its manifest hash (:func:`commit_train.stage.fetch_staged`);
* anything else: a canonical JSONL file (media relative to its folder or ``data.root``).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl

from commit_train.data.builtin import resolve_data_source
from commit_train.data.records import write_records
from commit_train.data.specs import _FORMAT_SPEC


def _parse_value(v: str) -> object:
    return {"true": True, "false": False}.get(v.lower(), v)


def resolve_source(
    spec: str, split: str, work_dir: str | Path, root: str | Path | None = None
) -> tuple[Path, Path]:
    """``(jsonl, media_root)`` for ``spec``; format sources are converted into ``work_dir``."""
    if spec.startswith("s3://"):
        from commit_train.stage import resolve_staged_split

        return resolve_staged_split(spec, root)
    m = _FORMAT_SPEC.match(spec)
    if spec.startswith("builtin:") or m is None or len(m.group("fmt")) == 1:  # C:\\ paths
        return resolve_data_source(spec, split, root)
    from evaluation.formats import canonical_name, load_dataset_dir

    fmt = canonical_name(m.group("fmt"))
    path, _, query = m.group("path").partition("?")
    opts = {k: _parse_value(v) for k, v in parse_qsl(query)}
    records, _ = load_dataset_dir(fmt, path, split, **opts)
    out = Path(work_dir) / "data" / f"{fmt}-{split}.jsonl"
    write_records(records, out)
    return out, Path(root) if root is not None else Path(path)
