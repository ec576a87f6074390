"""Dataset-format loaders against tiny fixtures written in each benchmark's published
layout (file names, folder structure, field/column names as released), plus the error
cases a user hits with a wrong or incomplete download."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml
from PIL import Image

from commit_train.data.records import read_records, write_records
from commit_train.errors import DataError
from evaluation.formats import (
    LOADERS,
    SPLITS,
    detect_format,
    known_formats,
    load_dataset_dir,
)


# ---- fixture writers (published layouts) ----------------------------------------------------
def _image(path: Path, colour=(200, 30, 30)) -> None:
    """A tiny real image; PNG or JPEG from the suffix, as the dataset ships it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), colour).save(path)


def _audio(path: Path, fmt: str = "WAV") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    wave = 0.1 * np.sin(np.linspace(0, 200, 8000)).astype(np.float32)
    sf.write(str(path), wave, 16000, format=fmt)


def _csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


TEXTVQA_ANSWERS = ["nokia"] * 7 + ["nokia phone", "nokia", "nokla"]


def _tv(qid: int, image_id: str, question: str, split: str, answers=None, **extra) -> dict:
    item = {"question": question, "image_id": image_id, "question_id": qid, "set_name": split}
    if answers is not None:  # the test split publishes no answers
        item["answers"] = answers
    return {**item, **extra}


def write_textvqa(root: Path, image_dir: str = "train_images") -> Path:
    train = [
        _tv(
            34602,
            "0054c91397f2fe05",
            "what brand is the phone?",
            "train",
            TEXTVQA_ANSWERS,
            image_classes=["Mobile phone"],
            flickr_original_url="https://example.org/a.jpg",
            image_width=8,
            image_height=8,
            question_tokens=["what", "brand", "is", "the", "phone"],
        ),
        _tv(34603, "00685bc495504d61", "what does the sign say?", "train", ["stop"] * 10),
        _tv(34604, "ffff000000000000", "what number?", "train", ["3"] * 10),  # no image
    ]
    val = [_tv(5000, "0a0bc91825468c45", "what time is it?", "val", ["5:40"] * 10)]
    test = [_tv(90000, "0a1b2c3d4e5f6a7b", "who made this?", "test")]
    for split, items in (("train", train), ("val", val), ("test", test)):
        doc = {"dataset_type": split, "dataset_name": "textvqa", "dataset_version": "0.5.1"}
        doc["data"] = items
        (root / f"TextVQA_0.5.1_{split}.json").write_text(json.dumps(doc))
    for image_id in ("0054c91397f2fe05", "00685bc495504d61", "0a0bc91825468c45"):
        _image(root / image_dir / f"{image_id}.jpg")
    _image(root / "test_images" / "0a1b2c3d4e5f6a7b.jpg")
    return root


def write_iconqa(root: Path, with_pid_splits: bool = True) -> Path:
    base = root / "iconqa" / "train"

    def problem(task, question, choices, answer, grade, label):  # data.json as published
        keys = ("question", "choices", "answer", "ques_type", "grade", "label")
        return task, dict(zip(keys, (question, choices, answer, task, grade, label), strict=True))

    problems = {
        "101": problem(
            "choose_txt",
            "How likely is it that you will pick a black one?",
            ["certain", "unlikely", "impossible", "probable"],
            2,
            "grade1",
            "S2",
        ),
        "102": problem("fill_in_blank", "How many dots are there?", None, "7", "prek", "S1"),
        "103": problem(
            "choose_img",
            "Which picture shows the pizza inside the oven?",
            ["choice_0.png", "choice_1.png"],
            1,
            "kindergarten",
            "S3",
        ),
    }
    for pid, (task, data) in problems.items():
        d = base / task / pid
        d.mkdir(parents=True)
        (d / "data.json").write_text(json.dumps(data))
        _image(d / "image.png")
        if task == "choose_img":
            _image(d / "choice_0.png", (0, 200, 0))
            _image(d / "choice_1.png", (0, 0, 200))
    if with_pid_splits:
        splits = {
            "choose_txt_train": ["101"],
            "fill_in_blank_train": ["102"],
            "choose_img_train": ["103"],
            "choose_txt_val": [],
            "fill_in_blank_val": [],
            "choose_img_val": [],
        }
        (root / "pid_splits.json").write_text(json.dumps(splits))
    return root


