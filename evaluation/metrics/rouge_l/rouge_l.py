"""Sentence-level ROUGE-L F-measure averaged over captions, as in coco-caption.

Follows tylin/coco-caption ``pycocoevalcap/rouge/rouge.py`` (``Rouge.calc_score``): for each
caption, the longest common subsequence with every reference gives a precision
``LCS / len(candidate)`` and a recall ``LCS / len(reference)``; the *maximum* precision and
the *maximum* recall over the references are taken independently (they may come from
different references) and combined as ``(1 + b^2) P R / (R + b^2 P)`` with ``b = 1.2``,
which weighs recall slightly more. The corpus score is the plain mean over captions. This
differs from the ``rouge_score`` package (Google) used by many HF scripts, which takes the
best F over references with b = 1 and stems words; captioning papers report this one.
"""

import evaluate

from evaluation.metrics.caption_text import caption_features, tokenize_corpus

BETA = 1.2

_DESCRIPTION = """\
ROUGE-L (Lin 2004) as in coco-caption: LCS-based F-measure with beta=1.2, max precision and
max recall over references, averaged over captions.
"""

_KWARGS_DESCRIPTION = """\
Args:
    predictions (list[str]): one generated caption per item.
    references (list[list[str]] or list[str]): the reference captions of each item.
    tokenizer (str): "ptb" (default) or "whitespace".
    return_per_example (bool): also return "per_example", the score of each caption.
Returns:
    {"rouge_l": float in [0, 1]}
"""

_CITATION = """\
@inproceedings{lin2004rouge,
  title={ROUGE: A Package for Automatic Evaluation of Summaries},
  author={Lin, Chin-Yew}, booktitle={Text Summarization Branches Out}, year={2004}
}
"""


def lcs_length(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence (coco-caption ``my_lcs``), O(len a * len b)."""
    previous = [0] * (len(b) + 1)
    for token in a:
        current = [0]
        for j, other in enumerate(b):
            current.append(previous[j] + 1 if token == other else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l_score(hyp: list[str], refs: list[list[str]], beta: float = BETA) -> float:
    """``Rouge.calc_score`` for one tokenized caption; 0 when it or every LCS is empty."""
    if not hyp:
        return 0.0
    precisions, recalls = [], []
    for ref in refs:
        lcs = lcs_length(ref, hyp)
        precisions.append(lcs / len(hyp))
        recalls.append(lcs / len(ref) if ref else 0.0)
    p, r = max(precisions), max(recalls)
    if p == 0 or r == 0:
        return 0.0
    return (1 + beta**2) * p * r / (r + beta**2 * p)


class RougeL(evaluate.Metric):
    """``evaluate`` wrapper around :func:`rouge_l_score` on PTB-tokenized captions."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=caption_features(),
            reference_urls=["https://github.com/tylin/coco-caption"],
        )

    def _compute(self, predictions, references, tokenizer="ptb", return_per_example=False):
        hyps, refs = tokenize_corpus(predictions, references, tokenizer)
        scores = [
            rouge_l_score(hyp, references) for hyp, references in zip(hyps, refs, strict=True)
        ]
        result = {"rouge_l": sum(scores) / len(scores)}
        if return_per_example:
            result["per_example"] = scores
        return result
