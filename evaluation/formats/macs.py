"""MACS, Multi-Annotator Captioned Soundscapes (Martin & Mesaros, DCASE 2021), in its
published layout.

Layout followed (Zenodo record 5114771, and aac-datasets' ``load_macs_dataset``, which
reads ``yaml.safe_load(MACS.yaml)["files"]``)::

    <root>/MACS.yaml
        files:
        - filename: airport-lisbon-1000-40000-a.wav
          annotations:
          - annotator_id: 123
            sentence: people talking and walking while an announcement plays
            tags: [adults_talking, announcement, footsteps]
          - ...
    <root>/audio/<filename>   the TAU Urban Acoustic Scenes 2019 development clips

MACS publishes no splits (3930 clips, all annotated); the loader's only split is
``full`` and staging does any train/eval partition. Each clip becomes one captioning
record: ``question`` = "Describe the sound scene.", ``answers`` = every annotator's
sentence (captioning metrics score against all references),
``meta = {"qtype": "caption", "annotator_ids": [...], "tags": [[...], ...]}`` aligned
with the answers.

Variants accepted: the clips under ``audio/`` (aac-datasets layout) or still in the TAU
archive's ``TAU-urban-acoustic-scenes-2019-development/audio/``; a ``filename`` that
already carries a folder (only its base name is looked up); annotator ids as numbers or
strings. ``MACS_competence.csv`` (annotator competence) is not used. Annotations without
a sentence are dropped; a clip left with none is counted as ``no_captions``, a clip
listed again as ``duplicate_file``.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

from commit_train.data.records import Record
from commit_train.errors import DataError
from evaluation.formats._common import (
    LoadResult,
    Tally,
    check_root,
    check_split,
    finish,
    first_dir,
    media_ref,
    read_yaml,
    require_file,
)

NAME = "macs"
SPLITS = ("full",)
QUESTION = "Describe the sound scene."
AUDIO_DIRS = ("audio", "TAU-urban-acoustic-scenes-2019-development/audio")
EXPECTED = (
    "a YAML mapping with a 'files' list of {filename, annotations: "
    "[{annotator_id, sentence, tags}]}"
)


def load(root: str | Path, split: str = "full") -> LoadResult:
    """Load MACS as canonical audio captioning records (see the module docstring)."""
    root = check_root(root, NAME)
    check_split(NAME, split, SPLITS)
    path = require_file(root / "MACS.yaml", EXPECTED)
    doc = read_yaml(path, EXPECTED)
    if not isinstance(doc, dict) or not isinstance(doc.get("files"), list):
        raise DataError(f"{path.name}: expected {EXPECTED} (in {path})")
    audio_dir = first_dir(root, AUDIO_DIRS, "MACS (TAU Urban Acoustic Scenes 2019) audio")

    tally = Tally()
    records: list[Record] = []
    seen: set[str] = set()
    for i, entry in enumerate(doc["files"]):
        tally.examples += 1
        where = f"{path}: files[{i}]"
        filename = entry.get("filename") if isinstance(entry, dict) else None
        annotations = entry.get("annotations") if isinstance(entry, dict) else None
        if not isinstance(filename, str) or not filename.strip():
            raise DataError(f"{where}: field 'filename' is missing; expected {EXPECTED}")
        if not isinstance(annotations, list):
            raise DataError(f"{where}: field 'annotations' must be a list; expected {EXPECTED}")
        name = PurePosixPath(filename.strip()).name
        if name in seen:  # one record per clip; a repeated entry would duplicate its id
            tally.skip("duplicate_file")
            continue
        seen.add(name)
        sentences, annotators, tags = _captions(annotations, where)
        if not sentences:
            tally.skip("no_captions")
            continue
        audio = audio_dir / name
        if not audio.is_file():
            tally.skip("media_missing")
            continue
        records.append(
            Record(
                id=PurePosixPath(name).stem,
                modality="audio",
                media=media_ref(audio, root),
                question=QUESTION,
                answers=sentences,
                split=split,
                meta={"qtype": "caption", "annotator_ids": annotators, "tags": tags},
            )
        )
    return finish(records, tally, NAME, split, path)


def _captions(annotations: list[Any], where: str) -> tuple[list[str], list[str], list[list[str]]]:
    sentences: list[str] = []
    annotators: list[str] = []
    tags: list[list[str]] = []
    for j, ann in enumerate(annotations):
        if not isinstance(ann, dict):
            raise DataError(
                f"{where}.annotations[{j}]: expected a mapping with annotator_id, sentence, tags"
            )
        sentence = ann.get("sentence")
        if not isinstance(sentence, str) or not sentence.strip():
            continue
        sentences.append(sentence.strip())
        annotators.append(str(ann.get("annotator_id", "")))
        raw_tags = ann.get("tags") or []
        tags.append([str(t) for t in raw_tags] if isinstance(raw_tags, list) else [])
    return sentences, annotators, tags
