"""Multiple-choice accuracy for free-text model answers (A-OKVQA MC, IconQA).

A generative model answers a multiple-choice question with a letter ("B", "(B)", "B."),
with the option text, with both ("B. red"), or inside a sentence ("The answer is (B).").
Each prediction is mapped to a choice index and compared with the index of the reference
option text. The mapping order matters and is fixed so results are reproducible:

1. the whole answer equals one option text (case, surrounding punctuation and spacing
   ignored) - text wins over letters, so an option that *is* "a" or "B" still matches;
2. the same after dropping a leading "answer:", "the answer is", "option", "choice";
3. a lone letter ("B", "(b)", "[B]", "B.", "B)") within the number of choices;
4. a leading letter followed by the option text or anything else ("B. red", "(B) red",
   "B: red"); an upper-case letter needs ``.``, ``)`` or ``:`` after it, so the article in
   "A red car" is not read as option A;
5. exactly one option text occurring as whole words inside the answer (an option that is a
   sub-phrase of another matched option, "red" within "dark red", does not count).

Anything else is unparsed and counts as wrong; ``unparsed_rate`` reports how often that
happened, so a prompt that makes the model ramble shows up as such and not as a weak model.
The letter-extraction rules mirror the common LLaVA/lmms-eval multiple-choice parsers.
"""

import re
import string

import datasets
import evaluate

_DESCRIPTION = """\
Multiple-choice accuracy: each free-text prediction (letter, option text, or both) is mapped
to a choice index and compared with the index of the reference option text. Returns
{"mc_accuracy", "unparsed_rate"}.
"""

_KWARGS_DESCRIPTION = """\
Args:
    predictions (list[str]): the model's answers.
    references (list[str]): the correct option *text* of each question.
    choices (list[list[str]]): the options of each question, in the order they were shown
        (letter A is choices[i][0]).
    return_per_example (bool): also return "per_example" (1.0/0.0 per question) and
        "predicted_index" (-1 where the answer could not be parsed).
Returns:
    {"mc_accuracy": float, "unparsed_rate": float}
"""

_LETTERS = string.ascii_uppercase
_ANSWER_PREFIX = re.compile(
    r"^\s*(?:the\s+)?(?:correct\s+|best\s+|final\s+)?(?:answer|option|choice)(?:\s+is)?\s*[:\-]?\s*",
    re.IGNORECASE,
)
_LETTER_ONLY = re.compile(r"^\s*[\(\[]?([A-Za-z])[\)\]]?[.:)]?\s*$")
_LETTER_PREFIX = re.compile(r"^\s*(?:[\(\[]([A-Za-z])[\)\]]|([A-Z])[.:)])\s*\S")
_EDGE_PUNCT = string.punctuation + " \t\n"


def normalize_option(text: str) -> str:
    """Lower-case, collapse spaces, strip punctuation at both ends ("Red." == "red")."""
    return " ".join(text.lower().split()).strip(_EDGE_PUNCT)


def _text_index(text: str, options: list[str]) -> int:
    norm = normalize_option(text)
    for index, option in enumerate(options):
        if norm and norm == option:
            return index
    return -1


def _contained_index(text: str, options: list[str]) -> int:
    padded = " " + " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split()) + " "
    found = []
    for index, option in enumerate(options):
        words = " ".join(re.sub(r"[^\w\s]", " ", option).split())
        if words and " " + words + " " in padded:
            found.append((index, words))
    maximal = [
        index
        for index, words in found
        if not any(words != other and " " + words + " " in " " + other + " " for _, other in found)
    ]
    return maximal[0] if len(maximal) == 1 else -1


def parse_choice(prediction: str, choices: list[str]) -> int:
    """Index of the choice ``prediction`` names, or -1 (rules in the module docstring)."""
    options = [normalize_option(choice) for choice in choices]
    index = _text_index(prediction, options)
    if index >= 0:
        return index
    stripped = _ANSWER_PREFIX.sub("", prediction, count=1)
    index = _text_index(stripped, options)
    if index >= 0:
        return index
    match = _LETTER_ONLY.match(stripped)
    if match is None:
        prefix = _LETTER_PREFIX.match(stripped)
        letter = (prefix.group(1) or prefix.group(2)) if prefix else None
    else:
        letter = match.group(1)
    if letter is not None:
        position = _LETTERS.index(letter.upper())
        return position if position < len(choices) else -1
    return _contained_index(prediction, options)


def mc_outcomes(predictions, references, choices):
    """(predicted index, correct index) per question; ValueError on malformed inputs."""
    if not len(predictions) == len(references) == len(choices):
        raise ValueError(
            f"got {len(predictions)} predictions, {len(references)} references and "
            f"{len(choices)} choice lists; they must pair up one to one"
        )
    if not predictions:
        raise ValueError("multiple-choice accuracy of zero examples is undefined")
    outcomes = []
    for index, (prediction, reference, options) in enumerate(
        zip(predictions, references, choices, strict=True)
    ):
        if not options or len(options) > len(_LETTERS):
            raise ValueError(f"example {index}: needs 1 to 26 choices, got {len(options)}")
        gold = _text_index(reference, [normalize_option(option) for option in options])
        if gold < 0:
            raise ValueError(
                f"example {index}: reference {reference!r} is not one of the choices {options!r}"
            )
        outcomes.append((parse_choice(prediction, options), gold))
    return outcomes


class McAccuracy(evaluate.Metric):
    """``evaluate`` wrapper around :func:`mc_outcomes`."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Value("string"),
                    "references": datasets.Value("string"),
                    "choices": datasets.Sequence(datasets.Value("string")),
                }
            ),
        )

    def _compute(self, predictions, references, choices, return_per_example=False):
        outcomes = mc_outcomes(predictions, references, choices)
        correct = [float(predicted == gold) for predicted, gold in outcomes]
        result = {
            "mc_accuracy": sum(correct) / len(correct),
            "unparsed_rate": sum(predicted < 0 for predicted, _ in outcomes) / len(outcomes),
        }
        if return_per_example:
            result["per_example"] = correct
            result["predicted_index"] = [predicted for predicted, _ in outcomes]
        return result
