"""Masking credentials before anything reaches MLflow, a log line or an error message.

Recipes, environments and URIs can carry secrets (S3 keys, ``user:pass@`` in a tracking
URI, pre-signed URL signatures). Every place that writes user-supplied text somewhere
durable (params and tags in :mod:`commit_train.tracking`, error messages of
:mod:`commit_train.registry`) goes through these functions, so there is one definition
of "looks secret" to test.
"""

from __future__ import annotations

import re
from typing import Any

try:  # MLflow's own limit, so a future MLflow that changes it is followed.
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH
except ImportError:  # pragma: no cover - the 3.x value
    MAX_PARAM_VAL_LENGTH = 6000

MASK = "***"
_TRUNCATION_MARK = "...[truncated]"
# A key "looks secret" when one of its underscore/dot/dash separated parts is one of these
# (or the key contains a compound like access_key). Matching on parts avoids masking
# harmless keys such as "tokenizer" or "author".
_SECRET_KEY_RE = re.compile(
    r"(?:^|[._\-/])(?:password|passwd|pwd|secret|token|tokens|credential|credentials|"
    r"api[_\-]?key|access[_\-]?key|private[_\-]?key|secret[_\-]?key|session[_\-]?key|"
    r"auth|authorization|bearer|signature)(?:$|[._\-/])",
    re.IGNORECASE,
)
# scheme://user:pass@host or scheme://token@host -> scheme://***@host
_URI_USERINFO_RE = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.\-]*://)[^/\s@]+@")
# ?token=...&X-Amz-Signature=... in query strings (pre-signed URLs, webhook tokens)
_QUERY_SECRET_RE = re.compile(
    r"([?&][^=&\s]*(?:token|secret|password|passwd|key|signature|credential)[^=&\s]*=)[^&\s#]+",
    re.IGNORECASE,
)


def redact_text(text: str) -> str:
    """Mask credentials embedded in any URIs inside ``text``.

    Used on parameter values and on exception messages before they are logged, because a
    connection error from the MLflow client repeats the URI it failed to reach.
    """
    text = _URI_USERINFO_RE.sub(lambda m: m.group(1) + MASK + "@", text)
    return _QUERY_SECRET_RE.sub(lambda m: m.group(1) + MASK, text)


def is_secret_key(key: str) -> bool:
    """True when a parameter/tag name suggests its value is a credential."""
    return bool(_SECRET_KEY_RE.search(key))


def _truncate(value: str, limit: int) -> str:
    """Cut ``value`` to ``limit`` characters with a visible marker.

    MLflow rejects (or, depending on an env var, silently cuts) longer values; rejecting
    would fail the whole batch, so we cut ourselves and say so in the value.
    """
    if len(value) <= limit:
        return value
    return value[: limit - len(_TRUNCATION_MARK)] + _TRUNCATION_MARK


def redact_params(flat: dict[str, Any], limit: int = MAX_PARAM_VAL_LENGTH) -> dict[str, str]:
    """Return MLflow-safe string values: secrets masked, URI credentials masked, truncated.

    Keys whose name looks secret get :data:`MASK` (kept, not dropped, so a reader sees that
    the setting existed); empty/None secret values stay as they are since they reveal
    nothing. Every other value is stringified like ``mlflow.log_params`` does, then has
    ``user:pass@`` and secret query parameters in URIs masked.
    """
    out: dict[str, str] = {}
    for key, value in flat.items():
        key = str(key)
        if is_secret_key(key) and value not in (None, ""):
            out[key] = MASK
            continue
        out[key] = _truncate(redact_text(str(value)), limit)
    return out
