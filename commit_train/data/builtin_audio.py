"""The ``builtin:audio`` benchmark: synthetic speech in many voices, and generated sounds.

* Speech: digits and a 12-word vocabulary spoken by ``espeak-ng`` (6 English accents x
  14 voice variants, random speed and pitch) and ``flite`` (voices kal, kal16, awb, rms,
  slt, random tempo), with white noise at 20, 10 or 5 dB SNR on three clips in four and a
  random lead-in, so a model cannot key on one voice, level or onset. Questions: spoken
  digit (open), its parity (yes/no), which digit (multiple choice), spoken word (open),
  which word (multiple choice).
* Non-speech, made with numpy: how many beeps (1-5), is a tone high or low, is a sweep
  rising or falling, is a sound getting louder or quieter. These are properties a mono
  16 kHz clip really carries (stereo direction would not survive mono loading).

Every clip is 16 kHz mono 16-bit WAV no longer than 5 s, the Whisper encoder window the
recipes use. Randomness is drawn in order in the main thread (one seed per clip), so
rendering clips in parallel threads cannot change the bytes.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from commit_train.data.media import resample
from commit_train.data.questions import (
    NUMBER_WORDS,
    assign_qtypes,
    number_answers,
    shuffled_choices,
    split_rng,
)
from commit_train.data.records import Record
from commit_train.errors import DataError

AUDIO_RATE = 16_000
MAX_SECONDS = 5.0
SOURCE = (
    f"espeak-ng and flite speech with added noise, numpy beeps/tones; {AUDIO_RATE} Hz mono "
    f"16-bit WAV, at most {MAX_SECONDS:g} s"
)
QTYPES = (
    "digit_open",
    "digit_parity",
    "digit_mc",
    "word_open",
    "word_mc",
    "beep_count",
    "pitch_level",
    "pitch_contour",
    "loudness",
)
SPEECH_QTYPES = QTYPES[:5]
SPOKEN_WORDS = [
    "cat", "dog", "bird", "horse", "fish", "red", "green", "blue", "yellow", "apple", "house",
    "water",
]  # fmt: skip
ESPEAK_VOICES = ("en-us", "en", "en-gb-x-rp", "en-gb-scotland", "en-029", "en-us-nyc")
ESPEAK_VARIANTS = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2",
)  # fmt: skip
FLITE_VOICES = ("kal", "kal16", "awb", "rms", "slt")
SNRS_DB = (None, 20, 10, 5)  # None: clean


# ---- synthesis -----------------------------------------------------------------------------
def _exe(name: str) -> str:
    exe = shutil.which(name)
    if exe is None:
        raise DataError(
            f"{name} is not installed; the built-in audio dataset synthesises speech "
            f"with it: apt-get install {name}"
        )
    return exe


def _trim(wave: np.ndarray, rate: int) -> np.ndarray:
    """Cut leading/trailing silence, keeping 50 ms so onsets are not clipped."""
    loud = np.flatnonzero(np.abs(wave) > 0.01 * max(1e-6, float(np.abs(wave).max())) + 1e-4)
    if loud.size:
        pad = int(0.05 * rate)
        wave = wave[max(0, loud[0] - pad) : loud[-1] + pad]
    return wave


def _decode(data: bytes) -> np.ndarray:
    wave, rate = sf.read(io.BytesIO(data), dtype="float32")
    if wave.ndim > 1:
        wave = wave.mean(axis=1)
    return resample(_trim(wave, int(rate)), int(rate), AUDIO_RATE)


def synthesize(text: str, voice: str, speed: int, pitch: int, exe: str | None = None) -> np.ndarray:
    """Speak ``text`` with espeak-ng; mono float32 at 16 kHz, silence trimmed at the ends."""
    cmd = [exe or _exe("espeak-ng"), "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout"]
    proc = subprocess.run([*cmd, text], capture_output=True, check=False, timeout=60)
    if proc.returncode != 0 or not proc.stdout:
        raise DataError(f"espeak-ng failed for {text!r} ({voice}): {proc.stderr.decode()[-300:]}")
    return _decode(proc.stdout)


def synthesize_flite(text: str, voice: str, stretch: float, exe: str | None = None) -> np.ndarray:
    """Speak ``text`` with flite (``stretch`` > 1 is slower); mono float32 at 16 kHz."""
    with tempfile.TemporaryDirectory(prefix="flite-") as tmp:
        wav = Path(tmp) / "out.wav"
        cmd = [exe or _exe("flite"), "-voice", voice, "--setf", f"duration_stretch={stretch}"]
        proc = subprocess.run(
            [*cmd, "-t", text, "-o", str(wav)], capture_output=True, check=False, timeout=60
        )
        if proc.returncode != 0 or not wav.is_file():
            raise DataError(f"flite failed for {text!r} ({voice}): {proc.stderr.decode()[-300:]}")
        return _decode(wav.read_bytes())


# ---- non-speech sounds ---------------------------------------------------------------------
def _fade(wave: np.ndarray, ms: float = 10.0) -> np.ndarray:
    """Raised-cosine ramps at both ends: no clicks, which would be countable 'beeps'."""
    n = min(int(AUDIO_RATE * ms / 1000), wave.size // 2)
    if n:
        ramp = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, n))
        wave[:n] *= ramp
        wave[-n:] *= ramp[::-1]
    return wave


def tone(freq: float, seconds: float, harmonics: int = 1) -> np.ndarray:
    """A steady tone; extra harmonics at 1/k amplitude give a buzzier timbre."""
    t = np.arange(int(AUDIO_RATE * seconds)) / AUDIO_RATE
    wave = sum(np.sin(2 * np.pi * freq * k * t) / k for k in range(1, harmonics + 1))
    return _fade(np.asarray(wave, dtype=np.float64))


def sweep(f_start: float, f_end: float, seconds: float) -> np.ndarray:
    """Exponential (log-frequency) sweep: equal musical steps per second, as heard."""
    t = np.arange(int(AUDIO_RATE * seconds)) / AUDIO_RATE
    k = np.log(f_end / f_start)
    phase = 2 * np.pi * f_start * seconds / k * (np.exp(k * t / seconds) - 1)
    return _fade(np.sin(phase))


def beeps(count: int, freq: float, beep_s: float, gaps_s: list[float]) -> np.ndarray:
    parts = []
    for i in range(count):
        parts.append(tone(freq, beep_s))
        if i < count - 1:
            parts.append(np.zeros(int(AUDIO_RATE * gaps_s[i])))
    return np.concatenate(parts)


def ramp(freq: float, seconds: float, louder: bool, range_db: float) -> np.ndarray:
    """A tone whose level changes by ``range_db`` linearly in dB (as loudness is heard)."""
    wave = tone(freq, seconds, harmonics=3)
    db = np.linspace(-range_db, 0.0, wave.size)
    return wave * 10 ** ((db if louder else db[::-1]) / 20)


# ---- items ---------------------------------------------------------------------------------
def _voice(rng: np.random.Generator) -> dict[str, Any]:
    if rng.random() < 0.6:
        return {
            "engine": "espeak-ng",
            "voice": f"{rng.choice(ESPEAK_VOICES)}+{rng.choice(ESPEAK_VARIANTS)}",
            "speed": int(rng.integers(120, 201)),
            "pitch": int(rng.integers(25, 76)),
        }
    return {
        "engine": "flite",
        "voice": str(rng.choice(FLITE_VOICES)),
        "stretch": round(float(rng.uniform(0.8, 1.3)), 2),
    }


def _speech_item(rng: np.random.Generator, qtype: str) -> tuple[str, list, Any, dict]:
    """``(question, answers, choices, meta)`` of a spoken digit or word."""
    if qtype.startswith("digit"):
        d = int(rng.integers(10))
        meta = {"spoken": NUMBER_WORDS[d], **_voice(rng)}
        if qtype == "digit_open":
            return "What number is spoken?", number_answers(d), None, meta
        if qtype == "digit_parity":
            even = bool(rng.random() < 0.5)  # both wordings keep yes/no balanced
            q = f"Is the spoken number {'even' if even else 'odd'}?"
            return q, ["yes" if (d % 2 == 0) == even else "no"], None, meta
        others = [NUMBER_WORDS[int(i)] for i in rng.choice(np.delete(np.arange(10), d), 3, False)]
        choices = shuffled_choices(rng, NUMBER_WORDS[d], others)
        return "Which number is spoken?", [NUMBER_WORDS[d]], choices, meta
    word = str(rng.choice(SPOKEN_WORDS))
    meta = {"spoken": word, **_voice(rng)}
    if qtype == "word_open":
        return "What word is spoken?", [word], None, meta
    others = [str(w) for w in rng.choice([w for w in SPOKEN_WORDS if w != word], 3, False)]
    return "Which of these words was said?", [word], shuffled_choices(rng, word, others), meta


def _sound_item(rng: np.random.Generator, qtype: str) -> tuple[str, list, Any, dict]:
    """``(question, answers, choices, meta)`` of a generated sound; ``meta`` holds every
    parameter the renderer needs, so the answer can be checked against the signal."""
    if qtype == "beep_count":
        count = int(rng.integers(1, 6))
        meta = {
            "count": count,
            "freq": round(float(rng.uniform(500, 1500)), 1),
            "beep_s": round(float(rng.uniform(0.08, 0.16)), 3),
            "gaps_s": [round(float(g), 3) for g in rng.uniform(0.12, 0.3, count - 1)],
        }
        return "How many beeps are there?", number_answers(count), None, meta
    if qtype == "pitch_level":
        high = bool(rng.random() < 0.5)
        meta = {
            "freq": round(float(rng.uniform(1500, 3500) if high else rng.uniform(120, 300)), 1),
            "seconds": round(float(rng.uniform(0.4, 1.2)), 3),
            "harmonics": int(rng.integers(1, 4)),
        }
        return "Is the tone high or low?", ["high" if high else "low"], None, meta
    if qtype == "pitch_contour":
        rising = bool(rng.random() < 0.5)
        lo = float(rng.uniform(200, 600))
        hi = lo * float(rng.uniform(2, 4))  # at least an octave: unmistakable
        meta = {
            "f_start": round(lo if rising else hi, 1),
            "f_end": round(hi if rising else lo, 1),
            "seconds": round(float(rng.uniform(0.6, 1.5)), 3),
        }
        return "Is the pitch rising or falling?", ["rising" if rising else "falling"], None, meta
    louder = bool(rng.random() < 0.5)
    meta = {
        "louder": louder,
        "freq": round(float(rng.uniform(250, 1000)), 1),
        "seconds": round(float(rng.uniform(1.0, 2.5)), 3),
        "range_db": round(float(rng.uniform(20, 35)), 1),
    }
    q = "Is the sound getting louder or quieter?"
    return q, ["louder" if louder else "quieter"], None, meta


def render(meta: dict[str, Any], qtype: str, exes: dict[str, str]) -> np.ndarray:
    """The clip of one item: content, lead-in, level and noise, all fixed by ``meta``."""
    if qtype in SPEECH_QTYPES:
        if meta["engine"] == "flite":
            core = synthesize_flite(meta["spoken"], meta["voice"], meta["stretch"], exes["flite"])
        else:
            core = synthesize(
                meta["spoken"], meta["voice"], meta["speed"], meta["pitch"], exes["espeak-ng"]
            )
    elif qtype == "beep_count":
        core = beeps(meta["count"], meta["freq"], meta["beep_s"], meta["gaps_s"])
    elif qtype == "pitch_level":
        core = tone(meta["freq"], meta["seconds"], meta["harmonics"])
    elif qtype == "pitch_contour":
        core = sweep(meta["f_start"], meta["f_end"], meta["seconds"])
    else:
        core = ramp(meta["freq"], meta["seconds"], meta["louder"], meta["range_db"])
    core = np.asarray(core, dtype=np.float64)
    core *= meta["peak"] / max(1e-6, float(np.abs(core).max()))
    lead, tail = int(AUDIO_RATE * meta["lead_s"]), int(AUDIO_RATE * 0.15)
    wave = np.concatenate([np.zeros(lead), core, np.zeros(tail)])[: int(AUDIO_RATE * MAX_SECONDS)]
    if meta["snr_db"] is not None:
        rms = float(np.sqrt(np.mean(core**2)))
        noise = np.random.default_rng(meta["noise_seed"]).standard_normal(wave.size)
        wave = wave + noise * rms / 10 ** (meta["snr_db"] / 20)
    return np.clip(wave, -1.0, 1.0).astype(np.float32)


def make_split(out: Path, split: str, n: int, seed: int) -> list[Record]:
    """``n`` records of ``split`` with their WAVs under ``out/audio/<split>/``."""
    rng = split_rng(seed, "audio", split)
    qtypes = assign_qtypes(rng, QTYPES, n)
    exes = {}
    if any(q in SPEECH_QTYPES for q in qtypes):
        exes = {name: _exe(name) for name in ("espeak-ng", "flite")}
    items = []
    for i, qtype in enumerate(qtypes):
        make = _speech_item if qtype in SPEECH_QTYPES else _sound_item
        q, answers, choices, meta = make(rng, qtype)
        meta.update(
            lead_s=round(float(rng.uniform(0.0, 0.5)), 3),
            peak=round(float(rng.uniform(0.3, 0.9)), 3),
            snr_db=SNRS_DB[int(rng.integers(len(SNRS_DB)))],
            noise_seed=int(rng.integers(2**31)),
        )
        items.append((f"audio-{split}-{i:05d}", qtype, q, answers, choices, meta))

    folder = out / "audio" / split
    folder.mkdir(parents=True, exist_ok=True)

    def write(item: tuple) -> None:
        rid, qtype, *_, meta = item
        sf.write(folder / f"{rid}.wav", render(meta, qtype, exes), AUDIO_RATE, subtype="PCM_16")

    # Speech clips wait on a subprocess (GIL released), so a few threads per core pay off.
    with ThreadPoolExecutor(max_workers=min(8, 2 * (os.cpu_count() or 1))) as pool:
        list(pool.map(write, items))
    return [
        Record(
            id=rid,
            modality="audio",
            media=f"audio/{split}/{rid}.wav",
            question=q,
            answers=answers,
            choices=choices,
            split=split,
            meta={"qtype": qtype, **meta},
        )
        for rid, qtype, q, answers, choices, meta in items
    ]
