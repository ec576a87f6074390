"""VQA accuracy: the official soft score over 10 human answers.

Follows GT-Vision-Lab/VQA ``PythonEvaluationTools/vqaEvaluation/vqaEval.py``
(``VQAEval.evaluate``, ``processPunctuation``, ``processDigitArticle``) line for line, and
the TextVQA evaluator of facebookresearch/mmf (``mmf/utils/m4c_evaluators.py``:
``EvalAIAnswerProcessor``, ``TextVQAAccuracyEvaluator``), which applies the same tables to
both sides. Reported VQA numbers are only comparable when computed this way, so nothing
here is "improved":

* the score of a prediction is the mean over the ``n`` human answers ``i`` of
  ``min(1, #{j != i : answer_j == prediction} / 3)`` (leave one annotator out, the
  10-choose-9 average); with 10 answers, 1/2/3/4+ matches score 0.3/0.6/0.9/1.0;
* ``mode="evalai"`` (default; mmf, TextVQA's official evaluator): prediction *and* human
  answers go through ``EvalAIAnswerProcessor`` (lower-case, drop ``,`` and ``?``, split
  ``'s``, then vqaEval's punctuation, number-word, article and contraction steps). The
  benchmarks here ship raw answers (TextVQA) or pre-normalized ones (A-OKVQA); normalizing
  both sides gives the official number for either, so this is the default;
* ``mode="vqaeval"`` (``vqaEval.py`` exactly): only the prediction is fully normalized; the
  human answers are used as given (the VQA v2 annotation files were normalized before
  release) and only get the punctuation step, and only when they are not unanimous, so a
  raw unanimous "Two" never matches the prediction "two" (normalized to "2").

An example needs at least two human answers: with a single one the leave-one-out rule can
never give credit (for one accepted answer use ``exact_match_qa``).
"""

import datasets
import evaluate

from .vqa_tables import ARTICLES, COMMA_STRIP, CONTRACTIONS, MANUAL_MAP, PERIOD_STRIP, PUNCT

MODES = ("evalai", "vqaeval")

_DESCRIPTION = """\
VQA accuracy (Antol et al. 2015; official vqaEval.py): each prediction scores the average
over the human answers i of min(1, #other human answers equal to the prediction / 3), after
the official answer normalization. Returns {"vqa_accuracy": mean over examples}.
"""

_KWARGS_DESCRIPTION = """\
Args:
    predictions (list[str]): one generated answer per question.
    references (list[list[str]]): the human answers of each question (10 in VQA v2,
        TextVQA and A-OKVQA direct answers); at least 2 per question.
    mode (str): "evalai" (default; mmf's EvalAIAnswerProcessor on prediction and answers,
        TextVQA's official evaluator) or "vqaeval" (vqaEval.py: answers used as given).
    return_per_example (bool): also return "per_example", the score of each question.
Returns:
    {"vqa_accuracy": float in [0, 1]} (plus "per_example": list[float] when asked).
"""

_CITATION = """\
@inproceedings{antol2015vqa,
  title={VQA: Visual Question Answering},
  author={Antol, Stanislaw and Agrawal, Aishwarya and Lu, Jiasen and Mitchell, Margaret
          and Batra, Dhruv and Zitnick, C. Lawrence and Parikh, Devi},
  booktitle={ICCV}, year={2015}
}
"""


def process_punctuation(text: str) -> str:
    """``VQAEval.processPunctuation``: drop or space out punctuation, strip periods.

    A punctuation mark is deleted when it touches a space anywhere in the text, or when the
    text contains a digit-comma-digit group ("1,000"); otherwise it becomes a space. The
    original passes ``re.UNICODE`` (32) as ``count`` to ``sub`` by mistake, so at most 32
    periods are stripped; kept for fidelity.
    """
    out = text
    for p in PUNCT:
        if (p + " " in text or " " + p in text) or COMMA_STRIP.search(text) is not None:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return PERIOD_STRIP.sub("", out, count=32)


def process_digit_article(text: str) -> str:
    """``VQAEval.processDigitArticle``: lower-case, number words to digits, drop articles,
    restore apostrophes of common contractions ("dont" -> "don't")."""
    words = []
    for word in text.lower().split():
        word = MANUAL_MAP.get(word, word)
        if word not in ARTICLES:
            words.append(word)
    return " ".join(CONTRACTIONS.get(word, word) for word in words)


def normalize_prediction(answer: str) -> str:
    """How ``vqaEval.py`` normalizes a model answer ("Two" -> "2", "the dog." -> "dog")."""
    answer = answer.replace("\n", " ").replace("\t", " ").strip()
    return process_digit_article(process_punctuation(answer))


def normalize_evalai(answer: str) -> str:
    """``EvalAIAnswerProcessor.__call__`` (mmf): applied to predictions *and* human answers."""
    answer = answer.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    answer = answer.replace("\n", " ").replace("\t", " ").strip()
    return process_digit_article(process_punctuation(answer))


def leave_one_out_score(prediction: str, answers: list[str]) -> float:
    """Mean over i of min(1, #{j != i : answers[j] == prediction} / 3) (``vqaEval.py``)."""
    matches = sum(answer == prediction for answer in answers)
    total = 0.0
    for answer in answers:
        others = matches - (answer == prediction)
        total += min(1.0, others / 3)
    return total / len(answers)


def vqa_score(prediction: str, answers: list[str], mode: str = "evalai") -> float:
    """Score of one question, normalizing prediction and human answers as ``mode`` says."""
    if mode not in MODES:
        raise ValueError(f"unknown VQA accuracy mode {mode!r}; expected one of {MODES}")
    if len(answers) < 2:
        raise ValueError(
            f"VQA accuracy needs at least 2 human answers per question, got {len(answers)} "
            "(the leave-one-out rule gives a single answer no credit; use exact_match_qa)"
        )
    if mode == "evalai":
        return leave_one_out_score(
            normalize_evalai(prediction), [normalize_evalai(a) for a in answers]
        )
    answers = list(answers)
    if len(set(answers)) > 1:
        answers = [process_punctuation(a) for a in answers]
    return leave_one_out_score(normalize_prediction(prediction), answers)


def vqa_scores(
    predictions: list[str], references: list[list[str]], mode: str = "evalai"
) -> list[float]:
    """Per-question scores; raises ValueError on empty or mismatched inputs."""
    if len(predictions) != len(references):
        raise ValueError(
            f"got {len(predictions)} predictions but {len(references)} references; "
            "they must pair up one to one"
        )
    if not predictions:
        raise ValueError("VQA accuracy of zero examples is undefined: predictions are empty")
    scores = []
    for index, (prediction, answers) in enumerate(zip(predictions, references, strict=True)):
        try:
            scores.append(vqa_score(prediction, answers, mode))
        except ValueError as error:
            raise ValueError(f"example {index}: {error}") from error
    return scores


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class VqaAccuracy(evaluate.Metric):
    """``evaluate`` wrapper around :func:`vqa_scores`."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Value("string"),
                    "references": datasets.Sequence(datasets.Value("string")),
                }
            ),
            reference_urls=["https://github.com/GT-Vision-Lab/VQA"],
        )

    def _compute(self, predictions, references, mode="evalai", return_per_example=False):
        scores = vqa_scores(predictions, references, mode)
        result = {"vqa_accuracy": sum(scores) / len(scores)}
        if return_per_example:
            result["per_example"] = scores
        return result
