"""``commit stage``: validation with rejected records in the manifest, given and seeded
splits, idempotence (same input, same bytes), atomicity locally and on S3 (an interrupted
staging is never visible), and training from a dataset staged on a real moto S3."""

from __future__ import annotations

import json
import logging
import random
import shutil
from pathlib import Path

import pytest
import yaml

from commit_train import stage as stage_mod
from commit_train import storage
from commit_train.cli import main as cli_main
from commit_train.config import load_config
from commit_train.data.records import read_records
from commit_train.errors import DataError
from commit_train.stage import MANIFEST, fetch_staged, stage
from commit_train.trainer import train
from tests.commit_train.s3_helpers import FAKE_AWS
from tests.conftest import tiny_recipe_dict
from tests.evaluation.test_formats import write_textvqa


def _unsplit_source(tiny_parts, tmp_path: Path, shuffle_seed: int | None = None) -> Path:
    """The tiny train set without split fields, plus three bad lines."""
    lines = []
    for line in tiny_parts["train"].read_text().splitlines():
        obj = json.loads(line)
        del obj["split"]
        lines.append(json.dumps(obj))
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(lines)
    lines.append("{not json")
    lines.append(json.dumps({**json.loads(lines[0]), "id": "gone", "media": "images/none.png"}))
    lines.append(lines[1])  # duplicate id
    path = tmp_path / f"source-{shuffle_seed}.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def _split_ids(out: Path) -> dict[str, set[str]]:
    return {
        p.stem: {json.loads(line)["id"] for line in p.read_text().splitlines()}
        for p in out.glob("*.jsonl")
    }


def test_stage_validates_splits_and_is_idempotent(tiny_parts, tmp_path):
    media_root = str(tiny_parts["train"].parent)
    src = _unsplit_source(tiny_parts, tmp_path)
    kw = {"val_fraction": 0.25, "test_fraction": 0.125, "media_root": media_root}
    first = stage(str(src), str(tmp_path / "a"), **kw)
    m = first.manifest
    assert m["counts"] == {"train": 30, "val": 12, "test": 6}
    assert m["n_rejected"] == 3
    assert m["rejected"][str(src)]["counts"] == {"duplicate_id": 1, "json": 1, "media_missing": 1}
    out = tmp_path / "a"
    for rel, info in m["files"].items():  # every file hashed, media content-addressed
        assert storage.file_sha256(out / rel) == info["sha256"]
        assert rel.endswith(".jsonl") or rel == f"media/{info['sha256'][:2]}/{info['sha256']}.png"
    records, report = read_records(out / "train.jsonl")  # valid, media relative to the dir
    assert report.n_bad == 0 and {r.split for r in records} == {"train"}
    assert storage.is_complete(out)

    # Same input, another place and a second time in place: byte-identical.
    stage(str(src), str(tmp_path / "b"), **kw)
    stage(str(src), str(out), **kw)
    assert storage.describe_dir(tmp_path / "b") == storage.describe_dir(out)
    assert (tmp_path / "b" / MANIFEST).read_bytes() == (out / MANIFEST).read_bytes()

    # The split depends on the seed and the ids, not on the order of the lines.
    shuffled = _unsplit_source(tiny_parts, tmp_path, shuffle_seed=3)
    stage(str(shuffled), str(tmp_path / "c"), **kw)
    assert _split_ids(tmp_path / "c") == _split_ids(out)
    stage(str(src), str(tmp_path / "d"), **{**kw, "seed": 1})
    assert _split_ids(tmp_path / "d") != _split_ids(out)
    assert {k: len(v) for k, v in _split_ids(tmp_path / "d").items()} == m["counts"]

    with pytest.raises(DataError, match="3 problem"):
        stage(str(src), str(tmp_path / "strict"), strict=True, **kw)
    assert not (tmp_path / "strict").exists()


