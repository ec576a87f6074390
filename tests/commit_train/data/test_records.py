"""Validation reports every bad record with file, line and field, or skips and counts."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import soundfile as sf

from commit_train.data.records import Record, read_records, validate_records, write_records
from commit_train.errors import DataError

from .conftest import write_png, write_tone


def _line(**kw) -> str:
    rec = {
        "id": "x",
        "modality": "image",
        "media": "img/ok.png",
        "question": "What is this?",
        "answers": ["coat"],
    }
    rec.update(kw)
    return json.dumps({k: v for k, v in rec.items() if v is not ...})


def _wav_with_rate(path, rate: int) -> None:
    """A PCM WAV whose header declares ``rate`` (libsndfile refuses to write 0 Hz)."""
    data = np.zeros(100, dtype=np.int16).tobytes()
    fmt = struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
    path.write_bytes(
        b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVEfmt " + fmt
        + b"data" + struct.pack("<I", len(data)) + data
    )  # fmt: skip


@pytest.fixture
def bad_dataset(tmp_path):
    """One line per failure mode; the comment names the (line, field, reason) expected."""
    write_png(tmp_path / "img/ok.png")
    (tmp_path / "img/broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    write_tone(tmp_path / "aud/ok.flac", rate=44_100)
    (tmp_path / "aud/garbage.wav").write_bytes(b"RIFF....WAVEgarbage")
    sf.write(tmp_path / "aud/empty.wav", np.zeros(0, dtype=np.float32), 16_000)
    _wav_with_rate(tmp_path / "aud/zero_rate.wav", 0)
    lines = [
        _line(id="good-1"),  # 1
        None,  # 2: raw non-UTF-8 bytes
        '{"id": "broken", ',  # 3
        _line(id="q-missing", question=...),  # 4
        _line(id="a-empty", answers=[]),  # 5
        _line(id="a-type", answers="coat"),  # 6
        _line(id="mod", modality="video"),  # 7
        _line(id="nofile", media="img/missing.png"),  # 8
        _line(id="badimg", media="img/broken.png"),  # 9
        _line(id="badaud", modality="audio", media="aud/garbage.wav"),  # 10
        _line(id="emptyaud", modality="audio", media="aud/empty.wav"),  # 11
        _line(id="rate0", modality="audio", media="aud/zero_rate.wav"),  # 12
        _line(id="good-1"),  # 13: duplicate of line 1
        _line(id="good-2", modality="audio", media="aud/ok.flac"),  # 14
        "",  # blank lines are ignored, not counted
        _line(id="mc", choices=["coat", "dress"], answers=["bag"]),  # 16
        "[1, 2]",  # 17
        _line(id=3.5),  # 18
    ]
    data = b""
    for line in lines:
        data += (b"\xff\xfe bad bytes" if line is None else line.encode()) + b"\n"
    path = tmp_path / "train.jsonl"
    path.write_bytes(data)
    return path


EXPECTED = [
    (2, "(line)", "encoding"),
    (3, "(line)", "json"),
    (4, "question", "missing_field"),
    (5, "answers", "empty_field"),
    (6, "answers", "wrong_type"),
    (7, "modality", "unknown_modality"),
    (8, "media", "media_missing"),
    (9, "media", "image_unreadable"),
    (10, "media", "audio_unreadable"),
    (11, "media", "audio_empty"),
    (12, "media", "audio_sample_rate"),
    (13, "id", "duplicate_id"),
    (16, "answers", "answer_not_in_choices"),
    (17, "(line)", "wrong_type"),
    (18, "id", "wrong_type"),
]


def test_every_problem_is_reported_with_file_line_and_field(bad_dataset):
    with pytest.raises(DataError) as exc:
        read_records(bad_dataset)
    msg = str(exc.value)
    for line, field, _ in EXPECTED:
        assert f"{bad_dataset}:{line}: field '{field}'" in msg, (line, field, msg)
    assert "data.skip_bad" not in msg  # no hint naming an option of another command
    assert "line 1" in msg  # the duplicate names where the id was first used
    assert f"{len(EXPECTED)} problem(s)" in msg


def test_skip_bad_returns_good_records_and_counts(bad_dataset):
    records, report = read_records(bad_dataset, skip_bad=True)
    assert [r.id for r in records] == ["good-1", "good-2"]
    assert report.n_records == 17 and report.n_good == 2 and report.n_bad == 15
    assert [(p.line, p.field, p.reason) for p in report.problems] == EXPECTED
    assert report.counts["wrong_type"] == 3 and report.counts["duplicate_id"] == 1
    assert sum(report.counts.values()) == len(EXPECTED)
    assert "2 of 17 records valid" in report.summary()
    assert json.dumps(report.to_dict())  # manifest-ready


def test_modality_filter_and_media_check_switch(bad_dataset):
    _, report = read_records(bad_dataset, skip_bad=True, modality="image")
    assert (14, "modality", "modality_mismatch") in [
        (p.line, p.field, p.reason) for p in report.problems
    ]
    _, report = read_records(bad_dataset, skip_bad=True, check_media=False)
    assert not {"media_missing", "image_unreadable"} & set(report.counts)


def test_absurd_sample_rate_is_reported(tmp_path):
    sf.write(tmp_path / "a.wav", np.zeros(50, dtype=np.float32), 5)
    (tmp_path / "d.jsonl").write_text(_line(modality="audio", media="a.wav") + "\n")
    with pytest.raises(DataError, match=r"d\.jsonl:1: field 'media'.*5 Hz.*16000 Hz"):
        read_records(tmp_path / "d.jsonl", sampling_rate=16_000)


def test_listing_is_capped(tmp_path):
    (tmp_path / "d.jsonl").write_text("".join("{nope\n" for _ in range(30)))
    with pytest.raises(DataError) as exc:
        read_records(tmp_path / "d.jsonl")
    msg = str(exc.value)
    assert "30 problem(s)" in msg and "and 10 more" in msg
    assert "d.jsonl:20:" in msg and "d.jsonl:21:" not in msg


def test_missing_empty_and_all_bad_files(tmp_path):
    with pytest.raises(DataError, match="nope.jsonl does not exist"):
        read_records(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(DataError, match="no records"):
        read_records(tmp_path / "empty.jsonl")
    (tmp_path / "bad.jsonl").write_text("{nope\n")
    with pytest.raises(DataError, match="every record") as exc:
        read_records(tmp_path / "bad.jsonl", skip_bad=True)
    assert "skip_bad=true" not in str(exc.value)


def test_roundtrip_root_and_extra_keys(tmp_path):
    write_png(tmp_path / "media/a.png")
    rec = Record("1", "image", "a.png", "Q?", ["x", "y"], ["x", "y"], "train", {"qtype": "mc"})
    path = write_records([rec], tmp_path / "sub/d.jsonl")
    records, report = read_records(path, root=tmp_path / "media")
    assert records == [rec] and report.problems == []
    assert records[0].media_path(tmp_path / "media") == tmp_path / "media/a.png"
    absolute = Record("2", "image", str(tmp_path / "media/a.png"), "Q?", ["x"])
    assert absolute.media_path("/elsewhere") == tmp_path / "media/a.png"


def test_integer_ids_and_bom_are_accepted(tmp_path):
    write_png(tmp_path / "img/ok.png")
    (tmp_path / "d.jsonl").write_bytes(b"\xef\xbb\xbf" + _line(id=7).encode() + b"\n")
    records, _ = read_records(tmp_path / "d.jsonl")
    assert records[0].id == "7"


# ---- media confinement (issue 16.1) ----------------------------------------------------------
@pytest.fixture
def outside(tmp_path):
    """A dataset root ``root/`` and, next to it, a valid image the records try to reach."""
    root = tmp_path / "root"
    write_png(root / "img/ok.png")
    write_png(tmp_path / "secret.png")
    (tmp_path / "not-an-image.txt").write_text("private")
    return root


def _records_with(root, *medias):
    lines = [_line(id=f"r{i}", media=m) for i, m in enumerate(medias)]
    (root / "d.jsonl").write_text("\n".join(lines) + "\n")
    return root / "d.jsonl"


@pytest.mark.parametrize(
    "media",
    [
        "../secret.png",
        "img/../../secret.png",
        "{tmp}/secret.png",
        "file://{tmp}/secret.png",
        "link.png",  # a symlink inside the root to the file outside
        "linkdir/secret.png",  # a symlinked folder leading out
    ],
)
def test_media_outside_the_root_is_rejected(outside, media):
    tmp = outside.parent
    (outside / "link.png").symlink_to(tmp / "secret.png")
    (outside / "linkdir").symlink_to(tmp)
    path = _records_with(outside, "img/ok.png", media.format(tmp=tmp))
    with pytest.raises(DataError) as exc:
        read_records(path)
    assert f"{path}:2: field 'media'" in str(exc.value)
    assert "outside the dataset root" in str(exc.value)
    records, report = read_records(path, skip_bad=True)
    assert [r.id for r in records] == ["r0"]
    assert report.counts == {"media_outside_root": 1}


def test_outside_root_message_does_not_reveal_which_files_exist(outside):
    """An image, a text file and a missing file outside the root: one reason, one message."""
    names = ["secret.png", "not-an-image.txt", "does-not-exist.png"]
    path = _records_with(outside, "img/ok.png", *(f"../{n}" for n in names))
    _, report = read_records(path, skip_bad=True)
    assert {p.reason for p in report.problems} == {"media_outside_root"}
    messages = {p.message.replace(n, "X") for p, n in zip(report.problems, names, strict=True)}
    assert len(messages) == 1
    assert str(outside.parent) not in messages.pop()


def test_media_inside_the_root_via_links_and_absolute_paths_is_accepted(outside):
    (outside / "alias.png").symlink_to(outside / "img/ok.png")
    path = _records_with(outside, "alias.png", str(outside / "img/ok.png"), "img/./ok.png")
    records, report = read_records(path)
    assert len(records) == 3 and report.problems == []


def test_media_roots_allow_a_named_folder_outside(outside):
    """A format's ``coco_root`` names a folder outside the root explicitly."""
    shared = outside.parent / "coco"
    write_png(shared / "a.png")
    path = _records_with(outside, str(shared / "a.png"))
    with pytest.raises(DataError, match="outside the dataset root"):
        read_records(path)
    records, _ = read_records(path, media_roots=[shared])
    assert len(records) == 1


