"""Whisper reference for the ``builtin:audio`` benchmark's speech questions.

Why: a tuned model's accuracy on spoken digits and words means little without knowing how
hard the clips are for a real speech recogniser. Here the real Whisper tiny.en (the same
weights the audio recipes use as encoder, prepared by ``commit prepare``) transcribes each
test clip of the speech question types, and a fixed rule answers the question from the
transcript alone:

* the transcript is lower-cased, stripped of punctuation and split into words; numerals
  become number words ("7" -> "seven") and the common homophones of digits are mapped
  ("to"/"too" -> "two", "for" -> "four", "won" -> "one", "ate" -> "eight", "oh" -> "zero");
* ``digit_open``: the first number word; ``digit_parity``: its parity against the question;
  ``*_mc``: the first choice that occurs in the transcript; ``word_open``: the first
  vocabulary word (a plural "s" dropped), else the transcript's first word;
* no guess is made when the rule finds nothing: the question counts as wrong.

The non-speech types (beeps, tones, loudness) are not applicable to a transcriber. The
numbers are printed and written into the "Whisper reference (audio benchmark)" section of
``BENCHMARKS.md`` (only that section is replaced).

Run:  .venv/bin/python benchmarks/whisper_reference.py
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from commit_train.data.builtin import chance_levels, resolve_data_source
from commit_train.data.builtin_audio import AUDIO_RATE, SPEECH_QTYPES, SPOKEN_WORDS
from commit_train.data.media import load_audio
from commit_train.data.questions import NUMBER_WORDS
from commit_train.data.records import Record, read_records
from commit_train.modeling.pretrained import PARTS, cache_dir

SECTION = "## Whisper reference (audio benchmark)"
COMMAND = ".venv/bin/python benchmarks/whisper_reference.py"
HEADER = (  # the same header the other benchmark scripts start the file with
    "# Benchmarks\n\nEvery figure here was produced by a script in `benchmarks/`; each section "
    "gives the exact command and the machine. Re-run a script to refresh its section.\n"
)
HOMOPHONES = {"to": "two", "too": "two", "for": "four", "won": "one", "ate": "eight", "oh": "zero"}


def words_of(transcript: str) -> list[str]:
    """Normalised words of a transcript, digits and digit homophones as number words."""
    out = []
    for tok in re.findall(r"[a-z0-9']+", transcript.lower()):
        if tok.isdigit():
            out += [NUMBER_WORDS[int(c)] for c in tok]
        else:
            out.append(HOMOPHONES.get(tok, tok))
    return out


def answer_from_transcript(record: Record, transcript: str) -> str | None:
    """The rule's answer to ``record``'s question, or ``None`` when it finds nothing."""
    words = words_of(transcript)
    qtype = record.meta["qtype"]
    if record.choices:
        found = [c for w in words for c in record.choices if w == c.lower()]
        return found[0] if found else None
    if qtype in ("digit_open", "digit_parity"):
        digit = next((NUMBER_WORDS.index(w) for w in words if w in NUMBER_WORDS), None)
        if digit is None:
            return None
        if qtype == "digit_open":
            return NUMBER_WORDS[digit]
        asks_even = "even" in record.question.lower()
        return "yes" if (digit % 2 == 0) == asks_even else "no"
    vocab = [w for w in words if w in SPOKEN_WORDS or w.rstrip("s") in SPOKEN_WORDS]
    if vocab:
        return vocab[0] if vocab[0] in SPOKEN_WORDS else vocab[0].rstrip("s")
    return words[0] if words else None


def is_correct(record: Record, answer: str | None) -> bool:
    return answer is not None and answer.lower() in {a.lower() for a in record.answers}


def transcribe(paths: list[Path], model_dir: Path, device: str, batch: int) -> list[str]:
    from transformers import WhisperForConditionalGeneration, WhisperProcessor
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # per-batch generate() notices drown the table

    processor = WhisperProcessor.from_pretrained(model_dir)
    model = WhisperForConditionalGeneration.from_pretrained(model_dir).to(device).eval()
    out: list[str] = []
    for i in range(0, len(paths), batch):
        waves = [load_audio(p, AUDIO_RATE) for p in paths[i : i + batch]]
        feats = processor(waves, sampling_rate=AUDIO_RATE, return_tensors="pt").input_features
        with torch.inference_mode():
            ids = model.generate(feats.to(device), max_new_tokens=24)
        out += processor.batch_decode(ids, skip_special_tokens=True)
    return out


def machine(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(0)
    cpu = platform.processor() or "CPU"
    try:
        name = next(
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        )
        cpu = name
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, no GPU used"


def write_section(path: Path, body: str) -> None:
    """Replace this script's own section of ``path`` (or append it), keeping the others."""
    text = path.read_text(encoding="utf-8") if path.is_file() else HEADER
    start = text.find(SECTION)
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + body
    else:
        nxt = text.find("\n## ", start + len(SECTION))
        text = text[:start] + body.rstrip("\n") + "\n\n" + (text[nxt + 1 :] if nxt >= 0 else "")
    tmp = path.with_name(f".{path.name}.whisper-tmp")
    tmp.write_text(text.rstrip("\n") + "\n", encoding="utf-8")
    os.replace(tmp, path)  # other scripts rewrite their sections of the same file


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--split", default="test")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--out", default=str(Path(__file__).parents[1] / "BENCHMARKS.md"))
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args(argv)

    jsonl, root = resolve_data_source("builtin:audio", args.split)
    records, _ = read_records(jsonl, root, check_media=False)
    speech = [r for r in records if r.meta.get("qtype") in SPEECH_QTYPES]
    start = time.perf_counter()
    texts = transcribe(
        [r.media_path(root) for r in speech],
        cache_dir() / PARTS["whisper"],
        args.device,
        args.batch,
    )
    took = time.perf_counter() - start

    per: dict[str, list[bool]] = defaultdict(list)
    unanswered: dict[str, int] = defaultdict(int)
    by_cond: dict[str, list[bool]] = defaultdict(list)  # where the clips are hard
    for r, text in zip(speech, texts, strict=True):
        ans = answer_from_transcript(r, text)
        per[r.meta["qtype"]].append(is_correct(r, ans))
        snr = r.meta.get("snr_db")
        by_cond[f"SNR {snr} dB" if snr is not None else "clean"].append(is_correct(r, ans))
        by_cond[f"{r.meta['engine']} voices"].append(is_correct(r, ans))
        unanswered[r.meta["qtype"]] += ans is None
    chance = chance_levels(speech)
    rows = [
        f"| `{qt}` | {len(per[qt])} | {np.mean(per[qt]):.3f} | {unanswered[qt]} | "
        f"{chance[qt]:.3f} |"
        for qt in SPEECH_QTYPES
        if per[qt]
    ]
    all_ok = [ok for qt in SPEECH_QTYPES for ok in per[qt]]
    rows.append(
        f"| **speech overall** | {len(all_ok)} | {np.mean(all_ok):.3f} | "
        f"{sum(unanswered.values())} | {chance['overall']:.3f} |"
    )
    rows += [
        f"| `{qt}` | – | not applicable (no speech) | – | – |"
        for qt in sorted({r.meta["qtype"] for r in records} - set(SPEECH_QTYPES))
    ]
    body = "\n".join(
        [
            SECTION,
            "",
            "Real Whisper tiny.en (`cache://whisper-tiny.en`, greedy decoding) transcribes every "
            f"`{args.split}` clip of the speech question types of `builtin:audio` (default "
            "sizes, seed 0); a fixed rule answers from the transcript (see the docstring of "
            "`benchmarks/whisper_reference.py`; no answer found = wrong). Chance is the "
            "majority-class baseline of `chance_levels` on the same records.",
            "",
            f"- command: `{COMMAND}`",
            f"- machine: {machine(args.device)}; transcription took {took:.1f} s",
            "",
            "| question type | n | accuracy | no answer found | chance (majority) |",
            "|---|---:|---:|---:|---:|",
            *rows,
            "",
            "Speech accuracy by condition (all speech types together): "
            + "; ".join(f"{k} {np.mean(v):.3f} (n={len(v)})" for k, v in sorted(by_cond.items()))
            + ".",
            "",
        ]
    )
    print(body)
    if not args.no_write:
        write_section(Path(args.out), body)
        print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
