"""Question-building helpers shared by the built-in generators.

Their own module, so ``builtin_vision`` and ``builtin_audio`` import them from here while
``builtin`` (which dispatches to the generators) imports those two: no import circle.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SPLITS = ("train", "val", "test")
NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def split_rng(seed: int, name: str, split: str) -> np.random.Generator:
    """Independent, stable stream per split: growing one split never changes the others."""
    return np.random.default_rng([seed, SPLITS.index(split), sum(map(ord, name))])


def assign_qtypes(rng: np.random.Generator, qtypes: Sequence[str], n: int) -> list[str]:
    """``n`` question types, as equal in number as possible, in random order.

    Exact (not sampled) counts keep every type represented even in small test splits, so
    per-type accuracy is never computed on a handful of examples by bad luck.
    """
    return [qtypes[int(i)] for i in rng.permutation(np.resize(np.arange(len(qtypes)), n))]


def shuffled_choices(rng: np.random.Generator, answer: str, distractors: Sequence[str]) -> list:
    """``answer`` and ``distractors`` in random order (the answer's position is uniform)."""
    options = [answer, *distractors]
    return [options[int(i)] for i in rng.permutation(len(options))]


def number_answers(n: int) -> list[str]:
    """Accepted answers for a count or digit: the numeral first, then the word."""
    return [str(n), NUMBER_WORDS[n]]