def test_confinement_applies_without_media_checks(outside):
    path = _records_with(outside, "img/ok.png", "../secret.png")
    _, report = read_records(path, skip_bad=True, check_media=False)
    assert report.counts == {"media_outside_root": 1}


def test_validate_records_checks_in_memory_records(outside):
    recs = [
        Record("a", "image", "img/ok.png", "Q?", ["x"]),
        Record("b", "image", "../secret.png", "Q?", ["x"]),
    ]
    with pytest.raises(DataError, match=r"bench:val:2: field 'media'.*outside the dataset root"):
        validate_records(recs, outside, "bench:val")


def test_truncated_wav_is_a_problem_with_file_and_line(tmp_path):
    """Issue 16.2: reported with file and line, or counted with skip_bad."""
    full = write_tone(tmp_path / "full.wav", rate=16_000, seconds=1.0)
    (tmp_path / "cut.wav").write_bytes(full.read_bytes()[:1000])
    lines = [
        _line(id="ok", modality="audio", media="full.wav"),
        _line(id="cut", modality="audio", media="cut.wav"),
    ]
    (tmp_path / "d.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"d\.jsonl:2: field 'media'.*cut\.wav is truncated"):
        read_records(tmp_path / "d.jsonl")
    records, report = read_records(tmp_path / "d.jsonl", skip_bad=True)
    assert [r.id for r in records] == ["ok"] and report.counts == {"audio_truncated": 1}


def test_the_hint_is_the_callers(bad_dataset):
    """Issue 16.8: evaluate and stage have no data.skip_bad; the caller names its option."""
    with pytest.raises(DataError) as exc:
        read_records(bad_dataset, hint="Run without --strict.")
    assert str(exc.value).endswith("\nRun without --strict.")
