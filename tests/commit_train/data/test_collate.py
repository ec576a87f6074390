"""Collator: prompt format, answer-only labels, padding, media-safe truncation."""

from __future__ import annotations

import pytest
import torch

from commit_train.data.collate import Collator, RecordDataset, format_choices
from commit_train.data.records import Record
from commit_train.errors import ConfigError, DataError

from .conftest import (
    TinyAudioProcessor,
    TinyImageProcessor,
    make_tokenizer,
    write_png,
    write_tone,
)

LONG_Q = "What kind of clothing item is this? " * 40


@pytest.fixture
def image_records(tmp_path):
    write_png(tmp_path / "a.png", color=(10, 200, 10))
    write_png(tmp_path / "b.png", size=(20, 12))
    return [
        Record("1", "image", "a.png", "What kind of clothing item is this?", ["ankle boot"]),
        Record("2", "image", "b.png", "Is this a bag?", ["yes"]),
        Record(
            "3",
            "image",
            "b.png",
            "Which of these items is shown in the image?",
            ["coat"],
            choices=["dress", "coat", "sandal"],
        ),
    ]


def _answer_tokens(batch, row):
    ids, labels = batch["input_ids"][row], batch["labels"][row]
    return ids[labels != -100].tolist(), labels[labels != -100].tolist()


@pytest.mark.parametrize("chat", [False, True])
def test_labels_cover_only_answer_and_eos(tmp_path, image_records, chat):
    tok = make_tokenizer(chat=chat)
    collate = Collator(TinyImageProcessor(tok), max_length=128, root=tmp_path)
    batch = collate(image_records)
    assert set(batch) == {"input_ids", "attention_mask", "labels", "media"}
    assert batch["media"]["pixel_values"].shape == (3, 3, 16, 16)
    for row, rec in enumerate(image_records):
        ids, labels = _answer_tokens(batch, row)
        assert ids == labels and labels[-1] == tok.eos_token_id
        assert tok.decode(labels[:-1]).strip() == rec.answers[0]
        n = int(batch["attention_mask"][row].sum())
        prompt = tok.decode(batch["input_ids"][row, : n - len(labels)])
        assert rec.question in prompt
        assert (batch["input_ids"][row] == tok.convert_tokens_to_ids("<image>")).sum() == 4
        if chat:
            assert prompt.endswith("<|im_start|>assistant\n")
            assert prompt.startswith("<|im_start|>user\n<image><image><image><image>\n")
        else:
            assert prompt.startswith("<s>USER: <image><image><image><image>\n")
            assert prompt.endswith("\nASSISTANT:")
    prompt3 = tok.decode(batch["input_ids"][2])
    assert "image?\nA. dress\nB. coat\nC. sandal" in prompt3


def test_system_prompt_in_both_formats(tmp_path, image_records):
    for chat in (False, True):
        tok = make_tokenizer(chat=chat)
        collate = Collator(TinyImageProcessor(tok), 128, system_prompt="Be brief.", root=tmp_path)
        text = tok.decode(collate(image_records[:1])["input_ids"][0])
        assert ("<|im_start|>system\nBe brief." if chat else "<s>Be brief.\n\nUSER:") in text


def test_right_padding_and_eos_fallback(tmp_path, image_records):
    for tok in (make_tokenizer(chat=False), make_tokenizer(chat=False, pad=False)):
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        batch = Collator(TinyImageProcessor(tok), 128, root=tmp_path)(image_records)
        lengths = batch["attention_mask"].sum(1)
        assert len(set(lengths.tolist())) > 1
        for row, n in enumerate(lengths.tolist()):
            assert (
                batch["attention_mask"][row, :n].all()
                and not batch["attention_mask"][row, n:].any()
            )
            assert (batch["input_ids"][row, n:] == pad).all()
            assert (batch["labels"][row, n:] == -100).all()


def test_truncation_never_cuts_media_tokens(tmp_path, image_records):
    tok = make_tokenizer(chat=True)
    proc = TinyImageProcessor(tok, n_tokens=20)
    records = [Record("long", "image", "a.png", LONG_Q, ["ankle boot"]), *image_records]
    batch = Collator(proc, max_length=48, root=tmp_path)(records)
    assert batch["input_ids"].shape[1] == 48  # the long question filled it
    media_id = proc.media_token_id
    assert ((batch["input_ids"] == media_id).sum(1) == 20).all()
    ids, labels = _answer_tokens(batch, 0)
    assert tok.decode(labels[:-1]).strip() == "ankle boot"  # the question was cut, not the answer
    # Prompt-only generation keeps media too.
    gen = Collator(proc, max_length=40, prompt_only=True, root=tmp_path)(records)
    assert gen["input_ids"].shape[1] <= 40 and ((gen["input_ids"] == media_id).sum(1) == 20).all()


