"""Corpus BLEU-1..4 exactly as coco-caption computes it for captioning papers.

Follows tylin/coco-caption ``pycocoevalcap/bleu/bleu_scorer.py`` (``BleuScorer`` with
``option="closest"``, as ``Bleu.compute_score`` calls it): n-gram counts are clipped by the
maximum count in any one reference, clipped matches and candidate n-grams are summed over
the whole corpus before dividing (corpus BLEU, not a mean of sentence BLEUs), the reference
length of each sentence is the one closest to the candidate's (ties go to the shorter), and
the brevity penalty ``exp(1 - r/c)`` applies when the summed candidate length ``c`` is below
the summed reference length ``r``. The ``tiny``/``small`` constants (1e-15, 1e-9) that
coco-caption adds to avoid dividing by zero are kept: with every precision non-zero the
result equals NLTK's ``corpus_bleu`` to ~1e-9; with a zero precision it is ~0 where NLTK
returns exactly 0.
"""

import math
from collections import Counter

import evaluate

from evaluation.metrics.caption_text import caption_features, tokenize_corpus

MAX_N = 4
_TINY = 1e-15
_SMALL = 1e-9

_DESCRIPTION = """\
Corpus BLEU (Papineni et al. 2002) as in coco-caption: clipped n-gram precisions summed over
the corpus, geometric mean of orders 1..n, brevity penalty with the closest reference length.
"""

_KWARGS_DESCRIPTION = """\
Args:
    predictions (list[str]): one generated caption per item.
    references (list[list[str]] or list[str]): the reference captions of each item.
    tokenizer (str): "ptb" (default; coco-caption's PTB tokenization and punctuation
        removal) or "whitespace" (already tokenized text).
Returns:
    {"bleu4": float, "bleu1": float, "bleu2": float, "bleu3": float} in [0, 1]
"""

_CITATION = """\
@inproceedings{papineni2002bleu,
  title={BLEU: a Method for Automatic Evaluation of Machine Translation},
  author={Papineni, Kishore and Roukos, Salim and Ward, Todd and Zhu, Wei-Jing},
  booktitle={ACL}, year={2002}
}
"""


def ngram_counts(tokens: list[str], n: int = MAX_N) -> Counter:
    """Counts of every 1..n-gram of ``tokens`` (coco-caption ``precook``)."""
    counts = Counter()
    for k in range(1, n + 1):
        for i in range(len(tokens) - k + 1):
            counts[tuple(tokens[i : i + k])] += 1
    return counts


def corpus_bleu(hyps: list[list[str]], refs: list[list[list[str]]], n: int = MAX_N) -> list[float]:
    """BLEU-1..n of a tokenized corpus, as ``BleuScorer.compute_score(option="closest")``."""
    guess = [0] * n
    correct = [0] * n
    test_len = 0
    ref_len = 0
    for hyp, references in zip(hyps, refs, strict=True):
        max_counts = Counter()
        for ref in references:
            for ngram, count in ngram_counts(ref, n).items():
                max_counts[ngram] = max(max_counts[ngram], count)
        length = len(hyp)
        test_len += length
        ref_len += min((abs(len(ref) - length), len(ref)) for ref in references)[1]
        for ngram, count in ngram_counts(hyp, n).items():
            correct[len(ngram) - 1] += min(max_counts.get(ngram, 0), count)
        for k in range(n):
            guess[k] += max(0, length - k)
    scores = []
    product = 1.0
    for k in range(n):
        product *= (correct[k] + _TINY) / (guess[k] + _SMALL)
        scores.append(product ** (1.0 / (k + 1)))
    ratio = (test_len + _TINY) / (ref_len + _SMALL)
    if ratio < 1:
        scores = [score * math.exp(1 - 1 / ratio) for score in scores]
    return scores


class Bleu4(evaluate.Metric):
    """``evaluate`` wrapper around :func:`corpus_bleu` on PTB-tokenized captions."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=caption_features(),
            reference_urls=["https://github.com/tylin/coco-caption"],
        )

    def _compute(self, predictions, references, tokenizer="ptb"):
        hyps, refs = tokenize_corpus(predictions, references, tokenizer)
        scores = corpus_bleu(hyps, refs)
        return {"bleu4": scores[3], "bleu1": scores[0], "bleu2": scores[1], "bleu3": scores[2]}
