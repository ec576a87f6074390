"""Records -> model batches: prompt formatting, label masking, padding, truncation.

The layout of one training example is::

    [prefix: template/system text, media placeholders, "\\n"] [question] [choices]
    [suffix: end of user turn, start of assistant turn] [answer] [eos]

Only ``answer`` and ``eos`` carry labels, so the loss (and the κ probe) measure how well
the model answers, not how well it predicts the question it was given.

The prefix and suffix are rendered once per collator (with markers where the question
goes) and the question, choices and answer are tokenized separately. That makes
truncation safe and cheap: only the question (then the choices, then the answer tail) is
cut, never a media placeholder, whose count must equal the encoder's feature count
(:meth:`MultimodalLM.embed`). Training and generation (``prompt_only``) tokenize the
prompt identically, so what the model is asked at evaluation is exactly what it saw in
training.
"""

from __future__ import annotations

import logging
import string
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from commit_train.data.media import load_audio, load_image
from commit_train.data.records import Record
from commit_train.errors import ConfigError, DataError
from commit_train.modeling.base import MultimodalProcessor

log = logging.getLogger(__name__)
# Private-use code points: no real text contains them and chat templates pass them through.
_QUESTION_MARK = "\ue000"
_LETTERS = string.ascii_uppercase


def format_choices(choices: list[str]) -> str:
    """``"A. red\\nB. blue"``; more than 26 choices continue with AA, AB, ..."""
    labels = [
        _LETTERS[i] if i < 26 else _LETTERS[i // 26 - 1] + _LETTERS[i % 26]
        for i in range(len(choices))
    ]
    return "\n".join(f"{label}. {c}" for label, c in zip(labels, choices, strict=True))


def load_media(record: Record, root: str | Path | None, sampling_rate: int | None) -> Any:
    """The decoded media of a record: an RGB image, or a mono float32 waveform."""
    path = record.media_path(root)
    if record.modality == "image":
        return load_image(path)
    if not sampling_rate:
        raise ValueError(
            f"record {record.id!r} is audio but no sampling_rate was given; pass the "
            "processor's sampling_rate"
        )
    return load_audio(path, sampling_rate)


class RecordDataset(Dataset):
    """Map-style dataset of ``(record, media)``; media is decoded on access, not up front,
    so a large dataset costs memory only for the batches in flight (and DataLoader workers
    decode in parallel)."""

    def __init__(
        self, records: list[Record], root: str | Path | None, sampling_rate: int | None = None
    ):
        self.records = list(records)
        self.root = Path(root) if root is not None else None
        self.sampling_rate = sampling_rate

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[Record, Any]:
        record = self.records[index]
        return record, load_media(record, self.root, self.sampling_rate)


class Collator:
    """Callable turning records into a batch for :class:`MultimodalLM`.

    Training mode returns ``input_ids``, ``attention_mask``, ``labels`` (right padded) and
    ``media`` (the processor's tensors). ``prompt_only=True`` returns the prompt without the
    answer, left padded so generation continues every row from its last position, and no
    ``labels``. The output is a pure function of the inputs (no randomness).
    """

    def __init__(
        self,
        processor: MultimodalProcessor,
        max_length: int,
        system_prompt: str | None = None,
        *,
        prompt_only: bool = False,
        root: str | Path | None = None,
    ):
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.max_length = int(max_length)
        self.system_prompt = system_prompt
        self.prompt_only = prompt_only
        self.n_truncated = 0  # examples whose question was cut to fit max_length
        self.root = Path(root) if root is not None else None
        self.num_media_tokens = int(processor.num_media_tokens())
        self.media_token_id = processor.media_token_id

        tok_ids = self._encode(processor.media_token)
        if tok_ids != [self.media_token_id]:
            raise ValueError(
                f"media token {processor.media_token!r} tokenizes to {tok_ids}, not to the "
                f"single id {self.media_token_id}; add it to the tokenizer as a special token"
            )
        if self.num_media_tokens > self.max_length:
            raise ConfigError(
                f"data.max_length={self.max_length} is smaller than the "
                f"{self.num_media_tokens} media tokens of one example; raise data.max_length"
            )
        self.eos_id = self.tokenizer.eos_token_id
        if self.eos_id is None:
            raise ValueError("the tokenizer has no eos token; the model could never stop")
        pad = self.tokenizer.pad_token_id
        self.pad_id = int(pad) if pad is not None else int(self.eos_id)

        self.uses_chat_template = bool(getattr(self.tokenizer, "chat_template", None))
        prefix, suffix = self._render_prompt()
        bos = self.tokenizer.bos_token_id
        self.prefix_ids = [int(bos)] if bos is not None and not self.uses_chat_template else []
        self.prefix_ids += self._encode(prefix)
        self.suffix_ids = self._encode(suffix)
        n_found = self.prefix_ids.count(self.media_token_id) + self.suffix_ids.count(
            self.media_token_id
        )
        if n_found != self.num_media_tokens:
            raise ValueError(
                f"the rendered prompt holds {n_found} media tokens, expected "
                f"{self.num_media_tokens}; the chat template alters the media token"
            )
        # Room needed besides the question: the fixed prompt plus one answer token and eos.
        fixed = len(self.prefix_ids) + len(self.suffix_ids) + (0 if prompt_only else 2)
        if fixed > self.max_length:
            raise ConfigError(
                f"data.max_length={self.max_length} leaves no room for text: the "
                f"{self.num_media_tokens} media tokens and the prompt template alone take "
                f"{fixed} tokens; raise data.max_length"
            )

    # ---- prompt rendering -------------------------------------------------------------------
    def _encode(self, text: str) -> list[int]:
        if not text:
            return []
        return [int(i) for i in self.tokenizer.encode(text, add_special_tokens=False)]

    def _render_prompt(self) -> tuple[str, str]:
        """The prompt text before and after the question, with media placeholders."""
        user = self.processor.media_token * self.num_media_tokens + "\n" + _QUESTION_MARK
        if self.uses_chat_template:
            text = self._apply_template(user)
        else:
            system = f"{self.system_prompt}\n\n" if self.system_prompt else ""
            text = f"{system}USER: {user}\nASSISTANT:"
        if text.count(_QUESTION_MARK) != 1:
            raise ValueError("the chat template dropped or repeated the user message")
        prefix, suffix = text.split(_QUESTION_MARK)
        return prefix, suffix

    def _apply_template(self, user: str) -> str:
        def render(messages: list[dict[str, str]]) -> str:
            return self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )

        if not self.system_prompt:
            return render([{"role": "user", "content": user}])
        try:
            return render(
                [
                    {"role": "system", "content": self.system_prompt},
                    {"role": "user", "content": user},
                ]
            )
        except Exception:  # templates without a system role raise from Jinja
            return render([{"role": "user", "content": f"{self.system_prompt}\n\n{user}"}])

    def _answer_ids(self, answer: str) -> list[int]:
        # The plain format ends with "ASSISTANT:"; the answer follows after a space.
        text = answer if self.uses_chat_template else " " + answer
        return self._encode(text) + [int(self.eos_id)]

    # ---- one example ------------------------------------------------------------------------
    def encode_record(self, record: Record) -> tuple[list[int], list[int]]:
        """``(input_ids, labels)`` of one record, truncated to ``max_length``."""
        question = self._encode(record.question)
        choices = self._encode("\n" + format_choices(record.choices)) if record.choices else []
        answer = [] if self.prompt_only else self._answer_ids(record.answers[0])
        for part, ids in (("question", question), ("choices", choices), ("answers", answer)):
            if self.media_token_id in ids:
                raise DataError(
                    f"record {record.id!r}: field '{part}' contains the media token "
                    f"{self.processor.media_token!r}; it would add media placeholders"
                )
        overflow = (
            len(self.prefix_ids)
            + len(question)
            + len(choices)
            + len(self.suffix_ids)
            + len(answer)
            - self.max_length
        )
        if overflow > 0:
            # Keep the question's end: that is where the actual ask usually is ("... what
            # colour is it?"), and counted/warned so a too-small data.max_length is seen.
            cut = min(overflow, len(question))
            question = question[cut:]
            overflow -= cut
            self.n_truncated += 1
            if self.n_truncated == 1:
                log.warning(
                    "record %r: prompt longer than data.max_length=%d; the question is cut "
                    "from its start (further ones are counted in Collator.n_truncated)",
                    record.id,
                    self.max_length,
                )
        if overflow > 0:
            cut = min(overflow, len(choices))
            choices = choices[: len(choices) - cut]
            overflow -= cut
        if overflow > 0:  # keep at least one answer token; the constructor made room for it
            answer = answer[: max(1, len(answer) - overflow)]
        prompt = self.prefix_ids + question + choices + self.suffix_ids
        ids = prompt + answer
        labels = [-100] * len(prompt) + answer
        return ids, labels

    # ---- the batch --------------------------------------------------------------------------
    def _split_items(
        self, items: list[Any], root: str | Path | None
    ) -> tuple[list[Record], list[Any]]:
        root = Path(root) if root is not None else self.root
        records, media = [], []
        for item in items:
            if isinstance(item, Record):
                record, medium = item, None
            else:
                record, medium = item
            if record.modality != self.processor.modality:
                raise DataError(
                    f"record {record.id!r} is {record.modality!r} but the model's processor "
                    f"takes {self.processor.modality!r}"
                )
            if medium is None:
                medium = load_media(record, root, self.processor.sampling_rate)
            records.append(record)
            media.append(medium)
        return records, media

    def __call__(
        self, items: list[Record] | list[tuple[Record, Any]], root: str | Path | None = None
    ) -> dict[str, Any]:
        """Batch ``items``: records (media loaded from ``root``, or the collator's root) or
        ``(record, media)`` pairs as :class:`RecordDataset` yields them."""
        if not items:
            raise ValueError("cannot collate an empty batch")
        records, media = self._split_items(list(items), root)
        encoded = [self.encode_record(r) for r in records]
        width = max(len(ids) for ids, _ in encoded)
        batch = len(encoded)
        input_ids = torch.full((batch, width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((batch, width), dtype=torch.long)
        labels = torch.full((batch, width), -100, dtype=torch.long)
        for row, (ids, labs) in enumerate(encoded):
            n = len(ids)
            span = slice(width - n, width) if self.prompt_only else slice(0, n)
            input_ids[row, span] = torch.tensor(ids, dtype=torch.long)
            attention[row, span] = 1
            labels[row, span] = torch.tensor(labs, dtype=torch.long)
        out: dict[str, Any] = {
            "input_ids": input_ids,
            "attention_mask": attention,
            "media": self.processor.process_media(media),
        }
        if not self.prompt_only:
            out["labels"] = labels
        return out