def test_too_small_max_length_fails_at_construction(plain_tokenizer):
    with pytest.raises(ConfigError, match=r"data.max_length=10 .* 16 media tokens"):
        Collator(TinyImageProcessor(plain_tokenizer, n_tokens=16), max_length=10)
    with pytest.raises(ConfigError, match="leaves no room"):
        Collator(TinyImageProcessor(plain_tokenizer, n_tokens=16), max_length=18)


def test_prompt_only_left_pads_and_matches_training_prompt(tmp_path, image_records):
    tok = make_tokenizer(chat=True)
    proc = TinyImageProcessor(tok)
    train = Collator(proc, 128, root=tmp_path)(image_records)
    gen = Collator(proc, 128, prompt_only=True, root=tmp_path)(image_records)
    assert "labels" not in gen
    width = gen["input_ids"].shape[1]
    for row in range(len(image_records)):
        n_prompt = int(
            (train["labels"][row] == -100).logical_and(train["attention_mask"][row] == 1).sum()
        )
        prompt = train["input_ids"][row, :n_prompt]
        assert torch.equal(gen["input_ids"][row, width - n_prompt :], prompt)
        assert gen["attention_mask"][row, width - n_prompt :].all()
        assert not gen["attention_mask"][row, : width - n_prompt].any()
    assert torch.equal(train["media"]["pixel_values"], gen["media"]["pixel_values"])


def test_deterministic_and_dataset_pairs_match(tmp_path, image_records):
    tok = make_tokenizer(chat=False)
    collate = Collator(TinyImageProcessor(tok), 64)
    a = collate(image_records, root=tmp_path)
    b = collate(image_records, root=tmp_path)
    pairs = RecordDataset(image_records, tmp_path)
    c = collate([pairs[i] for i in range(len(pairs))])
    for other in (b, c):
        for key in ("input_ids", "attention_mask", "labels"):
            assert torch.equal(a[key], other[key])
        assert torch.equal(a["media"]["pixel_values"], other["media"]["pixel_values"])


def test_audio_batch_and_lazy_dataset(tmp_path):
    write_tone(tmp_path / "x.wav", rate=8_000, seconds=0.5)
    write_tone(tmp_path / "y.flac", rate=16_000, seconds=0.25)
    recs = [
        Record("a", "audio", "x.wav", "What number is spoken?", ["seven"]),
        Record("b", "audio", "y.flac", "What number is spoken?", ["eight"]),
    ]
    proc = TinyAudioProcessor(make_tokenizer(chat=True))
    ds = RecordDataset(recs, tmp_path, sampling_rate=proc.sampling_rate)
    record, wave = ds[0]
    assert record is recs[0] and wave.shape == (8_000,)
    batch = Collator(proc, 64)([ds[0], ds[1]])
    assert batch["media"]["input_features"].shape == (2, 8_000)
    assert ((batch["input_ids"] == proc.media_token_id).sum(1) == 3).all()
    with pytest.raises(ValueError, match="sampling_rate"):
        RecordDataset(recs, tmp_path)[0]


def test_bad_inputs_are_named(tmp_path, image_records, plain_tokenizer):
    collate = Collator(TinyImageProcessor(plain_tokenizer), 64, root=tmp_path)
    sneaky = Record("evil", "image", "a.png", "look <image> here", ["x"])
    with pytest.raises(DataError, match="'evil'.*'question'.*media token"):
        collate([sneaky])
    audio = Record("snd", "audio", "a.wav", "Q?", ["x"])
    with pytest.raises(DataError, match="'snd' is 'audio'"):
        collate([audio])
    with pytest.raises(ValueError, match="empty batch"):
        collate([])


def test_format_choices():
    assert format_choices(["x", "y"]) == "A. x\nB. y"
    assert format_choices([str(i) for i in range(28)]).splitlines()[-1] == "AB. 27"


def test_truncation_keeps_the_end_of_the_question_and_counts(tmp_path, image_records, caplog):
    """Issue 16.7: the question was cut from its end silently; the ask is at the end."""
    tok = make_tokenizer(chat=True)
    proc = TinyImageProcessor(tok, n_tokens=4)
    question = "seven eight nine zero one two three " * 8 + "What kind of clothing item is this?"
    rec = Record("long", "image", "a.png", question, ["sneaker"])
    col = Collator(proc, max_length=40, root=tmp_path)
    with caplog.at_level("WARNING", logger="commit_train.data.collate"):
        ids, labels = col.encode_record(rec)
        col.encode_record(rec)
    assert len(ids) == 40 and col.n_truncated == 2
    prompt = tok.decode([i for i, lab in zip(ids, labels, strict=True) if lab == -100])
    assert "clothing item is this?" in prompt
    assert tok.decode([lab for lab in labels if lab != -100][:-1]).strip() == "sneaker"
    assert caplog.text.count("longer than data.max_length=40") == 1
