"""Clotho-AQA (Lipping et al., EUSIPCO 2022) in its published layout.

Layout followed (Zenodo record 6473207, as read by public loaders such as audidata's
``ClothoAQA`` and the AudioBench/LTU conversion scripts)::

    <root>/clotho_aqa_{train,val,test}.csv   file_name,QuestionText,answer,confidence
    <root>/clotho_aqa_metadata.csv           per-clip Freesound metadata (not needed here)
    <root>/audio_files/<file_name>           the 15-30 s WAV clips (audio_files.zip)

Each CSV has one row per *annotator answer*: every question was answered by three
annotators, each also saying how confident they were (``yes``/``maybe``/``no``). The
rows of one (file, question) pair become one record whose ``answers`` are all the
annotators' answers (accuracy counts a prediction matching any of them; majority voting,
if wanted, is the metric's business), with ``meta["confidences"]`` aligned to them.

Variants accepted: the question column named ``QuestionText`` (Zenodo) or ``question``
(re-shared copies); the confidence column present or absent; the clips under
``audio_files/`` (Zenodo zip) or ``audio/``; UTF-8 (with or without BOM) or Latin-1.
Rows with an empty answer are dropped (counted as ``empty_answer_rows``; a question
left with no answer at all as ``empty_answer``). ``confident_only=True`` keeps
only answers whose annotator said ``yes`` (a question left with none is counted as
``low_confidence``).

``meta["qtype"]`` is ``yes_no`` when most answers are yes/no, else ``one_word`` (the
paper's two question types, reported separately); record ids are
``<file_name>#<n>``, n numbering the clip's questions in file order.
"""

from __future__ import annotations

from pathlib import Path

from commit_train.data.records import Record
from evaluation.formats._common import (
    LoadResult,
    Tally,
    cell,
    check_root,
    check_split,
    finish,
    first_dir,
    media_ref,
    read_csv,
    require_file,
)

NAME = "clotho_aqa"
SPLITS = ("train", "val", "test")
AUDIO_DIRS = ("audio_files", "audio")
COLUMNS = (("file_name",), ("QuestionText", "question"), ("answer",))
EXPECTED = "a CSV with columns file_name, QuestionText (or question), answer[, confidence]"
YES_NO = frozenset({"yes", "no"})


def load(root: str | Path, split: str, *, confident_only: bool = False) -> LoadResult:
    """Load one Clotho-AQA split as canonical audio records (see the module docstring)."""
    root = check_root(root, NAME)
    check_split(NAME, split, SPLITS)
    path = require_file(root / f"clotho_aqa_{split}.csv", EXPECTED)
    rows, cols = read_csv(path, COLUMNS, EXPECTED)
    confidence_col = next((c for c in rows[0] if c.lower() == "confidence"), None) if rows else None
    audio_dir = first_dir(root, AUDIO_DIRS, "Clotho-AQA audio")

    tally = Tally()
    # (file, question) -> [(answer, confidence)], in first-seen order.
    groups: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for row in rows:
        file_name = cell(row, cols["file_name"])
        question = cell(row, cols["QuestionText"])
        answer = cell(row, cols["answer"])
        if not file_name and not question and not answer:
            continue  # blank line at the end of some copies
        key = (file_name, question)
        if key not in groups:
            groups[key] = []
            tally.examples += 1
        if not answer:
            tally.skip("empty_answer_rows")
            continue
        groups[key].append((answer, cell(row, confidence_col).lower()))

    records: list[Record] = []
    questions_seen: dict[str, int] = {}
    for (file_name, question), answered in groups.items():
        n = questions_seen.get(file_name, 0)
        questions_seen[file_name] = n + 1
        if confident_only:
            answered = [(a, c) for a, c in answered if c == "yes"]
        if not file_name or not question:
            tally.skip("missing_file_or_question")
            continue
        if not answered:
            tally.skip("low_confidence" if confident_only else "empty_answer")
            continue
        audio = audio_dir / file_name
        if not audio.is_file():
            tally.skip("media_missing")
            continue
        answers = [a for a, _ in answered]
        is_yes_no = sum(a.lower() in YES_NO for a in answers) * 2 > len(answers)
        meta: dict[str, object] = {"qtype": "yes_no" if is_yes_no else "one_word"}
        if confidence_col is not None:
            meta["confidences"] = [c for _, c in answered]
        records.append(
            Record(
                id=f"{file_name}#{n}",
                modality="audio",
                media=media_ref(audio, root),
                question=question,
                answers=answers,
                split=split,
                meta=meta,
            )
        )
    return finish(records, tally, NAME, split, path)
