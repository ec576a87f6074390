"""Media decoding: RGB images, mono float32 audio resampled to the requested rate."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from commit_train.data.media import check_audio, load_audio, load_image, resample
from commit_train.errors import DataError

from .conftest import write_tone


def _peak_hz(wave: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(wave))
    return float(np.fft.rfftfreq(len(wave), 1 / rate)[spectrum.argmax()])


@pytest.mark.parametrize(
    ("name", "rate", "channels"),
    [("a.wav", 8_000, 1), ("b.flac", 44_100, 2), ("c.wav", 16_000, 1), ("d.wav", 44_101, 1)],
)
def test_load_audio_resamples_to_mono(tmp_path, name, rate, channels):
    path = write_tone(tmp_path / name, rate=rate, seconds=0.5, freq=440.0, channels=channels)
    wave = load_audio(path, 16_000)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert abs(len(wave) - 8_000) <= 1
    assert abs(_peak_hz(wave, 16_000) - 440.0) < 5.0  # same pitch after resampling


def test_resample_identity_and_empty():
    x = np.ones(10, dtype=np.float32)
    assert resample(x, 16_000, 16_000) is x
    assert resample(np.zeros(0, dtype=np.float32), 8_000, 16_000).size == 0


def test_load_audio_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_audio(tmp_path / "none.wav", 16_000)
    (tmp_path / "bad.wav").write_bytes(b"junk")
    with pytest.raises(DataError, match="cannot be decoded"):
        load_audio(tmp_path / "bad.wav", 16_000)
    sf.write(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32), 16_000)
    with pytest.raises(DataError, match="no samples"):
        load_audio(tmp_path / "empty.wav", 16_000)


def test_load_image_rgb_and_transparency(tmp_path):
    Image.new("L", (5, 4), 10).save(tmp_path / "g.png")
    img = load_image(tmp_path / "g.png")
    assert img.mode == "RGB" and img.size == (5, 4)
    Image.new("RGBA", (3, 3), (0, 0, 0, 0)).save(tmp_path / "t.png")
    assert load_image(tmp_path / "t.png").getpixel((1, 1)) == (255, 255, 255)
    (tmp_path / "bad.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(DataError, match="cannot be decoded"):
        load_image(tmp_path / "bad.png")
    with pytest.raises(DataError, match="does not exist"):
        load_image(tmp_path / "missing.png")


def _truncated_wav(tmp_path, keep: int = 1000):
    """A 1 s 16 kHz PCM WAV (32 044 bytes) cut to its first ``keep`` bytes."""
    full = write_tone(tmp_path / "full.wav", rate=16_000, seconds=1.0)
    cut = tmp_path / "cut.wav"
    cut.write_bytes(full.read_bytes()[:keep])
    return full, cut


def test_truncated_wav_is_reported_not_read_as_a_short_clip(tmp_path):
    """Issue 16.2: libsndfile reads the cut file as a 0.03 s clip without complaint."""
    full, cut = _truncated_wav(tmp_path)
    assert check_audio(full, 16_000) is None
    reason, msg = check_audio(cut, 16_000)
    assert reason == "audio_truncated"
    assert "32000 bytes" in msg and "(1.000 s)" in msg and "956" in msg
    with pytest.raises(DataError, match="is truncated"):
        load_audio(cut, 16_000)


def test_wav_with_chunks_after_the_data_is_not_truncated(tmp_path):
    full = write_tone(tmp_path / "full.wav", rate=16_000, seconds=0.1)
    with open(full, "ab") as f:  # a LIST chunk after the samples, as some editors write
        f.write(b"LIST" + (4).to_bytes(4, "little") + b"INFO")
    assert check_audio(full, 16_000) is None
    assert len(load_audio(full, 16_000)) == 1600