def test_stage_keeps_given_splits(tiny_parts, tmp_path):
    # A folder of split files (the tiny data), and a paper dataset in its own layout.
    result = stage(str(tiny_parts["train"].parent), str(tmp_path / "dir"))
    assert result.counts == {"train": 48, "val": 16}
    (tmp_path / "textvqa").mkdir()
    tv = write_textvqa(tmp_path / "textvqa")
    m = stage(f"textvqa:{tv}", str(tmp_path / "tv")).manifest
    assert m["counts"] == {"train": 2, "val": 1}
    assert m["source_counts"]["train"]["media_missing"] == 1  # dropped by the loader
    assert "unlabeled" in m["source_counts"]["test"]["skipped"]


def test_stage_builtin(tmp_path, monkeypatch):
    monkeypatch.setenv("COMMIT_CACHE", str(tmp_path / "cache"))
    source = "builtin:vision?n_train=6&n_val=2&n_test=2"
    m = stage(source, str(tmp_path / "v")).manifest
    assert m["counts"] == {"train": 6, "val": 2, "test": 2} and m["n_rejected"] == 0
    assert stage(source, str(tmp_path / "v2")).manifest == m


def test_local_staging_is_atomic(tiny_parts, tmp_path, monkeypatch):
    out = tmp_path / "ds"
    stage(str(tiny_parts["train"].parent), str(out))
    before = storage.describe_dir(out)
    calls = {"n": 0}
    real_copy = shutil.copyfile

    def failing_copy(src, dst, *a, **k):
        calls["n"] += 1
        if calls["n"] > 5:
            raise OSError("disk full (injected)")
        return real_copy(src, dst, *a, **k)

    monkeypatch.setattr(stage_mod.shutil, "copyfile", failing_copy)
    with pytest.raises(OSError, match="injected"):
        stage(str(tiny_parts["train"].parent), str(out), seed=5)
    assert storage.describe_dir(out) == before  # the old version, whole
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".ds")] == []


def test_stage_to_s3_atomic_and_idempotent(s3, tiny_parts, tmp_path, monkeypatch):
    src = str(tiny_parts["train"].parent)
    uri = s3.uri("datasets", "tiny")
    local = stage(src, str(tmp_path / "local")).manifest
    remote = stage(src, uri).manifest
    assert remote["dataset_sha256"] == local["dataset_sha256"]  # same bytes wherever staged
    marker = s3.server.client().head_object(Bucket=s3.bucket, Key="datasets/tiny/_COMPLETE")
    stage(src, uri)  # unchanged input: nothing is rewritten
    again = s3.server.client().head_object(Bucket=s3.bucket, Key="datasets/tiny/_COMPLETE")
    assert again["LastModified"] == marker["LastModified"]

    # Staging a new version is interrupted after a few uploads: no reader ever sees a mix.
    real_upload = storage.upload_file
    calls = {"n": 0}

    def failing_upload(local_path, dest):
        calls["n"] += 1
        if calls["n"] > 3:
            raise storage.StorageError("connection lost (injected)")
        return real_upload(local_path, dest)

    monkeypatch.setattr(storage, "upload_file", failing_upload)
    (tmp_path / "v2").mkdir()
    for name in ("train.jsonl", "val.jsonl"):
        lines = (tiny_parts["train"].parent / name).read_text().splitlines()
        (tmp_path / "v2" / name).write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(storage.StorageError, match="injected"):
        stage(str(tmp_path / "v2"), uri, media_root=src)
    assert s3.keys("datasets/tiny/") and not storage.is_complete(uri)
    with pytest.raises(DataError, match="not a complete staged dataset"):
        fetch_staged(uri)
    monkeypatch.setattr(storage, "upload_file", real_upload)
    assert stage(str(tmp_path / "v2"), uri, media_root=src).counts == {"train": 47, "val": 15}
    assert fetch_staged(uri).joinpath("train.jsonl").read_text().count("\n") == 47


