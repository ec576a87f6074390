"""The metric modules against hand-computed cases, each loaded with ``evaluate.load(path)``.

Expected values are worked out in the comments from the definitions in the scripts each
module follows (vqaEval.py, mmf's TextVQA evaluator, coco-caption), so a regression shows
up as a wrong number, not just a changed one.
"""

from __future__ import annotations

import math
import sys

import evaluate
import pytest

from evaluation.metrics import (
    METRIC_DIR,
    MetricInputError,
    compute,
    known_metrics,
    load_metric,
)
from evaluation.metrics.caption_text import ptb_tokenize

ALL = ["bleu4", "cider", "exact_match_qa", "mc_accuracy", "rouge_l", "vqa_accuracy"]


@pytest.fixture(scope="module")
def loaded():
    """Each metric loaded through ``evaluate.load`` on its local folder (no hub)."""
    return {name: evaluate.load(str(METRIC_DIR / name), keep_in_memory=True) for name in ALL}


def module_of(metric):
    """The Python module ``evaluate.load`` imported, to reach its helper functions."""
    return sys.modules[type(metric).__module__]


def test_all_metrics_are_known_and_load_offline(loaded):
    assert known_metrics() == ALL
    for name, metric in loaded.items():
        assert isinstance(metric, evaluate.Metric), name
    assert load_metric("cider") is load_metric("cider")  # cached


# --- VQA accuracy -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("Two", "2"),  # number word -> digit, after lower-casing
        ("the dog.", "dog"),  # article dropped, final period stripped
        ("dont", "don't"),  # contractions table
        ("1,000", "1000"),  # digit,digit present: every punctuation mark is deleted
        ("3.5", "3.5"),  # a period followed by a digit stays
        ("Yes!", "yes"),  # "!" not touching a space becomes a space, then split away
        ("black-and-white", "black and white"),  # "-" not touching a space -> space
        ("t-shirt, jeans", "t shirt jeans"),  # "," touches a space -> deleted; "-" -> space
        ("  A\tcat\n", "cat"),
    ],
)
def test_vqa_prediction_normalization(loaded, raw, normalized):
    module = module_of(loaded["vqa_accuracy"])
    assert module.normalize_prediction(raw) == normalized  # vqaEval.py
    assert module.normalize_evalai(raw) == normalized  # mmf EvalAIAnswerProcessor agrees here


def test_evalai_processor_splits_possessive_and_lowercases(loaded):
    normalize = module_of(loaded["vqa_accuracy"]).normalize_evalai
    assert normalize("Coca-Cola's") == "coca cola 's"
    assert normalize("What?") == "what"


# With 10 human answers of which k equal the prediction, leave annotator i out:
#   i one of the k matching ones -> k-1 matches among the other 9 -> min(1, (k-1)/3)
#   i one of the 10-k others      -> k matches among the other 9   -> min(1, k/3)
# k=0: 0
# k=1: (1*0     + 9*1/3) / 10 = 3/10 = 0.3
# k=2: (2*1/3   + 8*2/3) / 10 = (2/3 + 16/3) / 10 = 6/10 = 0.6
# k=3: (3*2/3   + 7*1)   / 10 = (2 + 7) / 10 = 0.9
# k=4: (4*1     + 6*1)   / 10 = 1.0
@pytest.mark.parametrize(("k", "expected"), [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0)])
def test_vqa_accuracy_leave_one_out(loaded, k, expected):
    others = ["cat", "bird", "fish", "cow", "horse", "duck", "goat", "pig", "hen", "ant"]
    answers = ["2"] * k + others[: 10 - k]
    result = loaded["vqa_accuracy"].compute(predictions=["two"], references=[answers])
    assert result["vqa_accuracy"] == pytest.approx(expected)


def test_vqa_accuracy_mean_and_per_example(loaded):
    refs = [["2"] * 3 + ["x"] * 7, ["dog"] * 10]
    result = loaded["vqa_accuracy"].compute(
        predictions=["Two", "The dog."], references=refs, return_per_example=True
    )
    assert result["per_example"] == pytest.approx([0.9, 1.0])
    assert result["vqa_accuracy"] == pytest.approx(0.95)


