"""Chance levels: the two answer-blind baselines on a hand-made record list."""

from __future__ import annotations

import pytest

from commit_train.data.builtin import chance_levels, chance_table
from commit_train.data.records import Record


def rec(qtype, answers, choices=None):
    return Record("x", "image", "a.png", "Q?", answers, choices, "test", {"qtype": qtype})


RECORDS = [
    # yes/no: 3 yes, 1 no -> majority "yes" 3/4; uniform over {yes, no} 1/2
    rec("yn", ["yes"]),
    rec("yn", ["yes"]),
    rec("yn", ["Yes"]),
    rec("yn", ["no"]),
    # open with synonyms: canonical {7, 3}; "7" is the majority and also accepted by the
    # third record's synonyms -> majority 3/3; uniform: (1/2 + 1/2 + 2/2) / 3
    rec("num", ["7", "seven"]),
    rec("num", ["7", "seven"]),
    rec("num", ["3", "7"]),
    # multiple choice: the answer is at position 1, 1, 2 -> majority position 1: 2/3;
    # uniform 1/4, 1/4, 1/2
    rec("mc", ["b"], ["b", "a", "c", "d"]),
    rec("mc", ["x"], ["x", "y", "z", "w"]),
    rec("mc", ["q"], ["p", "q"]),
]


def test_chance_table_by_hand():
    table = chance_table(RECORDS)
    assert table["yn"] == {
        "n": 4,
        "majority": 0.75,
        "majority_answer": "yes",
        "uniform": 0.5,
        "vocab_size": 2,
    }
    assert table["num"]["majority"] == 1.0 and table["num"]["majority_answer"] == "7"
    assert table["num"]["uniform"] == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    assert table["mc"]["majority"] == pytest.approx(2 / 3)
    assert table["mc"]["majority_answer"] == "choice 1"
    assert table["mc"]["uniform"] == pytest.approx((0.25 + 0.25 + 0.5) / 3)
    overall = table["overall"]
    assert overall["n"] == 10
    assert overall["majority"] == pytest.approx((0.75 * 4 + 1.0 * 3 + 2 / 3 * 3) / 10)
    assert overall["uniform"] == pytest.approx((0.5 * 4 + 2 / 3 * 3 + 1 / 3 * 3) / 10)


def test_chance_levels_is_one_float_per_qtype_plus_overall():
    majority = chance_levels(RECORDS)
    assert set(majority) == {"yn", "num", "mc", "overall"}
    assert majority["yn"] == 0.75
    assert chance_levels(RECORDS, "uniform")["yn"] == 0.5
    with pytest.raises(ValueError, match="majority"):
        chance_levels(RECORDS, "random")
    assert chance_levels([]) == {}


def test_records_without_qtype_fall_in_one_group():
    plain = Record("x", "audio", "a.wav", "Q?", ["cat"])
    assert set(chance_levels([plain, plain])) == {"all", "overall"}
