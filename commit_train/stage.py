"""``commit stage``: turn a data source into a validated, split, versioned dataset.

Training and evaluation only read staged datasets (ARCHITECTURE.md, "Data"), so every
problem with the data surfaces here, once, with a record of it, instead of in the middle
of a run. A source is one of:

* ``builtin:vision`` / ``builtin:audio`` (``?n_train=..&n_val=..&n_test=..&seed=..`` for
  other sizes than the defaults);
* ``<format>:<dir>[?opt=value&...]``: a paper dataset in its own published layout, read by
  :mod:`evaluation.formats` (``textvqa:/data/textvqa``, ``macs:/data/macs``); ``splits=a,b``
  picks which of the loader's splits to read;
* a canonical JSONL file, local or ``s3://`` (its media relative to it), or a local folder
  holding ``train.jsonl`` / ``val.jsonl`` / ``test.jsonl``.

Every record and media file is validated (:func:`~commit_train.data.records.read_records`);
bad records are dropped and listed in the manifest with their reasons (``--strict`` fails
instead). Splits a source gives (a record's ``split``, a split file, a loader's
train/val/test) are kept; records without one are split by a seeded permutation of their
sorted ids into ``--val-fraction`` / ``--test-fraction``, so the split does not depend on
file order. The staged dataset is::

    <out>/train.jsonl, val.jsonl, test.jsonl   canonical records, media relative to <out>
    <out>/media/<sha[:2]>/<sha256><ext>         media, content-addressed (deduplicated)
    <out>/manifest.json                         source, parameters, counts per split,
                                                rejected records and why, sha256 per file
    <out>/_COMPLETE                             storage marker (commit_train/storage.py)

Nothing in it depends on time or temp paths, so staging the same input twice gives the
same bytes and the same ``dataset_sha256`` (idempotent). It appears atomically: locally by
one rename (:func:`~commit_train.fsutil.atomic_dir`), on S3 through the storage publish
protocol (readers need the ``_COMPLETE`` marker, written last).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import shutil
import tempfile
import textwrap
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qsl

import numpy as np

from commit_train import storage
from commit_train.data.builtin import SPLITS, builtin_path, cache_root, make_builtin
from commit_train.data.records import Record, confined_media, read_records, write_records
from commit_train.data.specs import media_roots
from commit_train.errors import DataError
from commit_train.fsutil import atomic_dir

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"
FORMAT_VERSION = "commit-staged-dataset/1"
_SPLIT_ALIASES = {"training": "train", "validation": "val", "valid": "val", "dev": "val"}
_SPLIT_ALIASES.update({"testing": "test", "eval": "test"})


@dataclass
class Part:
    """One validated piece of a source: its records and (if the source gives one) split."""

    name: str  # stable name used in the manifest (never a temp path)
    records: list[Record]
    root: Path
    report: dict[str, Any]
    split: str | None  # None: every record's own ``split``, else the seeded split
    media_roots: tuple[Path, ...] = ()  # folders besides ``root`` media may lie in


@dataclass
class StageResult:
    uri: str
    manifest: dict[str, Any]

    @property
    def counts(self) -> dict[str, int]:
        return self.manifest["counts"]


def _norm_split(name: str | None) -> str | None:
    if name is None:
        return None
    key = name.strip().lower()
    return _SPLIT_ALIASES.get(key, key)


def _parse_opts(query: str) -> dict[str, Any]:
    return {k: {"true": True, "false": False}.get(v.lower(), v) for k, v in parse_qsl(query)}


def _validated(
    name: str,
    jsonl: Path,
    root: Path,
    modality: str | None,
    strict: bool,
    media_roots: tuple[Path, ...] = (),
) -> tuple[list[Record], dict[str, Any]]:
    records, report = read_records(
        jsonl,
        root=root,
        modality=modality,
        skip_bad=not strict,
        media_roots=media_roots,
        hint="Fix these records, or stage without --strict to drop them (the manifest lists "
        "each one and why).",
    )
    out = report.to_dict()
    out["path"] = name
    for p in out["problems"]:
        p["file"] = name
        # Paths relative to the source: the manifest must not depend on where it ran.
        p["message"] = p["message"].replace(f"{root}/", "").replace(str(jsonl), name)
    if report.n_bad:
        log.warning("%s", report.summary().replace(str(jsonl), name))
    return records, out


def _records_part(
    name: str, records: list[Record], root: Path, split: str | None, work: Path, **kw: Any
) -> Part:
    """Validate in-memory records (a format loader's) through the same JSONL pass."""
    tmp = write_records(records, work / f"{len(list(work.iterdir()))}.jsonl")
    good, report = _validated(name, tmp, root, **kw)
    return Part(name, good, root, report, split, kw.get("media_roots", ()))


# ---- sources ---------------------------------------------------------------------------------
def _builtin_parts(spec: str, work: Path, **kw: Any) -> tuple[list[Part], dict]:
    name, _, query = spec[len("builtin:") :].partition("?")
    opts = _parse_opts(query)
    unknown = sorted(set(opts) - {"n_train", "n_val", "n_test", "seed"})
    if unknown:
        raise DataError(f"{spec}: unknown option(s) {', '.join(unknown)}")
    sizes = {k: int(v) for k, v in opts.items()}
    if sizes:
        tag = hashlib.sha256(json.dumps(sizes, sort_keys=True).encode()).hexdigest()[:12]
        base = make_builtin(name, builtin_path(name).with_name(f"{name}-{tag}"), **sizes)
    else:
        base = make_builtin(name, builtin_path(name))
    parts = []
    for split in SPLITS:
        good, report = _validated(f"{spec}#{split}", base / f"{split}.jsonl", base, **kw)
        parts.append(Part(f"{spec}#{split}", good, base, report, split))
    return parts, {}


def _format_parts(fmt: str, rest: str, work: Path, **kw: Any) -> tuple[list[Part], dict]:
    """Read a paper dataset's own layout. Without ``splits=``, the loader's train/val/test
    splits are read (or, for datasets that publish none, its first variant, split here);
    a default split that cannot be read (an unlabeled test set, a file not downloaded) is
    skipped and its reason recorded in the manifest, while a requested one must load."""
    from evaluation.formats import SPLITS as FORMAT_SPLITS
    from evaluation.formats import canonical_name, load_dataset_dir

    fmt = canonical_name(fmt)
    path, _, query = rest.partition("?")
    opts = _parse_opts(query)
    requested = "splits" in opts
    known = FORMAT_SPLITS[fmt]
    default = [s for s in known if _norm_split(s) in SPLITS] or [known[0]]
    splits = [s for s in str(opts.pop("splits", ",".join(default))).split(",") if s]
    root = Path(path).resolve()
    kw["media_roots"] = tuple(media_roots(f"{fmt}:{rest}"))
    parts, source_counts = [], {}
    for split in splits:
        try:
            records, counts = load_dataset_dir(fmt, root, split, **opts)
        except DataError as e:
            if requested:
                raise
            log.warning("%s: split %s skipped: %s", fmt, split, e)
            source_counts[split] = {"skipped": str(e)}
            continue
        source_counts[split] = counts
        norm = _norm_split(split)
        given = norm if norm in SPLITS else None
        records = [replace(r, split=given) for r in records]
        parts.append(_records_part(f"{fmt}:{root}#{split}", records, root, given, work, **kw))
    if not parts:
        reasons = "; ".join(f"{k}: {v.get('skipped', '')}" for k, v in source_counts.items())
        raise DataError(f"{fmt}:{root}: no split could be read ({reasons})")
    return parts, source_counts


def _s3_jsonl(uri: str, work: Path) -> tuple[Path, Path]:
    """Download an S3 JSONL and the media its lines reference (relative to it)."""
    base = uri.rsplit("/", 1)[0]
    local = work / "s3-source"
    jsonl = storage.download_file(uri, local / uri.rsplit("/", 1)[1])
    refs = set()
    for line in jsonl.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            media = json.loads(line).get("media")
        except (ValueError, AttributeError):
            continue  # validation reports the line
        rel = PurePosixPath(media) if isinstance(media, str) else None
        if rel and "://" not in media and not rel.is_absolute() and ".." not in rel.parts:
            refs.add(str(rel))
    for rel in sorted(refs):
        # A missing object is reported by validation as media_missing, with its line.
        with contextlib.suppress(storage.StorageNotFound):
            storage.download_file(storage.join(base, rel), local / rel)
    return jsonl, local


def _jsonl_parts(
    spec: str, media_root: str | None, work: Path, **kw: Any
) -> tuple[list[Part], dict]:
    if storage.is_s3(spec):
        jsonl, root = _s3_jsonl(spec, work)
    else:
        jsonl = Path(spec).resolve()
        root = jsonl.parent
    root = Path(media_root).resolve() if media_root else root
    good, report = _validated(spec, jsonl, root, **kw)
    return [Part(spec, good, root, report, None)], {}


def _dir_parts(spec: str, media_root: str | None, **kw: Any) -> tuple[list[Part], dict]:
    base = Path(spec).resolve()
    files = [f for f in sorted(base.glob("*.jsonl"))]
    if not files:
        raise DataError(f"{base} holds no .jsonl files (expected train.jsonl, val.jsonl ...)")
    root = Path(media_root).resolve() if media_root else base
    parts = []
    for f in files:
        split = _norm_split(f.stem)
        good, report = _validated(str(f), f, root, **kw)
        parts.append(Part(str(f), good, root, report, split))
    return parts, {}


def load_source(
    spec: str,
    work: Path,
    modality: str | None = None,
    strict: bool = False,
    media_root: str | None = None,
) -> tuple[list[Part], dict]:
    """Validated parts of a source (see the module docstring) and the loader's counts."""
    kw = {"modality": modality, "strict": strict}
    if spec.startswith("builtin:"):
        return _builtin_parts(spec, work, **kw)
    fmt, sep, rest = spec.partition(":")
    if sep and not storage.is_s3(spec) and len(fmt) > 1 and not rest.startswith("//"):
        return _format_parts(fmt, rest, work, **kw)
    if storage.is_s3(spec) or spec.endswith(".jsonl"):
        return _jsonl_parts(spec, media_root, work, **kw)
    if Path(spec).is_dir():
        return _dir_parts(spec, media_root, **kw)
    raise DataError(
        f"cannot stage {spec!r}: expected builtin:<name>, <format>:<dir>, a .jsonl file "
        "(local or s3://) or a folder of <split>.jsonl files"
    )


# ---- splitting and writing -------------------------------------------------------------------
def _split_order(name: str) -> tuple[int, str]:
    return (SPLITS.index(name), "") if name in SPLITS else (len(SPLITS), name)


def assign_splits(
    parts: list[Part], val_fraction: float, test_fraction: float, seed: int
) -> dict[str, list[tuple[Record, Path]]]:
    """``(record, media root)`` per split: given splits kept, the rest split by a seeded
    permutation of the records sorted by id (so file order does not matter)."""
    out: dict[str, list[tuple[Record, Path]]] = {}
    loose: list[tuple[Record, Path]] = []
    for part in parts:
        for r in part.records:
            split = part.split or _norm_split(r.split)
            if split:
                out.setdefault(split, []).append((replace(r, split=split), part.root))
            else:
                loose.append((r, part.root))
    if loose:
        order = sorted(range(len(loose)), key=lambda i: loose[i][0].id)
        perm = np.random.default_rng(seed).permutation(len(order))
        n_test = round(len(loose) * test_fraction)
        n_val = round(len(loose) * val_fraction)
        which = {}
        for rank, j in enumerate(perm):
            i = order[int(j)]
            which[i] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
        for i, (r, root) in enumerate(loose):  # keep source order inside each split
            out.setdefault(which[i], []).append((replace(r, split=which[i]), root))
    return {k: out[k] for k in sorted(out, key=_split_order)}


def _write_dataset(
    out: Path, splits: dict[str, list[tuple[Record, Path]]], extra: dict[Path, tuple] | None = None
) -> None:
    """Copy media (content-addressed: same bytes, same name) and write each split's JSONL.
    Only media inside their root are copied (validation rejected the others; checked
    again here because a staged dataset may be published)."""
    hashes: dict[Path, str] = {}
    for split, pairs in splits.items():
        staged = []
        for r, root in pairs:
            src = confined_media(r, root, (extra or {}).get(root, ()))
            if src is None:
                raise DataError(f"record {r.id!r}: media {r.media!r} is outside the dataset root")
            sha = hashes.get(src) or storage.file_sha256(src)
            hashes[src] = sha
            rel = f"media/{sha[:2]}/{sha}{src.suffix.lower()}"
            if not (out / rel).exists():
                (out / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, out / rel)
            staged.append(replace(r, media=rel))
        write_records(staged, out / f"{split}.jsonl")


def _manifest(
    out: Path, source: str, params: dict, splits: dict, parts: list[Part], counts: dict
) -> dict:
    files = storage.describe_dir(out)
    digest = hashlib.sha256(
        "".join(f"{k}\t{v['sha256']}\n" for k, v in sorted(files.items())).encode()
    ).hexdigest()
    manifest = {
        "format": FORMAT_VERSION,
        "source": source,
        "params": params,
        "counts": {s: len(rs) for s, rs in splits.items()},
        "n_rejected": sum(p.report["n_bad"] for p in parts),
        "rejected": {p.name: p.report for p in parts if p.report["n_bad"]},
        "source_counts": counts,
        "files": files,
        "dataset_sha256": digest,
    }
    text = json.dumps(manifest, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    (out / MANIFEST).write_text(text, encoding="utf-8")
    return manifest


def stage(
    source: str,
    output: str,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    modality: str | None = None,
    strict: bool = False,
    media_root: str | None = None,
) -> StageResult:
    """Stage ``source`` into ``output`` (a local folder or an ``s3://`` prefix), replacing
    what is there; see the module docstring. Returns the URI and the manifest written."""
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise DataError(
            f"--val-fraction ({val_fraction}) and --test-fraction ({test_fraction}) must be "
            "in [0, 1) and sum to less than 1"
        )
    params = {
        "val_fraction": val_fraction,
        "test_fraction": test_fraction,
        "seed": seed,
        "modality": modality,
        "strict": strict,
    }
    output = str(output).rstrip("/")
    with tempfile.TemporaryDirectory(prefix="commit-stage-") as tmp_s:
        tmp = Path(tmp_s)
        (tmp / "work").mkdir()
        parts, counts = load_source(source, tmp / "work", modality, strict, media_root)
        splits = assign_splits(parts, val_fraction, test_fraction, seed)
        extra = {p.root: p.media_roots for p in parts}
        if storage.is_s3(output):
            build = tmp / "dataset"
            build.mkdir()
            _write_dataset(build, splits, extra)
            manifest = _manifest(build, source, params, splits, parts, counts)
            storage.publish_dir(build, output)
        else:
            with atomic_dir(output) as out:
                _write_dataset(out, splits, extra)
                manifest = _manifest(out, source, params, splits, parts, counts)
                storage.write_marker(out)
    log.info("staged %s -> %s (%s)", source, output, manifest["dataset_sha256"][:12])
    return StageResult(uri=output, manifest=manifest)


# ---- reading a staged dataset from S3 ----------------------------------------------------------
def fetch_staged(uri: str) -> Path:
    """A local copy of the staged dataset at ``uri``, cached under
    ``$COMMIT_CACHE/staged/<manifest sha256>``: each version is downloaded once, and a
    re-staged dataset (new manifest) gets a new cache entry instead of a mixed one."""
    uri = uri.rstrip("/")
    marker = storage.read_marker(uri)
    info = (marker or {}).get("files", {}).get(MANIFEST)
    if marker is None or info is None:
        raise DataError(
            f"{uri} is not a complete staged dataset (no {storage.MARKER} marker listing a "
            f"{MANIFEST}): stage it with `commit stage <source> --output {uri}`, or wait "
            "for a running staging to finish"
        )
    local = cache_root() / "staged" / info["sha256"][:32]
    if storage.read_marker(local) == marker:
        return local
    try:
        storage.download_dir(uri, local)
    except OSError:  # another process (a DDP rank) put the same version in place first
        if storage.read_marker(local) != marker:
            raise
    return local


def resolve_staged_split(spec: str, root: str | Path | None = None) -> tuple[Path, Path]:
    """``(jsonl, media root)`` for ``s3://.../<dataset>/<split>.jsonl`` (training's view)."""
    dataset, _, name = spec.rstrip("/").rpartition("/")
    if not name.endswith(".jsonl"):
        raise DataError(f"{spec}: expected s3://<bucket>/<dataset>/<split>.jsonl")
    local = fetch_staged(dataset)
    if not (local / name).is_file():
        splits = sorted(p.stem for p in local.glob("*.jsonl"))
        raise DataError(f"{spec}: the staged dataset has no {name} (splits: {', '.join(splits)})")
    return local / name, Path(root) if root is not None else local


# ---- command line ------------------------------------------------------------------------------
def _cmd_stage(args: argparse.Namespace) -> int:
    result = stage(
        args.source,
        args.output,
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
        seed=args.seed,
        modality=args.modality,
        strict=args.strict,
        media_root=args.media_root,
    )
    m = result.manifest
    print(f"staged {m['source']} -> {result.uri}")
    for split, n in m["counts"].items():
        print(f"  {split:<6} {n} records")
    if m["n_rejected"]:
        print(f"  rejected {m['n_rejected']} record(s): see {MANIFEST} 'rejected'")
    print(f"dataset sha256: {m['dataset_sha256']}")
    print(f"train with: data.train={storage.join(result.uri, 'train.jsonl')}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``commit stage`` to the CLI (commit_train/cli.py, COMMAND_MODULES)."""
    p = subparsers.add_parser(
        "stage",
        help="validate, split and version a dataset (local or s3://)",
        description=textwrap.dedent(
            """\
            Validate every record and media file of a source, keep its splits (or split it
            with a seed), and write a staged dataset: <split>.jsonl + media + manifest.json
            (counts, sha256 of every file, rejected records and why). Staging the same
            input again gives identical files; the output appears all at once.

            examples:
              commit stage builtin:vision --output data/vision
              commit stage textvqa:/data/textvqa --output s3://datasets/textvqa-v1
              commit stage my.jsonl --output s3://datasets/mine --val-fraction 0.05
            """
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "source", help="builtin:<name> | <format>:<dir> | file.jsonl | s3://.../x.jsonl | dir"
    )
    p.add_argument("--output", "-o", required=True, help="local folder or s3://bucket/prefix")
    p.add_argument("--val-fraction", type=float, default=0.1, help="for records without a split")
    p.add_argument("--test-fraction", type=float, default=0.1, help="for records without a split")
    p.add_argument("--seed", type=int, default=0, help="seed of the split (default 0)")
    p.add_argument("--modality", choices=("image", "audio"), help="reject the other modality")
    p.add_argument("--strict", action="store_true", help="fail on any bad record")
    p.add_argument("--media-root", help="folder media paths of a JSONL are relative to")
    p.set_defaults(func=_cmd_stage)
