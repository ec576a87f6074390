"""Exact match for short-answer QA (ClothoAQA, IconQA fill-in-the-blank), plus yes/no accuracy.

Normalization follows the SQuAD v1.1 ``evaluate-v1.1.py`` ``normalize_answer`` (lower-case,
delete punctuation, delete articles, collapse spaces), extended with number words to digits
("two" == "2") because one-word QA sets mix both spellings. A prediction is correct when
it equals any accepted answer after normalization: several annotators may give different
but equally valid answers (ClothoAQA has several per question).

``yes_no_accuracy`` is computed on the questions whose accepted answers are all "yes" or
"no". There the model's first word decides ("Yes, a dog barks." counts as "yes"), because
chat models rarely answer a binary question with a bare word; ``exact_match`` itself stays
strict. When no question is yes/no the key is left out (a 0 would read as a failure) and
``yes_no_count`` is 0.
"""

import re
import string

import datasets
import evaluate

NUMBER_WORDS = {
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
    "eleven": "11",
    "twelve": "12",
    "thirteen": "13",
    "fourteen": "14",
    "fifteen": "15",
    "sixteen": "16",
    "seventeen": "17",
    "eighteen": "18",
    "nineteen": "19",
    "twenty": "20",
}
ARTICLES = {"a", "an", "the"}
YES_NO = {"yes", "no"}
_PUNCT = re.compile("[" + re.escape(string.punctuation) + "]")

_DESCRIPTION = """\
Exact match after normalization (lower-case, no punctuation, no articles, number words as
digits) against any accepted answer, plus yes/no accuracy on the yes/no questions.
"""

_KWARGS_DESCRIPTION = """\
Args:
    predictions (list[str]): the model's answers.
    references (list[list[str]] or list[str]): the accepted answers of each question.
    return_per_example (bool): also return "per_example" (1.0/0.0 per question).
Returns:
    {"exact_match": float, "yes_no_count": int, "yes_no_accuracy": float (if yes_no_count)}
"""


def normalize_answer(text: str) -> str:
    """SQuAD ``normalize_answer`` plus number words -> digits ("The Two dogs." -> "2 dogs")."""
    words = _PUNCT.sub("", text.lower()).split()
    return " ".join(NUMBER_WORDS.get(word, word) for word in words if word not in ARTICLES)


def _as_list(answers):
    return [answers] if isinstance(answers, str) else list(answers)


def qa_outcomes(predictions, references):
    """(exact match, yes/no correctness or None) per question; ValueError on bad inputs."""
    if len(predictions) != len(references):
        raise ValueError(
            f"got {len(predictions)} predictions but {len(references)} references; "
            "they must pair up one to one"
        )
    if not predictions:
        raise ValueError("exact match of zero examples is undefined: predictions are empty")
    outcomes = []
    for index, (prediction, answers) in enumerate(zip(predictions, references, strict=True)):
        accepted = {normalize_answer(answer) for answer in _as_list(answers)}
        if not accepted:
            raise ValueError(f"example {index}: no accepted answer")
        predicted = normalize_answer(prediction)
        exact = predicted in accepted
        yes_no = None
        if accepted <= YES_NO:
            first = predicted.split()[0] if predicted else ""
            yes_no = first in accepted
        outcomes.append((exact, yes_no))
    return outcomes


class ExactMatchQa(evaluate.Metric):
    """``evaluate`` wrapper around :func:`qa_outcomes`."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features(
                    {
                        "predictions": datasets.Value("string"),
                        "references": datasets.Sequence(datasets.Value("string")),
                    }
                ),
                datasets.Features(
                    {
                        "predictions": datasets.Value("string"),
                        "references": datasets.Value("string"),
                    }
                ),
            ],
        )

    def _compute(self, predictions, references, return_per_example=False):
        outcomes = qa_outcomes(predictions, references)
        result = {"exact_match": sum(exact for exact, _ in outcomes) / len(outcomes)}
        yes_no = [correct for _, correct in outcomes if correct is not None]
        result["yes_no_count"] = len(yes_no)
        if yes_no:
            result["yes_no_accuracy"] = sum(yes_no) / len(yes_no)
        if return_per_example:
            result["per_example"] = [float(exact) for exact, _ in outcomes]
        return result