@pytest.mark.slow
def test_train_from_dataset_staged_on_s3(s3, tiny_parts, tmp_path, monkeypatch):
    uri = s3.uri("datasets", "train-me")
    manifest = stage(str(tiny_parts["train"].parent), uri).manifest
    raw = tiny_recipe_dict(tiny_parts, tmp_path / "run", steps=2, save_every=0, eval_every=0)
    raw["data"].update(train=f"{uri}/train.jsonl", val=f"{uri}/val.jsonl")
    raw["tracking"]["enabled"] = False
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(raw))
    result = train(load_config(recipe, []))
    assert result.steps == 2 and result.final_val_loss is not None
    cached = fetch_staged(uri)
    assert cached.parent == tmp_path / "cache" / "staged"
    assert storage.describe_dir(cached) == {**manifest["files"], MANIFEST: cached_manifest(cached)}

    # A second reader uses the cache: no download at all.
    def no_download(*a, **k):
        raise AssertionError("downloaded again")

    monkeypatch.setattr(storage, "download_dir", no_download)
    assert fetch_staged(uri) == cached


def cached_manifest(path: Path) -> dict:
    return {
        "size": (path / MANIFEST).stat().st_size,
        "sha256": storage.file_sha256(path / MANIFEST),
    }


def test_cli_stage_and_hidden_credentials(s3, proxy, tiny_parts, capsys, caplog):
    src = str(tiny_parts["train"].parent)
    assert cli_main(["stage", src, "--output", s3.uri("cli")]) == 0
    out = capsys.readouterr().out
    assert "train  48 records" in out and f"data.train={s3.uri('cli')}/train.jsonl" in out

    proxy.canned = (403, "Forbidden", "SignatureDoesNotMatch")
    caplog.set_level(logging.DEBUG)
    assert cli_main(["-v", "stage", src, "--output", s3.uri("cli2")]) == 2
    captured = capsys.readouterr()
    assert "rejected the S3 credentials" in captured.err
    for secret in (FAKE_AWS["AWS_ACCESS_KEY_ID"], FAKE_AWS["AWS_SECRET_ACCESS_KEY"]):
        assert secret not in captured.out + captured.err
        assert secret not in "\n".join(r.getMessage() for r in caplog.records)


def test_stage_never_copies_media_from_outside_the_root(tiny_parts, tmp_path):
    """Issue 16.1: a record reaching out of the dataset folder (``..``, an absolute path,
    ``file://``, a symlink) is rejected with one reason and its file is not copied into the
    staged dataset, even when it is a valid image."""
    src_dir = tmp_path / "src"
    shutil.copytree(tiny_parts["train"].parent / "images", src_dir / "images")
    secret = tmp_path / "secret.png"
    shutil.copyfile(next((src_dir / "images").glob("*.png")), secret)
    with open(secret, "ab") as f:  # other bytes than any image inside: a distinct sha256
        f.write(b"\0")
    (src_dir / "link.png").symlink_to(secret)
    good = json.loads(tiny_parts["train"].read_text().splitlines()[0])
    lines = [json.dumps(good)]
    for i, media in enumerate(["../secret.png", str(secret), f"file://{secret}", "link.png"]):
        lines.append(json.dumps({**good, "id": f"out-{i}", "media": media}))
    (src_dir / "d.jsonl").write_text("\n".join(lines) + "\n")
    m = stage(str(src_dir / "d.jsonl"), str(tmp_path / "out"), val_fraction=0, test_fraction=0)
    assert m.manifest["counts"] == {"train": 1}
    assert m.manifest["rejected"][str(src_dir / "d.jsonl")]["counts"] == {"media_outside_root": 4}
    sha = storage.file_sha256(secret)
    assert not any(sha in rel for rel in m.manifest["files"])
    with pytest.raises(DataError, match="outside the dataset root"):
        stage(str(src_dir / "d.jsonl"), str(tmp_path / "strict"), strict=True)


def test_manifest_messages_hold_no_absolute_paths(tiny_parts, tmp_path):
    """Issue 16.8: rejected-record messages name media relative to the source."""
    src = _unsplit_source(tiny_parts, tmp_path)
    m = stage(str(src), str(tmp_path / "a"), media_root=str(tiny_parts["train"].parent))
    text = json.dumps(m.manifest["rejected"])
    assert "images/none.png" in text and str(tiny_parts["train"].parent) not in text
    with pytest.raises(DataError) as e:
        stage(str(src), str(tmp_path / "s"), strict=True)
    assert "--strict" in str(e.value) and "skip_bad" not in str(e.value)