def test_evalai_mode_normalizes_answers_vqaeval_mode_uses_them_as_given(loaded):
    metric = loaded["vqa_accuracy"]
    # Raw answers: 3 x "2" and 7 x "Two". evalai normalizes both sides -> 10 matches -> 1.0.
    raw = [["2"] * 3 + ["Two"] * 7]
    assert metric.compute(predictions=["two"], references=raw)["vqa_accuracy"] == pytest.approx(1.0)
    # vqaEval.py only punctuation-processes disagreeing answers: "Two" stays, the prediction
    # becomes "2" -> 3 matches -> 0.9. Unanimous answers are not touched at all -> 0.
    assert metric.compute(predictions=["two"], references=raw, mode="vqaeval")[
        "vqa_accuracy"
    ] == pytest.approx(0.9)
    unanimous = [["Two"] * 10]
    assert metric.compute(predictions=["two"], references=unanimous, mode="vqaeval")[
        "vqa_accuracy"
    ] == pytest.approx(0.0)
    # Disagreeing answers do get the punctuation step: "dog." -> "dog", 3 matches -> 0.9.
    mixed = [["dog."] * 3 + ["cat"] * 7]
    for mode in ("evalai", "vqaeval"):
        result = metric.compute(predictions=["dog"], references=mixed, mode=mode)
        assert result["vqa_accuracy"] == pytest.approx(0.9), mode


def test_vqa_accuracy_rejects_single_answer_and_bad_mode():
    with pytest.raises(MetricInputError, match="at least 2 human answers"):
        compute("vqa_accuracy", predictions=["a"], references=[["a"]])
    with pytest.raises(MetricInputError, match="mode"):
        compute("vqa_accuracy", predictions=["a"], references=[["a", "b"]], mode="gqa")


# --- multiple choice ----------------------------------------------------------------------

CHOICES = ["red", "dark red", "blue", "green"]


@pytest.mark.parametrize(
    ("prediction", "index"),
    [
        ("B", 1),
        ("(B)", 1),
        ("B.", 1),
        ("b", 1),
        ("[C]", 2),
        ("B. dark red", 1),
        ("(C) blue", 2),
        ("C: blue", 2),
        ("The answer is (D).", 3),
        ("Answer: A", 0),
        ("dark red", 1),  # option text; "red" inside it does not make it ambiguous
        ("Blue.", 2),
        ("It is dark red.", 1),  # one maximal option inside a sentence
        ("A red car", 0),  # article "A" is not a letter; "red" is the only option inside
        ("E", -1),  # letter beyond the 4 choices
        ("red or blue", -1),  # two options named
        ("purple", -1),
    ],
)
def test_mc_parsing(loaded, prediction, index):
    assert module_of(loaded["mc_accuracy"]).parse_choice(prediction, CHOICES) == index


def test_mc_text_beats_letter():
    # An option that is literally "B" is matched as text, not as the second letter.
    result = compute(
        "mc_accuracy",
        predictions=["B"],
        references=["B"],
        choices=[["A", "C", "B"]],
        return_per_example=True,
    )
    assert result["predicted_index"] == [2] and result["mc_accuracy"] == 1.0


def test_mc_accuracy_and_unparsed_rate(loaded):
    result = loaded["mc_accuracy"].compute(
        predictions=["B", "blue", "D. green", "no idea"],
        references=["dark red", "red", "green", "blue"],
        choices=[CHOICES] * 4,
        return_per_example=True,
    )
    assert result["per_example"] == [1.0, 0.0, 1.0, 0.0]
    assert result["predicted_index"] == [1, 2, 3, -1]
    assert result["mc_accuracy"] == 0.5
    assert result["unparsed_rate"] == 0.25


def test_mc_reference_must_be_a_choice():
    with pytest.raises(MetricInputError, match="example 0: reference 'purple'"):
        compute("mc_accuracy", predictions=["A"], references=["purple"], choices=[CHOICES])


def test_mc_choices_length_mismatch_names_both_lengths():
    with pytest.raises(MetricInputError, match="2 predictions but 1 choice lists"):
        compute(
            "mc_accuracy", predictions=["A", "B"], references=["red", "blue"], choices=[CHOICES]
        )


# --- exact match --------------------------------------------------------------------------


def test_exact_match_normalization(loaded):
    normalize = module_of(loaded["exact_match_qa"]).normalize_answer
    assert normalize("The Two dogs.") == "2 dogs"
    assert normalize("Don't!") == "dont"
    assert normalize("1,000") == "1000"


def test_exact_match_and_yes_no(loaded):
    result = loaded["exact_match_qa"].compute(
        predictions=["Two dogs.", "Yes, it barks.", "no", "a car", "Birds"],
        references=[["2 dogs"], ["yes"], ["yes", "no"], ["the car", "auto"], ["bird"]],
        return_per_example=True,
    )
    # strict match: 1, 0 ("yes it barks" != "yes"), 1 (any accepted answer), 1, 0
    assert result["per_example"] == [1.0, 0.0, 1.0, 1.0, 0.0]
    assert result["exact_match"] == pytest.approx(3 / 5)
    # yes/no questions are #2 and #3; the first word decides: both right
    assert result["yes_no_count"] == 2
    assert result["yes_no_accuracy"] == 1.0


