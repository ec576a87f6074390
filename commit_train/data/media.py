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
from dataclasses import dataclass
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
    truncated = _wav_truncation(path)  # libsndfile would silently return the part left
    if truncated is not None:
        raise DataError(truncated)
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


@dataclass(frozen=True)
class _WavHeader:
    rate: int | None  # from the fmt chunk
    block_align: int | None  # bytes per frame (all channels)
    data_size: int | None  # bytes of samples the data chunk declares
    data_available: int | None  # bytes of the data chunk actually in the file


def _wav_header(path: Path) -> _WavHeader | None:
    """The ``fmt`` and ``data`` chunks of a RIFF/WAVE file, read by hand (None if the file
    is not RIFF/WAVE).

    Why by hand: libsndfile refuses a WAV whose header says 0 Hz with an opaque "SF_INFO
    struct incomplete", and it reads a *truncated* WAV without complaint, reporting only
    the frames that are there (a 1 s clip cut to 1000 bytes becomes a 0.03 s clip). The
    header's data size against the file's length tells the real cause in both cases.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            rate = block_align = None
            pos = 12
            while True:
                f.seek(pos)
                chunk = f.read(8)
                if len(chunk) < 8:
                    return _WavHeader(rate, block_align, None, None)
                name, size = chunk[:4], struct.unpack("<I", chunk[4:8])[0]
                if name == b"fmt ":
                    fmt = f.read(16)
                    if len(fmt) >= 14:
                        rate = struct.unpack("<I", fmt[4:8])[0]
                        block_align = struct.unpack("<H", fmt[12:14])[0]
                elif name == b"data":
                    f.seek(0, 2)
                    available = max(0, f.tell() - (pos + 8))
                    return _WavHeader(rate, block_align, size, available)
                pos += 8 + size + (size & 1)
    except OSError:
        return None


def _wav_header_rate(path: Path) -> int | None:
    header = _wav_header(path)
    return header.rate if header is not None else None


def _wav_truncation(path: Path) -> str | None:
    """A message if the WAV holds fewer sample bytes than its header declares, else None.

    0xFFFFFFFF (RF64, or a stream written without knowing its length) means "unknown" and
    is not checked."""
    h = _wav_header(path)
    if h is None or h.data_size is None or h.data_available is None:
        return None
    if h.data_size in (0, 0xFFFFFFFF) or h.data_available >= h.data_size:
        return None

    def secs(n: int) -> str:
        if h.rate and h.block_align:
            return f" ({n / h.block_align / h.rate:.3f} s)"
        return ""

    return (
        f"audio {path} is truncated: its header declares {h.data_size} bytes of samples"
        f"{secs(h.data_size)} but the file holds {h.data_available}{secs(h.data_available)}; "
        "the download or copy was probably cut short"
    )


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
    truncated = _wav_truncation(path)
    if truncated is not None:
        return "audio_truncated", truncated
    if sampling_rate and math.ceil(info.frames * sampling_rate / rate) < 1:
        return "audio_empty", f"audio {path} is too short to hold one sample at {sampling_rate} Hz"
    return None