def _aokvqa_item(qid: str, image_id: int, labeled: bool = True) -> dict:
    item = {
        "split": "train",
        "image_id": image_id,
        "question_id": qid,
        "question": "What is the man by the bags awaiting?",
        "choices": ["skateboarder", "train", "delivery", "cab"],
        "difficult_direct_answer": False,
    }
    if labeled:
        item["correct_choice_idx"] = 3
        item["direct_answers"] = ["ride"] * 3 + ["taxi"] * 4 + ["cab"] * 3
        item["rationales"] = ["He has bags and is waiting by the road."]
    return item


def write_aokvqa(root: Path, coco: Path | None = None) -> Path:
    coco = coco or root
    train = [_aokvqa_item("22MexNkBPpdZGX6sxbxVBH", 299207), _aokvqa_item("2y5", 57)]
    test = [_aokvqa_item("Zx9", 12, labeled=False)]
    (root / "aokvqa_v1p0_train.json").write_text(json.dumps(train))
    (root / "aokvqa_v1p0_test.json").write_text(json.dumps(test))
    _image(coco / "train2017" / "000000299207.jpg")
    _image(coco / "train2017" / "000000000057.jpg")
    _image(coco / "test2017" / "000000000012.jpg")
    return root


CLOTHO_ROWS = [
    ["birds.wav", "Are birds chirping?", "yes", "yes"],
    ["birds.wav", "Are birds chirping?", "yes", "maybe"],
    ["birds.wav", "Are birds chirping?", "no", "no"],
    ["birds.wav", "What animal is heard?", "bird", "yes"],
    ["birds.wav", "What animal is heard?", "birds", "yes"],
    ["birds.wav", "What animal is heard?", "", "no"],
    ["rain.wav", "Is it raining?", "yes", "maybe"],
    ["rain.wav", "Is it raining?", "yes", "maybe"],
    ["rain.wav", "Is it raining?", "yes", "no"],
]


def write_clotho_aqa(root: Path, question_col: str = "QuestionText", confidence=True) -> Path:
    header = ["file_name", question_col, "answer"] + (["confidence"] if confidence else [])
    rows = [r if confidence else r[:3] for r in CLOTHO_ROWS]
    for split in ("train", "val", "test"):
        _csv(root / f"clotho_aqa_{split}.csv", header, rows if split == "train" else rows[:3])
    _csv(
        root / "clotho_aqa_metadata.csv",
        ["file_name", "keywords", "sound_id", "sound_link", "start_end_samples"],
        [["birds.wav", "birds;forest", "1", "https://freesound.org/s/1", ""]],
    )
    _audio(root / "audio_files" / "birds.wav")
    _audio(root / "audio_files" / "rain.wav")
    return root


