"""Media loading and cheap media checks.

Loading is what the dataset does per example (decode, convert to the form the processor
expects); checking is what validation does for every record up front, so it only reads
headers: a 50k-record dataset must validate in seconds, and a bad file must be found
before a long run starts rather than at step 40k.

Audio goes through ``soundfile`` (WAV/FLAC/OGG via libsndfile) and is resampled with
``scipy.signal.resample_poly``; no torchaudio/ffmpeg dependency is needed.
"""

from __future__ import annotations

import math
import struct
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image, ImageOps, UnidentifiedImageError
from scipy import signal

from commit_train.errors import DataError

# Sample rates we accept. Below 1 kHz there is no speech left to hear; above 768 kHz (the
# highest rate audio interfaces offer) the header is almost certainly garbage.
MIN_SAMPLE_RATE = 1_000
MAX_SAMPLE_RATE = 768_000
# resample_poly designs a FIR filter whose length grows with max(up, down); past this the
# ratio is pathological (e.g. 44101 -> 16000) and an FFT resample is far cheaper.
_MAX_POLY_FACTOR = 1_000


def load_image(path: str | Path) -> Image.Image:
    """Decode an image file to an RGB ``PIL.Image``.

    EXIF orientation is applied (phone photos are otherwise sideways) and transparent
    images are composited over white, because ``convert("RGB")`` alone turns transparent
    pixels into whatever colour they happened to store, usually black.
    """
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
            if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
                rgba = img.convert("RGBA")
                background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                return Image.alpha_composite(background, rgba).convert("RGB")
            return img.convert("RGB")
    except FileNotFoundError:
        raise DataError(f"image file {path} does not exist") from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DataError(f"image file {path} cannot be decoded: {e}") from None


def resample(wave: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    """Resample a 1-D waveform; polyphase filtering for ordinary ratios, FFT otherwise."""
    if orig_rate == target_rate or wave.size == 0:
        return wave.astype(np.float32, copy=False)
    ratio = Fraction(int(target_rate), int(orig_rate))
    up, down = ratio.numerator, ratio.denominator
    if max(up, down) <= _MAX_POLY_FACTOR:
        out = signal.resample_poly(wave, up, down)
    else:
        n_out = max(1, int(round(wave.shape[0] * target_rate / orig_rate)))
        out = signal.resample(wave, n_out)
    return np.asarray(out, dtype=np.float32)


def load_audio(path: str | Path, sampling_rate: int) -> np.ndarray:
    """Read an audio file as a mono float32 waveform at ``sampling_rate`` Hz.

    Multi-channel audio is averaged to mono (encoders of speech LLMs take one channel).
    """
    path = Path(path)
    if sampling_rate is None or sampling_rate <= 0:
        raise ValueError(f"sampling_rate must be a positive integer, got {sampling_rate!r}")
    if not path.is_file():  # libsndfile reports a missing file as an opaque "System error"
        raise DataError(f"audio file {path} does not exist")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except FileNotFoundError:
        raise DataError(f"audio file {path} does not exist") from None
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        raise DataError(f"audio file {path} cannot be decoded: {e}") from None
    if data.shape[0] == 0:
        raise DataError(f"audio file {path} contains no samples")
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise DataError(
            f"audio file {path} has sample rate {rate} Hz, outside the usable range "
            f"{MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz"
        )
    wave = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    wave = resample(wave, int(rate), int(sampling_rate))
    if not np.isfinite(wave).all():
        raise DataError(f"audio file {path} contains NaN or infinite samples")
    return wave


# ---- cheap checks used by validation ------------------------------------------------------
def check_image(path: Path) -> tuple[str, str] | None:
    """``None`` if the image header is sound, else ``(reason, message)``.

    ``Image.open`` reads only the header; ``verify`` walks the chunk structure (CRCs for
    PNG) without decoding pixels, which catches most truncated or corrupt files cheaply.
    """
    try:
        with Image.open(path) as img:
            width, height = img.size
            img.verify()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        return "image_unreadable", f"image {path} cannot be read: {e}"
    if width <= 0 or height <= 0:
        return "image_unreadable", f"image {path} has size {width}x{height}"
    return None


def _wav_header_rate(path: Path) -> int | None:
    """Sample rate from a RIFF/WAVE ``fmt`` chunk, read by hand.

    libsndfile refuses to open a WAV whose header says 0 Hz and only reports an opaque
    "SF_INFO struct incomplete"; parsing the header lets us tell the user the real cause.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return None
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    pos = 12
    while pos + 8 <= len(head):
        chunk, size = head[pos : pos + 4], struct.unpack("<I", head[pos + 4 : pos + 8])[0]
        if chunk == b"fmt " and pos + 16 <= len(head):
            return struct.unpack("<I", head[pos + 12 : pos + 16])[0]
        pos += 8 + size + (size & 1)
    return None


def check_audio(path: Path, sampling_rate: int | None = None) -> tuple[str, str] | None:
    """``None`` if the audio header is usable, else ``(reason, message)``.

    Reads the header only (``soundfile.info``): frame count, rate and channels are all we
    need to know the file decodes to something non-empty that can be resampled.
    """
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        rate = _wav_header_rate(path)
        if rate is not None and not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
            return "audio_sample_rate", (
                f"audio {path} declares a sample rate of {rate} Hz, which cannot be "
                f"resampled (usable: {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz)"
            )
        return "audio_unreadable", f"audio {path} cannot be read: {e}"
    rate = int(info.samplerate)
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        target = f" to {sampling_rate} Hz" if sampling_rate else ""
        return "audio_sample_rate", (
            f"audio {path} has sample rate {rate} Hz, which cannot be resampled{target} "
            f"(usable: {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz)"
        )
    if info.frames <= 0 or info.channels <= 0:
        return "audio_empty", f"audio {path} contains no samples"
    if sampling_rate and math.ceil(info.frames * sampling_rate / rate) < 1:
        return "audio_empty", f"audio {path} is too short to hold one sample at {sampling_rate} Hz"
    return None
