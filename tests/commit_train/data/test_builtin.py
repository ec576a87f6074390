"""Built-in datasets: real content, deterministic, valid records, atomic and idempotent."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest

from commit_train.data import builtin
from commit_train.data.builtin import (
    builtin_path,
    ensure_builtin,
    make_builtin,
    resolve_data_source,
)
from commit_train.data.records import read_records
from commit_train.errors import DataError

HAS_FMNIST = (builtin.FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file()
HAS_ESPEAK = shutil.which("espeak-ng") is not None
needs_fmnist = pytest.mark.skipif(
    not HAS_FMNIST, reason="Fashion-MNIST absent: apt-get install dataset-fashion-mnist"
)
needs_espeak = pytest.mark.skipif(not HAS_ESPEAK, reason="apt-get install espeak-ng")
TINY = {"n_train": 8, "n_val": 3, "n_test": 3}


def _tree_hash(path):
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode() + f.read_bytes())
    return h.hexdigest()


@needs_fmnist
def test_vision_records_are_valid_and_deterministic(tmp_path):
    a = make_builtin("vision", tmp_path / "a", **TINY)
    b = make_builtin("vision", tmp_path / "b", **TINY)
    assert _tree_hash(a) == _tree_hash(b)
    manifest = json.loads((a / "manifest.json").read_text())
    assert manifest["counts"] == {"train": 8, "val": 3, "test": 3}
    for split, n in manifest["counts"].items():
        records, report = read_records(a / f"{split}.jsonl", modality="image")
        assert len(records) == n and not report.problems
        assert {r.split for r in records} == {split}
    train, _ = read_records(a / "train.jsonl")
    names = {c[0] for c in builtin.FASHION_CLASSES}
    for r in train:
        if r.meta["qtype"] == "open":
            assert r.answers[0] in names
        elif r.meta["qtype"] == "yesno":
            asked = [c[0] for c in builtin.FASHION_CLASSES if r.question == f"Is this {c[2]}?"]
            assert r.answers == ["yes" if asked == [r.meta["label"]] else "no"]
        else:
            assert r.answers[0] in r.choices and len(r.choices) == 4


@needs_fmnist
def test_idempotent_reuse_and_regeneration(tmp_path, monkeypatch):
    out = make_builtin("vision", tmp_path / "v", **TINY)
    before = _tree_hash(out)

    def boom(*a, **k):
        raise AssertionError("regenerated although the parameters did not change")

    with monkeypatch.context() as m:
        m.setattr(builtin, "_make_vision", boom)
        assert make_builtin("vision", out, **TINY) == out
    assert _tree_hash(out) == before
    make_builtin("vision", out, n_train=5, n_val=2, n_test=2)
    assert json.loads((out / "manifest.json").read_text())["counts"]["train"] == 5
    assert [p.name for p in tmp_path.iterdir()] == ["v"]  # no temp or stale dirs left


@needs_fmnist
def test_failed_generation_leaves_previous_copy_intact(tmp_path, monkeypatch):
    out = make_builtin("vision", tmp_path / "v", **TINY)
    before = _tree_hash(out)
    real = builtin._make_vision

    def fail_on_test(out_dir, split, n, seed):
        if split == "test":
            raise RuntimeError("disk full")
        return real(out_dir, split, n, seed)

    monkeypatch.setattr(builtin, "_make_vision", fail_on_test)
    with pytest.raises(RuntimeError, match="disk full"):
        make_builtin("vision", out, n_train=4, n_val=2, n_test=2)
    assert _tree_hash(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["v"]


@needs_espeak
def test_audio_clips_are_16k_speech(tmp_path):
    import soundfile as sf

    out = make_builtin("audio", tmp_path / "a", n_train=6, n_val=2, n_test=2)
    records, report = read_records(out / "train.jsonl", modality="audio", sampling_rate=16_000)
    assert len(records) == 6 and not report.problems
    for r in records:
        info = sf.info(str(r.media_path(out)))
        assert info.samplerate == 16_000 and info.channels == 1
        assert 0.1 < info.duration < 3.0
        if r.meta["qtype"] in ("open", "open_word"):
            assert r.answers[0] == r.meta["spoken"]
    again = make_builtin("audio", tmp_path / "b", n_train=6, n_val=2, n_test=2)
    assert _tree_hash(out) == _tree_hash(again)


def test_missing_system_packages_are_named(tmp_path, monkeypatch):
    monkeypatch.setattr(builtin, "FASHION_MNIST_DIR", tmp_path / "nowhere")
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        make_builtin("vision", tmp_path / "v", **TINY)
    monkeypatch.setattr(builtin.shutil, "which", lambda _: None)
    with pytest.raises(DataError, match="apt-get install espeak-ng"):
        make_builtin("audio", tmp_path / "a", **TINY)
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_unknown_name_lists_known(tmp_path):
    with pytest.raises(DataError, match="known: vision, audio"):
        make_builtin("cifar", tmp_path / "c")
    with pytest.raises(DataError, match="known: vision, audio"):
        resolve_data_source("builtin:cifar", "train")


@needs_fmnist
def test_resolve_data_source(tmp_path, monkeypatch):
    monkeypatch.setenv("COMMIT_CACHE", str(tmp_path / "cache"))
    assert builtin_path("vision") == tmp_path / "cache" / "data" / "vision"
    monkeypatch.setitem(builtin.DEFAULT_SIZES, "vision", (4, 2, 2))
    jsonl, root = resolve_data_source("builtin:vision", "val")
    assert jsonl == builtin_path("vision") / "val.jsonl" and root == builtin_path("vision")
    assert len(read_records(jsonl, root)[0]) == 2
    assert ensure_builtin("vision") == root
    with pytest.raises(DataError, match="splits train, val, test"):
        resolve_data_source("builtin:vision", "dev")
    assert resolve_data_source("data/x.jsonl", "train") == (
        tmp_path.__class__("data/x.jsonl"),
        tmp_path.__class__("data"),
    )
    assert resolve_data_source("data/x.jsonl", "train", root="/m")[1] == tmp_path.__class__("/m")
