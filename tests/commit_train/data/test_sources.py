"""data.train / data.val sources: builtin, canonical JSONL, and real formats by name."""

from pathlib import Path

import pytest

from commit_train.data.records import read_records
from commit_train.data.sources import resolve_source
from commit_train.errors import DataError
from tests.evaluation.test_formats import write_aokvqa, write_textvqa


def test_plain_jsonl_passes_through(tmp_path):
    assert resolve_source(str(tmp_path / "x.jsonl"), "train", tmp_path) == (
        tmp_path / "x.jsonl",
        tmp_path,
    )


def test_textvqa_source_is_converted_and_validates(tmp_path):
    (tmp_path / "textvqa").mkdir()
    root = write_textvqa(tmp_path / "textvqa")
    jsonl, media_root = resolve_source(f"textvqa:{root}", "val", tmp_path / "run")
    assert jsonl == tmp_path / "run" / "data" / "textvqa-val.jsonl"
    assert media_root == Path(root)
    records, report = read_records(jsonl, media_root)
    assert records and report.n_bad == 0
    assert all(len(r.answers) == 10 for r in records)


def test_format_options_in_query(tmp_path):
    (tmp_path / "aok").mkdir()
    root = write_aokvqa(tmp_path / "aok")
    mc, _ = resolve_source(f"aokvqa:{root}?mode=mc", "train", tmp_path / "a")
    da, _ = resolve_source(f"aokvqa:{root}?mode=da", "train", tmp_path / "b")
    assert all(r.choices for r in read_records(mc, root, check_media=False)[0])
    assert all(len(r.answers) == 10 for r in read_records(da, root, check_media=False)[0])


def test_unknown_format_lists_known(tmp_path):
    with pytest.raises(DataError, match="textvqa"):
        resolve_source("cifar10:/data/x", "train", tmp_path)