def test_exact_match_plain_string_references_and_no_yes_no(loaded):
    result = loaded["exact_match_qa"].compute(predictions=["An apple"], references=["apple"])
    assert result == {"exact_match": 1.0, "yes_no_count": 0}


# --- captioning ---------------------------------------------------------------------------


def test_ptb_tokenization():
    assert ptb_tokenize("A dog, running in the park.") == [
        "a",
        "dog",
        "running",
        "in",
        "the",
        "park",
    ]
    assert ptb_tokenize("The dog's ball isn't red!") == [
        "the", "dog", "'s", "ball", "is", "n't", "red",
    ]  # fmt: skip
    assert ptb_tokenize("black-and-white photo of 3.5 cats (maybe)...") == [
        "black-and-white", "photo", "of", "3.5", "cats", "maybe",
    ]  # fmt: skip


def test_bleu4_single_sentence_by_hand(loaded):
    # cand "the cat sat on the mat" vs ref "the cat sat on a mat", both 6 tokens (BP = 1)
    # p1 = 5/6 (clipped "the" counts once), p2 = 3/5, p3 = 2/4, p4 = 1/3
    # BLEU-4 = (5/6 * 3/5 * 1/2 * 1/3) ** (1/4) = (1/12) ** (1/4)
    result = loaded["bleu4"].compute(
        predictions=["The cat sat on the mat."], references=[["the cat sat on a mat"]]
    )
    assert result["bleu4"] == pytest.approx((1 / 12) ** 0.25, rel=1e-8)
    assert result["bleu1"] == pytest.approx(5 / 6, rel=1e-8)


def test_bleu4_corpus_with_brevity_penalty_by_hand(loaded):
    # item 2: cand "a dog runs" (3), refs of length 4 and 7 -> closest ref length 4
    # corpus sums: c = 6 + 3 = 9, r = 6 + 4 = 10 -> BP = exp(1 - 10/9)
    # p1 = (5+3)/(6+3) = 8/9, p2 = (3+2)/(5+2) = 5/7, p3 = (2+1)/(4+1) = 3/5, p4 = 1/3
    # product = 8/9 * 5/7 * 3/5 * 1/3 = 8/63
    result = loaded["bleu4"].compute(
        predictions=["the cat sat on the mat", "a dog runs"],
        references=[
            ["the cat sat on a mat"],
            ["a dog runs fast", "the dog is running in the park"],
        ],
    )
    assert result["bleu4"] == pytest.approx((8 / 63) ** 0.25 * math.exp(1 - 10 / 9), rel=1e-8)


def test_rouge_l_by_hand(loaded):
    # cand "the cat sat on the mat" (6), ref "the cat is on the mat today" (7)
    # LCS = "the cat on the mat" = 5 -> P = 5/6, R = 5/7
    # F = (1 + 1.2^2) P R / (R + 1.2^2 P) = 2.44 * (25/42) / (5/7 + 1.2) = 0.758706...
    p, r = 5 / 6, 5 / 7
    expected = 2.44 * p * r / (r + 1.44 * p)
    result = loaded["rouge_l"].compute(
        predictions=["the cat sat on the mat"], references=[["the cat is on the mat today"]]
    )
    assert result["rouge_l"] == pytest.approx(expected)
    assert expected == pytest.approx(0.7587064676616916)


def test_rouge_l_takes_max_precision_and_max_recall_independently(loaded):
    # cand "a b c d": vs "a b" P=2/4, R=2/2; vs "a b c d e f g h" P=4/4, R=4/8
    # max P = 1 (second ref), max R = 1 (first ref) -> F = 1
    result = loaded["rouge_l"].compute(
        predictions=["a b c d"],
        references=[["a b", "a b c d e f g h"]],
        tokenizer="whitespace",
        return_per_example=True,
    )
    assert result["per_example"] == [pytest.approx(1.0)]


CAPTION_REFS = [
    ["a dog runs in the park"],
    ["two cats sleep on a red sofa"],
    ["a man rides a bicycle down the street"],
]


