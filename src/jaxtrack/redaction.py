"""Keeping credentials out of logged hyperparameters.

Every built-in backend, and :func:`jaxtrack.log_hyperparameters` /
:func:`jaxtrack.log_configuration` before any backend (user-written ones
included) sees the values, replaces the value of a key that names a
credential with :data:`REDACTED`. A key names a credential when one of its
path components, split into words at ``_``, ``-``, ``.``, spaces and
camelCase, holds a word of :data:`SECRET_WORDS` or a pair of
:data:`SECRET_PAIRS`, or ends with the word ``token`` (``hf_token``,
``authToken``) other than a tokenizer's special token (``eos_token``,
``pad_token``). ``tokens``, ``max_tokens`` and ``tokenizer`` are kept. Values
that cannot be a credential (``True``/``False``/``None``) are kept too, so
``use_auth_token: true`` is still visible.

>>> redact({"wandb": {"api_key": "abc123"}, "lr": 0.1, "hf_token": "hf_x", "eos_token": "</s>"})
{'wandb': {'api_key': '[redacted]'}, 'lr': 0.1, 'hf_token': '[redacted]', 'eos_token': '</s>'}
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from typing import Any

REDACTED = "[redacted]"
"""What a credential's value is replaced with."""

SECRET_WORDS = frozenset(
    {
        "apikey",
        "authorization",
        "cookie",
        "credential",
        "credentials",
        "passphrase",
        "passwd",
        "password",
        "privatekey",
        "secret",
        "secrets",
    }
)
"""Words that make a key a credential wherever they appear in it."""

SECRET_PAIRS = frozenset(
    {
        ("access", "key"),
        ("api", "key"),
        ("auth", "key"),
        ("client", "secret"),
        ("private", "key"),
        ("secret", "key"),
        ("session", "key"),
        ("signing", "key"),
    }
)
"""Adjacent words that make a key a credential (``api_key``, ``AWS_SECRET_ACCESS_KEY``)."""

_SPECIAL_TOKENS = frozenset(
    {"bos", "eos", "pad", "unk", "sep", "cls", "mask", "eot", "bot", "start", "end", "special", "image", "max", "num"}
)
_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")


def is_secret_key(key: str) -> bool:
    """Whether ``key`` (one name, or an ``"a/b"`` path) names a credential.

    >>> [is_secret_key(k) for k in ("db/password", "apiKey", "max_tokens", "pad_token", "HF_TOKEN")]
    [True, True, False, False, True]
    """
    return any(_is_secret_name(part) for part in str(key).split("/"))


def _is_secret_name(name: str) -> bool:
    words = [word.lower() for word in _WORD.findall(name)]
    if any(word in SECRET_WORDS for word in words):
        return True
    if any(pair in SECRET_PAIRS for pair in itertools.pairwise(words)):
        return True
    return bool(words) and words[-1] == "token" and (len(words) == 1 or words[-2] not in _SPECIAL_TOKENS)


def redact(hparams: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``hparams`` (nested or flat) with every credential's value replaced by :data:`REDACTED`."""
    out: dict[str, Any] = {}
    for key, value in hparams.items():
        if value is not None and not isinstance(value, bool) and is_secret_key(str(key)):
            out[key] = REDACTED
        elif isinstance(value, Mapping):
            out[key] = redact(value)
        else:
            out[key] = value
    return out


__all__ = ["REDACTED", "SECRET_PAIRS", "SECRET_WORDS", "is_secret_key", "redact"]