def write_macs(root: Path) -> Path:
    doc = {
        "files": [
            {
                "filename": "airport-lisbon-1000-40000-a.wav",
                "annotations": [
                    {
                        "annotator_id": 9,
                        "sentence": "people talking while an announcement plays",
                        "tags": ["adults_talking", "announcement"],
                    },
                    {
                        "annotator_id": 12,
                        "sentence": "a busy airport hall with footsteps",
                        "tags": ["footsteps"],
                    },
                ],
            },
            {
                "filename": "park-helsinki-240-7000-a.wav",
                "annotations": [
                    {"annotator_id": 3, "sentence": "birds singing in a park", "tags": ["birds"]}
                ],
            },
            {  # audio not downloaded
                "filename": "street_pedestrian-paris-1-2-a.wav",
                "annotations": [{"annotator_id": 3, "sentence": "cars pass", "tags": []}],
            },
        ]
    }
    (root / "MACS.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    (root / "MACS_competence.csv").write_text("annotator_id\tcompetence\n9\t0.9\n")
    _audio(root / "audio" / "airport-lisbon-1000-40000-a.wav")
    _audio(root / "audio" / "park-helsinki-240-7000-a.wav")
    return root


SDD_HEADER = (
    "caption_id,track_id,caption,is_valid_subset,familiarity,artist_id,album_id,path,duration"
)
SDD_ROWS = [  # the caption holds a comma, as real captions do: the CSV quotes it
    ["1", "1051200", "A calm piano ballad.", "True", "0", "7", "8", "00/1051200.mp3", "200"],
    ["2", "1051200", "Soft solo piano, slow.", "False", "1", "7", "8", "00/1051200.mp3", "200"],
    ["3", "973498", "Upbeat electronic track.", "True", "2", "5", "6", "98/973498.mp3", "180"],
]


def write_sdd(root: Path) -> Path:
    _csv(root / "song_describer.csv", SDD_HEADER.split(","), SDD_ROWS)
    _audio(root / "audio" / "00" / "1051200.2min.mp3", fmt="MP3")
    _audio(root / "audio" / "98" / "973498.2min.mp3", fmt="MP3")
    return root


WRITERS = {
    "textvqa": write_textvqa,
    "iconqa": write_iconqa,
    "aokvqa": write_aokvqa,
    "clotho_aqa": write_clotho_aqa,
    "macs": write_macs,
    "song_describer": write_sdd,
}


def _assert_media_exist(records, root: Path) -> None:
    for r in records:
        assert r.media_path(root).is_file(), r.media


# ---- TextVQA --------------------------------------------------------------------------------
def test_textvqa_train_and_val(tmp_path):
    root = write_textvqa(tmp_path)
    records, counts = load_dataset_dir("textvqa", root, "train")
    assert [r.id for r in records] == ["34602", "34603"]
    r = records[0]
    assert (r.modality, r.media, r.split) == ("image", "train_images/0054c91397f2fe05.jpg", "train")
    assert r.answers == TEXTVQA_ANSWERS and len(r.answers) == 10
    assert r.choices is None and r.meta["qtype"] == "open"
    assert counts == {"examples": 3, "records": 2, "media_missing": 1}
    _assert_media_exist(records, root)

    val, _ = load_dataset_dir("textvqa", root, "val")  # val images live in train_images/
    assert val[0].media == "train_images/0a0bc91825468c45.jpg"


def test_textvqa_test_is_unlabeled(tmp_path):
    root = write_textvqa(tmp_path)
    with pytest.raises(DataError, match=r"unlabeled=1"):
        load_dataset_dir("textvqa", root, "test")
    records, counts = load_dataset_dir("textvqa", root, "test", include_unlabeled=True)
    assert records[0].answers == [] and records[0].media == "test_images/0a1b2c3d4e5f6a7b.jpg"
    assert counts == {"examples": 1, "records": 1}


def test_textvqa_images_still_in_zip_folder(tmp_path):
    root = write_textvqa(tmp_path, image_dir="train_val_images/train_images")
    records, _ = load_dataset_dir("textvqa", root, "train")
    assert records[0].media == "train_val_images/train_images/0054c91397f2fe05.jpg"


# ---- IconQA ---------------------------------------------------------------------------------
def test_iconqa_default_skips_image_choices(tmp_path):
    root = write_iconqa(tmp_path)
    records, counts = load_dataset_dir("iconqa", root, "train")
    by_id = {r.id: r for r in records}
    assert set(by_id) == {"101", "102"}
    txt, blank = by_id["101"], by_id["102"]
    assert txt.choices == ["certain", "unlikely", "impossible", "probable"]
    assert txt.answers == ["impossible"]
    assert txt.meta == {
        "qtype": "choose_txt",
        "answer_type": "multiple_choice",
        "grade": "grade1",
        "label": "S2",
    }
    assert txt.media == "iconqa/train/choose_txt/101/image.png"
    assert blank.choices is None and blank.answers == ["7"]
    assert blank.meta["qtype"] == "fill_in_blank" and blank.meta["answer_type"] == "open"
    assert counts == {"examples": 3, "records": 2, "image_choices": 1}
    _assert_media_exist(records, root)


def test_iconqa_image_choices_on_request(tmp_path):
    root = write_iconqa(tmp_path)
    records, counts = load_dataset_dir("iconqa", root, "train", include_image_choices=True)
    img = next(r for r in records if r.meta["qtype"] == "choose_img")
    assert img.choices == ["choice_0.png", "choice_1.png"] and img.answers == ["choice_1.png"]
    assert img.meta["choice_media"] == [
        "iconqa/train/choose_img/103/choice_0.png",
        "iconqa/train/choose_img/103/choice_1.png",
    ]
    assert all((root / p).is_file() for p in img.meta["choice_media"])
    assert counts == {"examples": 3, "records": 3}


def test_iconqa_without_pid_splits_and_inside_iconqa_data(tmp_path):
    write_iconqa(tmp_path / "iconqa_data", with_pid_splits=False)
    records, _ = load_dataset_dir("iconqa", tmp_path, "train")
    assert sorted(r.id for r in records) == ["101", "102"]
    assert records[0].media.startswith("iconqa_data/iconqa/train/")
    _assert_media_exist(records, tmp_path)


def test_iconqa_pid_listed_but_missing_is_counted(tmp_path):
    root = write_iconqa(tmp_path)
    splits = json.loads((root / "pid_splits.json").read_text())
    splits["choose_txt_train"].append("999")
    (root / "pid_splits.json").write_text(json.dumps(splits))
    _, counts = load_dataset_dir("iconqa", root, "train")
    assert counts["missing_problem"] == 1


def test_iconqa_bad_data_json_named(tmp_path):
    root = write_iconqa(tmp_path)
    bad = root / "iconqa/train/choose_txt/101/data.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match=r"choose_txt/101/data\.json: invalid JSON"):
        load_dataset_dir("iconqa", root, "train")
    bad.write_text(json.dumps({"question": "q?", "choices": ["a", "b"], "answer": 5}))
    with pytest.raises(DataError, match=r"101/data\.json.*'answer' is 5; expected an index"):
        load_dataset_dir("iconqa", root, "train")


def test_iconqa_missing_tree_named(tmp_path):
    (tmp_path / "pid_splits.json").write_text("{}")
    with pytest.raises(DataError, match=r"no iconqa/ folder.*iconqa/<split>/<sub-task>"):
        load_dataset_dir("iconqa", tmp_path, "train")


# ---- A-OKVQA --------------------------------------------------------------------------------
def test_aokvqa_mc_and_da(tmp_path):
    root = write_aokvqa(tmp_path)
    mc, counts = load_dataset_dir("aokvqa", root, "train", mode="mc")
    assert [r.id for r in mc] == ["22MexNkBPpdZGX6sxbxVBH", "2y5"]
    r = mc[0]
    assert r.media == "train2017/000000299207.jpg"
    assert r.choices == ["skateboarder", "train", "delivery", "cab"] and r.answers == ["cab"]
    assert r.meta["qtype"] == "mc" and r.meta["difficult_direct_answer"] is False
    assert r.meta["rationales"] == ["He has bags and is waiting by the road."]
    assert counts == {"examples": 2, "records": 2}
    _assert_media_exist(mc, root)

    da, _ = load_dataset_dir("aokvqa", root, "train", mode="da")
    assert da[0].choices is None and len(da[0].answers) == 10 and da[0].meta["qtype"] == "da"
    assert da[0].answers.count("taxi") == 4


def test_aokvqa_test_unlabeled_and_external_coco(tmp_path):
    root, coco = tmp_path / "aokvqa", tmp_path / "coco"
    root.mkdir()
    write_aokvqa(root, coco=coco)
    with pytest.raises(DataError, match=r"unlabeled=1"):
        load_dataset_dir("aokvqa", root, "test", coco_root=coco)
    records, _ = load_dataset_dir("aokvqa", root, "test", coco_root=coco, include_unlabeled=True)
    assert records[0].answers == [] and len(records[0].choices) == 4
    assert Path(records[0].media).is_absolute() and Path(records[0].media).is_file()
    with pytest.raises(DataError, match=r"train2017.*COCO 2017 train images"):
        load_dataset_dir("aokvqa", root, "train")  # COCO is not under root


def test_aokvqa_wrong_shape_named(tmp_path):
    write_aokvqa(tmp_path)
    (tmp_path / "aokvqa_v1p0_train.json").write_text(json.dumps({"data": []}))
    with pytest.raises(DataError, match=r"aokvqa_v1p0_train\.json: expected a JSON list"):
        load_dataset_dir("aokvqa", tmp_path, "train")
    with pytest.raises(DataError, match=r"unknown mode 'open'"):
        load_dataset_dir("aokvqa", tmp_path, "train", mode="open")


# ---- Clotho-AQA -----------------------------------------------------------------------------
def test_clotho_aqa_groups_annotators(tmp_path):
    root = write_clotho_aqa(tmp_path)
    records, counts = load_dataset_dir("clotho_aqa", root, "train")
    assert [r.id for r in records] == ["birds.wav#0", "birds.wav#1", "rain.wav#0"]
    chirp, animal, rain = records
    assert chirp.question == "Are birds chirping?" and chirp.answers == ["yes", "yes", "no"]
    assert chirp.meta == {"qtype": "yes_no", "confidences": ["yes", "maybe", "no"]}
    assert animal.answers == ["bird", "birds"] and animal.meta["qtype"] == "one_word"
    assert (chirp.modality, chirp.media, rain.media) == (
        "audio",
        "audio_files/birds.wav",
        "audio_files/rain.wav",
    )
    assert counts == {"examples": 3, "records": 3, "empty_answer_rows": 1}
    _assert_media_exist(records, root)


def test_clotho_aqa_confident_only(tmp_path):
    root = write_clotho_aqa(tmp_path)
    records, counts = load_dataset_dir("clotho_aqa", root, "train", confident_only=True)
    assert [r.answers for r in records] == [["yes"], ["bird", "birds"]]
    assert counts["low_confidence"] == 1


def test_clotho_aqa_question_column_variant(tmp_path):
    root = write_clotho_aqa(tmp_path, question_col="question", confidence=False)
    records, _ = load_dataset_dir("clotho_aqa", root, "val")
    assert len(records) == 1 and records[0].answers == ["yes", "yes", "no"]
    assert "confidences" not in records[0].meta


def test_clotho_aqa_missing_column_named(tmp_path):
    root = write_clotho_aqa(tmp_path)
    _csv(root / "clotho_aqa_test.csv", ["file_name", "answer"], [["birds.wav", "yes"]])
    with pytest.raises(
        DataError, match=r"clotho_aqa_test\.csv: missing column\(s\) 'QuestionText' or 'question'"
    ):
        load_dataset_dir("clotho_aqa", root, "test")


# ---- MACS -----------------------------------------------------------------------------------
def test_macs_captions(tmp_path):
    root = write_macs(tmp_path)
    records, counts = load_dataset_dir("macs", root, "full")
    assert [r.id for r in records] == ["airport-lisbon-1000-40000-a", "park-helsinki-240-7000-a"]
    r = records[0]
    assert r.question == "Describe the sound scene." and r.media == (
        "audio/airport-lisbon-1000-40000-a.wav"
    )
    assert r.answers == [
        "people talking while an announcement plays",
        "a busy airport hall with footsteps",
    ]
    assert r.meta["qtype"] == "caption" and r.meta["annotator_ids"] == ["9", "12"]
    assert r.meta["tags"] == [["adults_talking", "announcement"], ["footsteps"]]
    assert counts == {"examples": 3, "records": 2, "media_missing": 1}
    _assert_media_exist(records, root)


def test_macs_bad_yaml_named(tmp_path):
    root = write_macs(tmp_path)
    (root / "MACS.yaml").write_text("files:\n  - filename: [unclosed\n")
    with pytest.raises(DataError, match=r"MACS\.yaml: invalid YAML at line"):
        load_dataset_dir("macs", root, "full")
    (root / "MACS.yaml").write_text("- just a list\n")
    with pytest.raises(DataError, match=r"MACS\.yaml: expected a YAML mapping with a 'files' list"):
        load_dataset_dir("macs", root, "full")
    with pytest.raises(DataError, match=r"macs has no split 'train'.*full"):
        load_dataset_dir("macs", root, "train")


# ---- Song Describer -------------------------------------------------------------------------
def test_song_describer_grouped_by_track(tmp_path):
    root = write_sdd(tmp_path)
    records, counts = load_dataset_dir("sdd", root, "full")
    assert [r.id for r in records] == ["1051200", "973498"]
    r = records[0]
    assert r.media == "audio/00/1051200.2min.mp3" and r.question == "Describe the music."
    assert r.answers == ["A calm piano ballad.", "Soft solo piano, slow."]
    assert r.meta == {"qtype": "caption", "caption_ids": ["1", "2"]}
    assert counts == {"examples": 2, "records": 2}
    _assert_media_exist(records, root)

    valid, _ = load_dataset_dir("song_describer", root, "valid")
    assert [r.answers for r in valid] == [
        ["A calm piano ballad."],
        ["Upbeat electronic track."],
    ]


# ---- registry, detection and the errors a user meets ----------------------------------------
def test_known_formats_and_splits():
    assert known_formats() == sorted(WRITERS)
    assert set(LOADERS) == set(SPLITS) == set(WRITERS)


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_detect_format(tmp_path, fmt):
    WRITERS[fmt](tmp_path)
    assert detect_format(tmp_path) == fmt


def test_detect_format_none_and_ambiguous(tmp_path):
    assert detect_format(tmp_path) is None
    write_macs(tmp_path)
    write_sdd(tmp_path)
    with pytest.raises(DataError, match=r"several dataset formats \(macs, song_describer\)"):
        detect_format(tmp_path)


def test_unknown_format_lists_known(tmp_path):
    with pytest.raises(DataError) as e:
        load_dataset_dir("vqav2", tmp_path, "train")
    assert "unknown dataset format 'vqav2'" in str(e.value)
    for name in known_formats():
        assert name in str(e.value)


def test_unknown_option_lists_accepted(tmp_path):
    write_textvqa(tmp_path)
    with pytest.raises(DataError, match=r"unknown option\(s\) mode; it accepts: include_unlabeled"):
        load_dataset_dir("textvqa", tmp_path, "train", mode="da")


@pytest.mark.parametrize(
    "fmt,split,missing",
    [
        ("textvqa", "val", "TextVQA_0.5.1_val.json"),
        ("aokvqa", "val", "aokvqa_v1p0_val.json"),
        ("clotho_aqa", "train", "clotho_aqa_train.csv"),
        ("macs", "full", "MACS.yaml"),
        ("song_describer", "full", "song_describer.csv"),
    ],
)
def test_missing_file_is_named(tmp_path, fmt, split, missing):
    with pytest.raises(DataError, match=rf"{missing}: file not found; expected"):
        load_dataset_dir(fmt, tmp_path, split)


def test_textvqa_wrong_format_and_bad_json_named(tmp_path):
    root = write_textvqa(tmp_path)
    (root / "TextVQA_0.5.1_val.json").write_text(json.dumps([{"question": "q"}]))
    with pytest.raises(
        DataError, match=r"TextVQA_0\.5\.1_val\.json: expected a JSON object with a 'data' list"
    ):
        load_dataset_dir("textvqa", root, "val")
    (root / "TextVQA_0.5.1_val.json").write_text('{"data": [')
    with pytest.raises(DataError, match=r"TextVQA_0\.5\.1_val\.json: invalid JSON at line 1"):
        load_dataset_dir("textvqa", root, "val")
    (root / "TextVQA_0.5.1_val.json").write_text(json.dumps({"data": [{"question": "q"}]}))
    with pytest.raises(DataError, match=r"data\[0\]: field 'question_id' is missing"):
        load_dataset_dir("textvqa", root, "val")


def test_empty_split_raises(tmp_path):
    root = write_textvqa(tmp_path)
    (root / "TextVQA_0.5.1_val.json").write_text(json.dumps({"data": []}))
    with pytest.raises(DataError, match=r"textvqa split 'val'.*holds no examples"):
        load_dataset_dir("textvqa", root, "val")
    icon = write_iconqa(tmp_path / "icon")
    with pytest.raises(DataError, match=r"iconqa/val: folder not found"):
        load_dataset_dir("iconqa", icon, "val")
    (icon / "iconqa" / "val" / "choose_txt").mkdir(parents=True)  # lists in pid_splits: empty
    with pytest.raises(DataError, match=r"iconqa split 'val'.*holds no examples"):
        load_dataset_dir("iconqa", icon, "val")
    sdd = tmp_path / "sdd"
    sdd.mkdir()
    _csv(sdd / "song_describer.csv", ["caption_id", "track_id", "caption", "path"], [])
    with pytest.raises(DataError, match=r"holds no examples"):
        load_dataset_dir("song_describer", sdd, "full")


def test_unknown_split_and_missing_root(tmp_path):
    with pytest.raises(DataError, match=r"clotho_aqa has no split 'dev'.*train, val, test"):
        load_dataset_dir("clotho_aqa", tmp_path, "dev")
    with pytest.raises(DataError, match=r"does not exist"):
        load_dataset_dir("textvqa", tmp_path / "nowhere", "train")


@pytest.mark.parametrize(
    "fmt,split,opts",
    [
        ("textvqa", "train", {}),
        ("iconqa", "train", {}),
        ("aokvqa", "train", {"mode": "da"}),
        ("clotho_aqa", "train", {}),
        ("macs", "full", {}),
        ("song_describer", "full", {}),
    ],
)
def test_records_pass_canonical_validation(tmp_path, fmt, split, opts):
    """What staging will do: write the records and read them back with full validation
    (fields, choices containing the answer, media decodable)."""
    root = WRITERS[fmt](tmp_path)
    records, _ = load_dataset_dir(fmt, root, split, **opts)
    out = write_records(records, tmp_path / "staged" / f"{split}.jsonl")
    back, report = read_records(out, root=root)
    assert report.n_bad == 0
    assert [r.to_dict() for r in back] == [r.to_dict() for r in records]
