"""The audio benchmark: 16 kHz mono clips within the 5 s encoder window, deterministic,
and generated sounds that really have the property the answer claims."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import soundfile as sf

from commit_train.data import builtin_audio as ba
from commit_train.data.builtin import make_builtin
from commit_train.data.records import read_records

from .test_builtin import HAS_SPEECH, needs_speech, tree_hash

SMALL = {"n_train": 18, "n_val": 9, "n_test": 9}
RATE = ba.AUDIO_RATE


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    if not HAS_SPEECH:
        pytest.skip("apt-get install espeak-ng flite")
    return make_builtin("audio", tmp_path_factory.mktemp("a") / "audio", **SMALL)


@needs_speech
def test_clips_are_16k_mono_within_5s_and_deterministic(small, tmp_path):
    manifest = json.loads((small / "manifest.json").read_text())
    for split, n in (("train", 18), ("val", 9), ("test", 9)):
        records, report = read_records(
            small / f"{split}.jsonl", small, modality="audio", sampling_rate=RATE
        )
        assert len(records) == n and not report.problems
        counts = Counter(r.meta["qtype"] for r in records)
        assert counts == {q: n // len(ba.QTYPES) for q in ba.QTYPES}
        assert manifest["qtypes"][split] == dict(sorted(counts.items()))
        for r in records:
            info = sf.info(str(r.media_path(small)))
            assert info.samplerate == RATE and info.channels == 1
            assert 0.1 < info.duration <= ba.MAX_SECONDS
            if r.choices is not None:
                assert r.answers[0] in r.choices and len(set(r.choices)) == 4
            if r.meta["qtype"] in ("word_open", "word_mc"):
                assert r.answers[0] == r.meta["spoken"] in ba.SPOKEN_WORDS
            if r.meta["qtype"] == "digit_open":
                assert r.answers[1] == r.meta["spoken"]
    engines = {r.meta.get("engine") for r in read_records(small / "train.jsonl", small)[0]}
    assert {"espeak-ng", "flite"} <= engines
    again = make_builtin("audio", tmp_path / "again", **SMALL)
    assert tree_hash(again) == tree_hash(small)


def _clean(qtype, **meta):
    return ba.render({"lead_s": 0.2, "peak": 0.8, "snr_db": None, **meta}, qtype, {})


def _dominant_hz(wave):
    spectrum = np.abs(np.fft.rfft(wave))
    return float(np.fft.rfftfreq(wave.size, 1 / RATE)[int(np.argmax(spectrum))])


@pytest.mark.parametrize("count", [1, 3, 5])
def test_beep_clip_has_that_many_beeps(count):
    meta = {"count": count, "freq": 900.0, "beep_s": 0.08, "gaps_s": [0.12] * (count - 1)}
    wave = _clean("beep_count", **meta)
    frames = np.abs(wave[: wave.size // 160 * 160]).reshape(-1, 160).max(axis=1) > 0.1
    onsets = int(np.sum(frames[1:] & ~frames[:-1]) + frames[0])
    assert onsets == count and wave.size <= ba.MAX_SECONDS * RATE


def test_tones_sweeps_and_ramps_have_the_asked_property():
    assert _dominant_hz(_clean("pitch_level", freq=2500.0, seconds=0.5, harmonics=3)) > 1000
    assert _dominant_hz(_clean("pitch_level", freq=150.0, seconds=0.5, harmonics=3)) < 400
    for start, end in ((300.0, 900.0), (900.0, 300.0)):
        wave = _clean("pitch_contour", f_start=start, f_end=end, seconds=1.0)
        lead = int(0.2 * RATE)
        first, last = wave[lead : lead + 4000], wave[lead + 12000 : lead + 16000]
        assert (_dominant_hz(last) > _dominant_hz(first)) == (end > start)
    for louder in (True, False):
        wave = _clean("loudness", freq=500.0, seconds=2.0, louder=louder, range_db=25.0)
        core = wave[int(0.2 * RATE) : int(2.2 * RATE)]
        first, last = (float(np.sqrt(np.mean(h**2))) for h in np.array_split(core, 2))
        assert (last > first) == louder


def test_noise_is_added_at_the_requested_snr():
    meta = {"freq": 500.0, "seconds": 1.0, "harmonics": 1, "lead_s": 0.0, "peak": 0.5}
    clean = ba.render({**meta, "snr_db": None}, "pitch_level", {})
    noisy = ba.render({**meta, "snr_db": 10, "noise_seed": 3}, "pitch_level", {})
    snr = 10 * np.log10(np.mean(clean**2) / np.mean((noisy - clean) ** 2))
    assert abs(snr - 10) < 1.0  # over the whole clip (incl. the 0.15 s tail of silence)
    again = ba.render({**meta, "snr_db": 10, "noise_seed": 3}, "pitch_level", {})
    assert np.array_equal(noisy, again)
