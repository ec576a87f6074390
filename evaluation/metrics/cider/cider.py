"""CIDEr-D exactly as coco-caption computes the score it reports as "CIDEr".

Follows tylin/coco-caption ``pycocoevalcap/cider/cider_scorer.py`` (``CiderScorer``, which is
CIDEr-D: Vedantam et al. 2015, section 4.4):

* each caption becomes TF-IDF vectors of its 1..4-grams; the IDF is
  ``log(#items) - log(max(1, df))`` where ``df`` counts the items whose *references* contain
  the n-gram. The IDF therefore comes from the evaluated corpus itself: the score of one
  caption depends on the others, and a corpus of a single item scores 0 (every IDF is
  ``log 1 - log 1``). Evaluate whole splits, not single items.
* for each reference and order n: cosine similarity where the candidate's weights are
  clipped at the reference's (``min(hyp, ref) * ref``, CIDEr-D's anti-gaming clip), times a
  Gaussian length penalty ``exp(-(len_c - len_r)^2 / (2 * 6^2))``; lengths are counted as
  coco-caption does, by bigrams (``if n == 1: length += term_freq``), which differs from
  the word count only for empty captions;
* the item score is the mean over n = 1..4, averaged over references, times 10; the corpus
  score is the mean over items (so a perfect corpus of distinct captions with one reference
  each scores 10, not 1).
"""

import math
from collections import Counter, defaultdict

import evaluate

from evaluation.metrics.caption_text import caption_features, tokenize_corpus

MAX_N = 4
SIGMA = 6.0

_DESCRIPTION = """\
CIDEr-D (Vedantam et al. 2015) as in coco-caption: TF-IDF n-gram (1-4) cosine similarity with
clipping and a Gaussian length penalty (sigma 6), document frequencies from the references of
the evaluated corpus, x10.
"""

_KWARGS_DESCRIPTION = """\
Args:
    predictions (list[str]): one generated caption per item.
    references (list[list[str]] or list[str]): the reference captions of each item.
    tokenizer (str): "ptb" (default) or "whitespace".
    return_per_example (bool): also return "per_example", the score of each item.
Returns:
    {"cider": float >= 0 (10 for captions identical to their only reference)}
"""

_CITATION = """\
@inproceedings{vedantam2015cider,
  title={CIDEr: Consensus-based Image Description Evaluation},
  author={Vedantam, Ramakrishna and Zitnick, C. Lawrence and Parikh, Devi},
  booktitle={CVPR}, year={2015}
}
"""


def ngram_counts(tokens: list[str], n: int = MAX_N) -> Counter:
    """Counts of every 1..n-gram of ``tokens`` (coco-caption ``precook``)."""
    counts = Counter()
    for k in range(1, n + 1):
        for i in range(len(tokens) - k + 1):
            counts[tuple(tokens[i : i + k])] += 1
    return counts


def _vectors(counts: Counter, doc_freq: Counter, log_items: float, n: int):
    """``counts2vec``: TF-IDF vector and norm per order, and the (bigram) length."""
    vec = [defaultdict(float) for _ in range(n)]
    norm = [0.0] * n
    length = 0
    for ngram, tf in counts.items():
        order = len(ngram) - 1
        weight = tf * (log_items - math.log(max(1.0, doc_freq[ngram])))
        vec[order][ngram] = weight
        norm[order] += weight**2
        if order == 1:
            length += tf
    return vec, [math.sqrt(value) for value in norm], length


def _similarity(hyp, ref, n: int, sigma: float) -> float:
    """``sim`` summed over orders: clipped cosine times the Gaussian length penalty."""
    (vec_h, norm_h, len_h), (vec_r, norm_r, len_r) = hyp, ref
    penalty = math.exp(-((len_h - len_r) ** 2) / (2 * sigma**2))
    total = 0.0
    for order in range(n):
        value = sum(
            min(weight, vec_r[order].get(ngram, 0.0)) * vec_r[order].get(ngram, 0.0)
            for ngram, weight in vec_h[order].items()
        )
        if norm_h[order] != 0 and norm_r[order] != 0:
            value /= norm_h[order] * norm_r[order]
        total += value * penalty
    return total


def cider_d_scores(
    hyps: list[list[str]], refs: list[list[list[str]]], n: int = MAX_N, sigma: float = SIGMA
) -> list[float]:
    """Per-item CIDEr-D of a tokenized corpus (``CiderScorer.compute_score``'s list)."""
    hyp_counts = [ngram_counts(hyp, n) for hyp in hyps]
    ref_counts = [[ngram_counts(ref, n) for ref in references] for references in refs]
    doc_freq = Counter()
    for references in ref_counts:
        doc_freq.update({ngram for counts in references for ngram in counts})
    log_items = math.log(float(len(refs)))
    scores = []
    for counts, references in zip(hyp_counts, ref_counts, strict=True):
        hyp = _vectors(counts, doc_freq, log_items, n)
        total = sum(
            _similarity(hyp, _vectors(ref, doc_freq, log_items, n), n, sigma) for ref in references
        )
        scores.append(total / n / len(references) * 10.0)
    return scores


class Cider(evaluate.Metric):
    """``evaluate`` wrapper around :func:`cider_d_scores` on PTB-tokenized captions."""

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
        scores = cider_d_scores(hyps, refs)
        result = {"cider": sum(scores) / len(scores)}
        if return_per_example:
            result["per_example"] = scores
        return result
