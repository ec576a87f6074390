"""Caption tokenization shared by the ``bleu4``, ``rouge_l`` and ``cider`` metric modules.

coco-caption (tylin/coco-caption, ``pycocoevalcap/tokenizer/ptbtokenizer.py``) runs every
caption through Stanford CoreNLP's ``PTBTokenizer -lowerCase`` and then deletes the
punctuation tokens ``'' ' `` ` -LRB- -RRB- -LCB- -RCB- . ? ! , : - -- ... ;`` before any
scorer sees them. CoreNLP is Java and cannot run here, so :func:`ptb_tokenize` reproduces
the parts that matter for captions: lower-casing, splitting clitics the PTB way
("don't" -> "do n't", "dog's" -> "dog 's", "can't" -> "ca n't"), splitting off and then
deleting punctuation, keeping hyphenated words and decimals ("black-and-white", "3.5")
whole. On plain captions it gives CoreNLP's tokens; on exotic input (URLs, abbreviations
like "u.s.") it can differ, which shifts scores slightly against published numbers.

The metric modules import this file by absolute name because ``evaluate.load`` copies only
the files a module imports relatively from its own folder; a package import keeps one copy.
"""

from __future__ import annotations

import re

import datasets

_CLITIC = re.compile(r"(?<=\w)(n't|'s|'re|'ve|'ll|'d|'m)\b")
_SPLIT_PUNCT = re.compile(r"(\.\.\.|--|[,;!?\"()\[\]{}`])")
_EDGE_PUNCT = ".:'-"
CLITICS = {"n't", "'s", "'re", "'ve", "'ll", "'d", "'m"}


def ptb_tokenize(text: str) -> list[str]:
    """Tokens of ``text`` as coco-caption's PTB tokenizer + punctuation filter give them."""
    text = text.lower().replace("\n", " ").replace("\t", " ")
    text = _CLITIC.sub(r" \1", text)
    text = _SPLIT_PUNCT.sub(" ", text)
    tokens = []
    for raw in text.split():
        token = raw if raw in CLITICS else raw.strip(_EDGE_PUNCT)
        if token:
            tokens.append(token)
    return tokens


def tokenize_corpus(predictions, references, tokenizer="ptb"):
    """Validate a captioning batch and tokenize it.

    ``references`` holds one list of reference captions per prediction (a bare string is
    taken as a single reference). ``tokenizer="ptb"`` applies :func:`ptb_tokenize`;
    ``"whitespace"`` only splits on spaces, for text that was tokenized beforehand.
    Returns ``(prediction tokens, reference tokens)``; raises ValueError on a length
    mismatch, an empty batch or an example without references.
    """
    if tokenizer == "ptb":
        split = ptb_tokenize
    elif tokenizer == "whitespace":
        split = str.split
    else:
        raise ValueError(f"unknown tokenizer {tokenizer!r}; expected 'ptb' or 'whitespace'")
    if len(predictions) != len(references):
        raise ValueError(
            f"got {len(predictions)} predictions but {len(references)} references; "
            "they must pair up one to one"
        )
    if not predictions:
        raise ValueError("a captioning score of zero examples is undefined: predictions are empty")
    hyps, refs = [], []
    for index, (prediction, captions) in enumerate(zip(predictions, references, strict=True)):
        captions = [captions] if isinstance(captions, str) else list(captions)
        if not captions:
            raise ValueError(f"example {index}: no reference caption")
        hyps.append(split(prediction))
        refs.append([split(caption) for caption in captions])
    return hyps, refs


def caption_features() -> list[datasets.Features]:
    """Input schemas shared by the caption metrics: one prediction string against a list of
    references, or against a single reference string."""
    return [
        datasets.Features(
            {
                "predictions": datasets.Value("string"),
                "references": datasets.Sequence(datasets.Value("string")),
            }
        ),
        datasets.Features(
            {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
        ),
    ]
