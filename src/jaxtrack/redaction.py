"""Keeping credentials out of logged hyperparameters.

Every built-in backend, and [`jaxtrack.log_hyperparameters`][jaxtrack.log_hyperparameters] /
[`jaxtrack.log_configuration`][jaxtrack.log_configuration] before any backend (user-written ones
included) sees the values, replaces the value of a key that names a
credential with [`REDACTED`][jaxtrack.redaction.REDACTED] (``"[redacted]"``). A key names a credential when one of its
path components, split into words at ``_``, ``-``, ``.``, spaces and
camelCase, holds a word of [`SECRET_WORDS`][jaxtrack.redaction.SECRET_WORDS] or a pair of
[`SECRET_PAIRS`][jaxtrack.redaction.SECRET_PAIRS], or ends with the word ``token`` (``hf_token``,
``authToken``) other than a tokenizer's special token (``eos_token``,
``pad_token``). ``tokens``, ``max_tokens`` and ``tokenizer`` are kept. Values
that cannot be a credential (``True``/``False``/``None``) are kept too, so
``use_auth_token: true`` is still visible.

Examples:
    >>> redact({"wandb": {"api_key": "abc123"}, "lr": 0.1, "hf_token": "hf_x", "eos_token": "</s>"})
    {'wandb': {'api_key': '[redacted]'}, 'lr': 0.1, 'hf_token': '[redacted]', 'eos_token': '</s>'}
"""

from __future__ import annotations

import dataclasses
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
_PLURALIZABLE = SECRET_WORDS | {second for _, second in SECRET_PAIRS}
_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")


def is_secret_key(key: str) -> bool:
    """Whether ``key`` (one name, or an ``"a/b"`` path) names a credential.

    Examples:
        >>> [is_secret_key(k) for k in ("db/password", "apiKey", "max_tokens", "pad_token", "HF_TOKEN")]
        [True, True, False, False, True]
    """
    return any(_is_secret_name(part) for part in str(key).split("/"))


def _is_secret_name(name: str) -> bool:
    words = [word.lower() for word in _WORD.findall(name)]
    # api_keys, passwords: a plural of a credential word counts (but "tokens" is not a token).
    singular = [word[:-1] if word.endswith("s") and word[:-1] in _PLURALIZABLE else word for word in words]
    if any(word in SECRET_WORDS for word in words + singular):
        return True
    if any(pair in SECRET_PAIRS for pair in itertools.pairwise(singular)):
        return True
    return bool(words) and words[-1] == "token" and (len(words) == 1 or words[-2] not in _SPECIAL_TOKENS)


def redact(hparams: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``hparams`` (nested or flat) with every credential's value replaced by [`REDACTED`][jaxtrack.redaction.REDACTED].

    Looks inside nested mappings, lists and tuples, dataclasses and
    ``ml_collections.ConfigDict`` values (turned into dicts), so a secret in
    ``loggers: [{api_key: ...}]`` or a settings dataclass is found too.

    Examples:
        >>> redact({"optimizer": {"lr": 0.1}, "loggers": [{"api_key": "abc"}], "use_auth_token": True})
        {'optimizer': {'lr': 0.1}, 'loggers': [{'api_key': '[redacted]'}], 'use_auth_token': True}
    """
    out: dict[str, Any] = {}
    for key, value in hparams.items():
        if value is not None and not isinstance(value, bool) and is_secret_key(str(key)):
            out[key] = REDACTED
        else:
            out[key] = _redact_inside(value)
    return out


def _redact_inside(value: Any) -> Any:
    if isinstance(value, Mapping):
        return redact(value)
    if type(value) in (list, tuple):
        return type(value)(_redact_inside(item) for item in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type) and not _is_value_type(value):
        return redact(dataclasses.asdict(value))
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict) and not isinstance(value, type):  # ml_collections.ConfigDict and look-alikes
        converted = to_dict()
        if isinstance(converted, Mapping):
            return redact(converted)
    return value


def _is_value_type(value: Any) -> bool:
    from jaxtrack.values import Histogram, Image

    return isinstance(value, (Histogram, Image))


__all__ = ["REDACTED", "SECRET_PAIRS", "SECRET_WORDS", "is_secret_key", "redact"]