def test_cider_identical_scores_ten_unrelated_scores_zero(loaded):
    metric = loaded["cider"]
    # each candidate equals its only reference: cosine 1 at every order, no length penalty
    # -> mean over n = 1, x10 = 10 per item
    same = metric.compute(predictions=[refs[0] for refs in CAPTION_REFS], references=CAPTION_REFS)
    assert same["cider"] == pytest.approx(10.0)
    # no candidate n-gram occurs in its references -> every clipped product is 0
    other = metric.compute(
        predictions=["purple elephants fly", "zzz", "quantum"], references=CAPTION_REFS
    )
    assert other["cider"] == 0.0


def test_cider_small_corpus_by_hand(loaded):
    # 2 items: IDF = log 2 - log df. Item 1: "a dog" vs "a dog"; "a" and "a dog" occur only
    # in item 1's refs (df 1, weight log 2 > 0) -> cosine 1 at n=1,2; no 3-/4-grams -> 0.
    # score = (1 + 1 + 0 + 0) / 4 * 10 = 5. Item 2: "a cat" vs "two cats": no overlap -> 0.
    result = loaded["cider"].compute(
        predictions=["a dog", "a cat"],
        references=[["a dog"], ["two cats"]],
        return_per_example=True,
    )
    assert result["per_example"] == [pytest.approx(5.0), 0.0]
    assert result["cider"] == pytest.approx(2.5)


def test_cider_single_item_corpus_is_zero(loaded):
    # IDF = log(1) - log(1) = 0 for every reference n-gram: the corpus defines the weights
    assert loaded["cider"].compute(predictions=["a dog"], references=[["a dog"]])["cider"] == 0.0


def test_cider_invariant_to_reference_and_item_order(loaded):
    metric = loaded["cider"]
    preds = ["a dog runs in a park", "a cat sleeps on the sofa", "a man on a bike"]
    refs = [
        ["a dog runs in the park", "the dog is running on grass"],
        ["two cats sleep on a red sofa", "a cat naps", "a kitten on a couch"],
        ["a man rides a bicycle down the street", "someone cycling"],
    ]
    base = metric.compute(predictions=preds, references=refs, return_per_example=True)
    assert 0.0 < base["cider"] < 10.0
    shuffled_refs = [list(reversed(r)) for r in refs]
    swapped = metric.compute(predictions=preds, references=shuffled_refs)
    assert swapped["cider"] == pytest.approx(base["cider"])
    order = [2, 0, 1]
    permuted = metric.compute(
        predictions=[preds[i] for i in order],
        references=[refs[i] for i in order],
        return_per_example=True,
    )
    assert permuted["per_example"] == pytest.approx([base["per_example"][i] for i in order])


# --- package API and input errors --------------------------------------------------------


def test_compute_matches_direct_module_and_is_reusable(loaded):
    refs = [["2"] * 3 + ["x"] * 7]
    first = compute("vqa_accuracy", predictions=["two"], references=refs)
    second = compute("vqa_accuracy", predictions=["cat"], references=refs)
    assert first == loaded["vqa_accuracy"].compute(predictions=["two"], references=refs)
    assert second["vqa_accuracy"] == 0.0  # nothing left over from the first call


def test_unknown_metric_lists_known_ones():
    with pytest.raises(MetricInputError, match="unknown metric 'meteor'.*bleu4, cider") as info:
        compute("meteor", predictions=["a"], references=["a"])
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("name", ALL)
def test_length_mismatch_names_both_lengths(name):
    kwargs = {"choices": [CHOICES] * 3} if name == "mc_accuracy" else {}
    with pytest.raises(MetricInputError, match="3 predictions but 2 references"):
        compute(name, predictions=["a", "b", "c"], references=[["a", "b"], ["a", "b"]], **kwargs)


@pytest.mark.parametrize("name", ALL)
def test_empty_inputs_are_rejected(name):
    with pytest.raises(MetricInputError, match="no examples"):
        compute(name, predictions=[], references=[])


def test_module_helpers_reject_empty_inputs_themselves(loaded):
    # evaluate's own input handling crashes with IndexError on an empty batch for modules
    # that accept two reference formats, so the guard lives in compute(); the modules'
    # helpers still refuse zero examples when called directly.
    from evaluation.metrics.caption_text import tokenize_corpus

    calls = [
        lambda: module_of(loaded["vqa_accuracy"]).vqa_scores([], []),
        lambda: module_of(loaded["mc_accuracy"]).mc_outcomes([], [], []),
        lambda: module_of(loaded["exact_match_qa"]).qa_outcomes([], []),
        lambda: tokenize_corpus([], []),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="zero examples"):
            call()
    with pytest.raises(ValueError, match="zero examples"):
        loaded["vqa_accuracy"].compute(predictions=[], references=[])
