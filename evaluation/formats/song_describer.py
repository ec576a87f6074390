"""Song Describer Dataset, SDD (Manco et al., NeurIPS 2023 ML4Audio workshop), in its
published layout.

Layout followed (Zenodo record 10072001; the data card in
https://github.com/mulab-mir/song-describer-dataset, ``docs/datacard.md``)::

    <root>/song_describer.csv   caption_id,track_id,caption,is_valid_subset,familiarity,
                                artist_id,album_id,path,duration
    <root>/audio/<NN>/<track_id>.2min.mp3   2-minute 320 kbps MP3 excerpts

The ``path`` column is "the relative path to the audio file" in the MTG-Jamendo naming
(``NN/<track_id>.mp3``) while the published files carry a ``.2min.mp3`` suffix, so both
``audio/<path>`` and ``audio/<NN>/<track_id>.2min.mp3`` are tried, then ``<path>``
relative to the root (copies that put the real file name in the CSV).

SDD is an evaluation set with one published split; its data card defines two subsets,
which are this loader's splits: ``full`` (all captions) and ``valid`` (rows with
``is_valid_subset`` true). Captions are grouped by track: one captioning record per
track with ``question`` = "Describe the music.", ``answers`` = all its captions,
``meta = {"qtype": "caption", "caption_ids": [...]}``; record ids are the track ids.
Rows with an empty caption are dropped (``empty_caption_rows``).
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from commit_train.data.records import Record
from commit_train.errors import DataError
from evaluation.formats._common import (
    LoadResult,
    Tally,
    cell,
    check_root,
    check_split,
    finish,
    media_ref,
    read_csv,
    require_file,
)

NAME = "song_describer"
SPLITS = ("full", "valid")
QUESTION = "Describe the music."
COLUMNS = (("caption_id",), ("track_id",), ("caption",), ("path",))
EXPECTED = "a CSV with columns caption_id, track_id, caption, path[, is_valid_subset, ...]"
TRUE = frozenset({"true", "1", "yes"})


def load(root: str | Path, split: str = "full") -> LoadResult:
    """Load SDD as canonical audio captioning records (see the module docstring)."""
    root = check_root(root, NAME)
    check_split(NAME, split, SPLITS)
    path = require_file(root / "song_describer.csv", EXPECTED)
    rows, cols = read_csv(path, COLUMNS, EXPECTED)
    valid_col = next((c for c in rows[0] if c.strip() == "is_valid_subset"), None) if rows else None
    if split == "valid" and rows and valid_col is None:
        raise DataError(
            f"{path}: split 'valid' needs the 'is_valid_subset' column, which this copy lacks"
        )

    tally = Tally()
    # track_id -> (csv path, [(caption_id, caption)]) in first-seen order.
    tracks: dict[str, tuple[str, list[tuple[str, str]]]] = {}
    for row in rows:
        if split == "valid" and cell(row, valid_col).lower() not in TRUE:
            continue
        track_id = cell(row, cols["track_id"])
        caption = cell(row, cols["caption"])
        audio_path = cell(row, cols["path"])
        if not track_id and not caption:
            continue  # blank trailing line
        if track_id not in tracks:
            tracks[track_id] = (audio_path, [])
            tally.examples += 1
        if not caption:
            tally.skip("empty_caption_rows")
            continue
        tracks[track_id][1].append((cell(row, cols["caption_id"]), caption))

    records: list[Record] = []
    for track_id, (audio_path, captions) in tracks.items():
        if not track_id:
            tally.skip("missing_track_id")
            continue
        if not captions:
            tally.skip("no_captions")
            continue
        audio = _find_audio(root, audio_path)
        if audio is None:
            tally.skip("media_missing")
            continue
        records.append(
            Record(
                id=track_id,
                modality="audio",
                media=media_ref(audio, root),
                question=QUESTION,
                answers=[c for _, c in captions],
                split=split,
                meta={"qtype": "caption", "caption_ids": [i for i, _ in captions]},
            )
        )
    return finish(records, tally, NAME, split, path)


def _find_audio(root: Path, csv_path: str) -> Path | None:
    if not csv_path:
        return None
    rel = PurePosixPath(csv_path.replace("\\", "/"))
    two_min = rel.with_name(rel.name.removesuffix(".mp3") + ".2min.mp3")
    for candidate in (root / "audio" / rel, root / "audio" / two_min, root / rel):
        if candidate.is_file():
            return candidate
    return None
