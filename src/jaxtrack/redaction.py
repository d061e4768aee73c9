"""Keeping credentials out of everything jaxtrack writes: by the key's name, and by the value's text.

Every value on its way to a backend passes here once, before any backend
(user-written ones included) sees it: hyperparameters and configurations
([`jaxtrack.log_hyperparameters`][jaxtrack.log_hyperparameters],
[`jaxtrack.log_configuration`][jaxtrack.log_configuration], a tracker's own
``log_hyperparameters``), W&B's own ``config=`` argument, summaries, and the
text values of ``log``. Two rules apply:

* **By name.** The value of a key that names a credential is replaced with
  [`REDACTED`][jaxtrack.redaction.REDACTED] (``"[redacted]"``), whatever it
  holds. A key names a credential when one of its path components, split into
  words at ``_``, ``-``, ``.``, spaces and camelCase, holds a word of
  [`SECRET_WORDS`][jaxtrack.redaction.SECRET_WORDS] or a pair of
  [`SECRET_PAIRS`][jaxtrack.redaction.SECRET_PAIRS], ends with the word
  ``token`` (``hf_token``, ``authToken``) other than a tokenizer's special
  token (``eos_token``, ``pad_token``), or ends with ``auth`` (``basic_auth``).
  ``tokens``, ``max_tokens``, ``tokenizer``, ``rng_key`` and ``skip_keys`` are
  kept. Values that cannot be a credential (``True``/``False``/``None``) are
  kept too, so ``use_auth_token: true`` is still visible.
* **By value.** In every text, whatever its key, only the credential is
  replaced and the rest kept ([`redact_text`][jaxtrack.redaction.redact_text]):
  the password of a URL (``postgres://u:[redacted]@h/db``), a key given as a
  URL's user (Sentry DSNs), the secret part of a Slack or Discord webhook URL,
  signatures and keys in a URL's query, ``AccountKey=``/``SharedAccessSignature=``
  and the like in connection strings, ``Bearer``/``Basic`` credentials,
  ``name=value``/``name: value``/``--name value`` where the name names a
  credential (``.env`` lines, JSON, YAML, command lines, reprs), PEM private
  keys, and the token formats of [`TOKEN_FORMATS`][jaxtrack.redaction.TOKEN_FORMATS]
  (``sk-``, ``ghp_``/``github_pat_``, ``xoxb-``, ``AKIA``, JWTs, ``hf_``...).
  Model names, paths, URLs without credentials and hashes of data
  (a git commit, a SHA-256) are kept.

Examples:
    >>> redact({"wandb": {"api_key": "abc123"}, "lr": 0.1, "hf_token": "hf_x", "eos_token": "</s>"})
    {'wandb': {'api_key': '[redacted]'}, 'lr': 0.1, 'hf_token': '[redacted]', 'eos_token': '</s>'}
    >>> redact({"db": "postgres://me:hunter2@db.internal/train", "model": "meta-llama/Llama-2-7b"})
    {'db': 'postgres://me:[redacted]@db.internal/train', 'model': 'meta-llama/Llama-2-7b'}
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
import itertools
import re
from collections.abc import Mapping
from typing import Any

REDACTED = "[redacted]"
"""What a credential is replaced with."""

SECRET_WORDS = frozenset(
    {
        "apikey",
        "authorization",
        "cookie",
        "credential",
        "credentials",
        "dsn",
        "jwt",
        "passcode",
        "passphrase",
        "passwd",
        "password",
        "pwd",
        "privatekey",
        "secret",
        "secrets",
        "webhook",
    }
)
"""Words that make a key a credential wherever they appear in it."""

_KEYED_SERVICES = (
    "account",  # Azure's AccountKey
    "anthropic",
    "cohere",
    "deploy",
    "encryption",
    "github",
    "gitlab",
    "gpg",
    "groq",
    "license",
    "master",
    "mistral",
    "openai",
    "pgp",
    "slack",
    "ssh",
    "storage",
    "stripe",
    "wandb",
)

SECRET_PAIRS = frozenset(
    {
        ("access", "key"),
        ("access", "signature"),
        ("api", "key"),
        ("auth", "header"),
        ("auth", "key"),
        ("client", "secret"),
        ("connection", "string"),
        ("github", "pat"),
        ("gitlab", "pat"),
        ("private", "key"),
        ("secret", "key"),
        ("session", "key"),
        ("signing", "key"),
    }
    | {(service, "key") for service in _KEYED_SERVICES}
)
"""Adjacent words that make a key a credential (``api_key``, ``AWS_SECRET_ACCESS_KEY``, ``OPENAI_KEY``, ``ssh_key``).

``key`` alone is no credential: JAX code is full of ``rng_key``, ``dropout_key``
and ``sort_key``. It is one after ``access``, ``api``, ``secret``... and after
the name of a service whose keys are secrets (``openai``, ``ssh``, ``wandb``...).
"""

TOKEN_FORMATS: dict[str, str] = {
    # a run of 20 letters and digits: "sk-learn-compatible-estimator" is no key
    "OpenAI / Anthropic key": r"sk-[A-Za-z0-9_-]*?[A-Za-z0-9]{20,}[A-Za-z0-9_-]*",
    "GitHub token": r"gh[pousr]_[A-Za-z0-9]{36,}",
    "GitHub fine-grained token": r"github_pat_[A-Za-z0-9_]{22,}",
    "GitLab token": r"glpat-[A-Za-z0-9_-]{20,}",
    "Slack token": r"xox[abposre]-[A-Za-z0-9-]{10,}",
    "AWS access key id": r"(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|AIPA)[A-Z0-9]{16}",
    "JSON Web Token": r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",
    "Hugging Face token": r"hf_[A-Za-z0-9]{30,}",
    "Google API key": r"AIza[A-Za-z0-9_-]{35}",
    "Stripe key": r"(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,}",
    "npm token": r"npm_[A-Za-z0-9]{36}",
}
"""Credentials recognised by their form wherever they appear in a text, by name (``sk-``: OpenAI's and Anthropic's keys)."""

_SPECIAL_TOKENS = frozenset(
    {"bos", "eos", "pad", "unk", "sep", "cls", "mask", "eot", "start", "end", "special", "image", "max", "num"}
)
_PLURALIZABLE = SECRET_WORDS | {second for _, second in SECRET_PAIRS}
_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")


def is_secret_key(key: str) -> bool:
    """Whether ``key`` (one name, or an ``"a/b"`` path) names a credential.

    Examples:
        >>> [is_secret_key(k) for k in ("db/password", "apiKey", "max_tokens", "pad_token", "HF_TOKEN")]
        [True, True, False, False, True]
        >>> [is_secret_key(k) for k in ("OPENAI_KEY", "ssh_key", "GITHUB_PAT", "rng_key", "skip_keys")]
        [True, True, True, False, False]
    """
    return any(_is_secret_name(part) for part in str(key).split("/"))


@functools.lru_cache(maxsize=4096)  # the same names come again and again (every report's texts)
def _is_secret_name(name: str) -> bool:
    words = [word.lower() for word in _WORD.findall(name)]
    # api_keys, passwords: a plural of a credential word counts (but "tokens" is not a token).
    singular = [word[:-1] if word.endswith("s") and word[:-1] in _PLURALIZABLE else word for word in words]
    if any(word in SECRET_WORDS for word in words + singular):
        return True
    if any(pair in SECRET_PAIRS for pair in itertools.pairwise(singular)):
        return True
    if not words:
        return False
    if words[-1] == "auth":  # basic_auth, proxy_auth; auth_method is not one
        return True
    return words[-1] == "token" and (len(words) == 1 or words[-2] not in _SPECIAL_TOKENS)


# -- by value --------------------------------------------------------------------------------------

_TOKENS = re.compile(
    r"(?<![A-Za-z0-9_-])(?:" + "|".join(TOKEN_FORMATS.values()) + r")(?![A-Za-z0-9])"
    # A PEM private key (PKCS#8, RSA, OpenSSH, PGP...); an unterminated one takes all the rest.
    r"|-----BEGIN[A-Z ]*PRIVATE KEY[A-Z ]*-----(?:.*?-----END[A-Z ]*PRIVATE KEY[A-Z ]*-----|.*)",
    re.DOTALL,
)
# scheme://user:password@host: only the password goes (the last "@" before the path ends it).
_URL_PASSWORD = re.compile(
    r"(?i)(?<![a-z0-9+.-])([a-z][a-z0-9+.-]{0,30}://[^\s/?#@:]*:)[^\s/?#@]+(?:@[^\s/?#@]+)*(?=@)"
)
# scheme://<key>@host: a user name as long as a key, with a digit in it, is one (Sentry's DSN); "git@",
# "alice@" and "firstname.lastname@" are kept.
_URL_KEY_USER = re.compile(
    r"(?i)(?<![a-z0-9+.-])([a-z][a-z0-9+.-]{0,30}://)(?=[A-Za-z_.~%+-]*\d)[A-Za-z0-9_.~%+-]{16,}(?=@)"
)
# The rest of a webhook URL is its secret.
_WEBHOOK = re.compile(
    r"(?i)\b(https?://(?:hooks\.slack\.com/(?:services|workflows|triggers)"
    r"|(?:ptb\.|canary\.)?discord(?:app)?\.com/api/webhooks)/)[^\s\"'<>]+"
)
# Headers and schemes whose whole value is the credential.
_HEADER = re.compile(
    r"(?im)\b((?:proxy-)?authorization|set-cookie|cookie|x-api-key)([\"']?[ \t]*[:=][ \t]*[\"']?)[^\"'\r\n]+"
)
_BEARER = re.compile(r"\b([Bb](?:earer|EARER)[ \t]+)[A-Za-z0-9._~+/=-]{8,}")
_BASIC = re.compile(r"\b(Basic[ \t]+)([A-Za-z0-9+/]{8,}={0,2})(?![A-Za-z0-9+/=])")
# name=value, name: value, "name": "value", --name value; the name decides (is_secret_key). A quoted
# value runs to its closing quote, "name: value" to the end of the line (YAML, a log line), and any
# other value to a space, a comma, ";" or "&" (command lines, .env lines, connection strings, queries,
# whose next name=value is looked at in turn). Only the name is matched while searching, so a long
# chain of "a=a=a..." costs one pass, not one per "=".
_ASSIGNED = re.compile(
    r"(?<![\w.-])(?:--?(?P<flag>[A-Za-z_][\w.-]*)(?:[ \t]+|=)|(?P<name>[A-Za-z_][\w.-]*)[\"']?[ \t]*(?P<op>[:=])[ \t]*)"
    r"(?P<quote>[\"']?)(?=[^\s\"',;&])"
)
_VALUE = re.compile(r"[^\s\"',;&]+")
_LINE_VALUE = re.compile(r"[^\r\n]+")
_QUOTED_VALUES = {quote: re.compile(f"[^{quote}\\r\\n]+") for quote in "\"'"}
# Names that are credentials only as a URL's query parameter or in a connection string ("sig", "Pwd").
_QUERY_SECRETS = frozenset(
    {"sig", "signature", "key", "pwd", "x-amz-signature", "x-amz-credential", "x-amz-security-token"}
    | {"x-goog-signature", "x-goog-credential", "code"}
)
_NOT_SECRET_VALUES = frozenset({"true", "false", "none", "null", "[redacted]"})
# A text holds none of what the rules above look for unless it holds one of these.
_MAY_HOLD_SECRET = re.compile(
    r"[:=@]|--|[Bb](?:earer|EARER|asic|ASIC)[ \t]|sk-|gh[pousr]_|github_pat_|glpat-|xox[abposre]-|hf_|npm_|[rs]k_"
    r"|A(?:KIA|SIA|GPA|IDA|ROA|NPA|IPA|Iza)|eyJ|-----BEGIN"
)


def redact_text(text: str) -> str:
    """``text`` with every credential in it replaced by [`REDACTED`][jaxtrack.redaction.REDACTED], the rest kept.

    See the module's docstring for what is found; names of models, paths,
    URLs without credentials and hashes are kept.

    Examples:
        >>> redact_text("postgres://me:hunter2@db.internal:5432/train")
        'postgres://me:[redacted]@db.internal:5432/train'
        >>> redact_text("Authorization: Bearer eyJhbGciOi.eyJzdWIiOi.c2lnbmF0dXJl")
        'Authorization: [redacted]'
        >>> redact_text("DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=Zm9vYmFy+/Zm9v==;EndpointSuffix=core.windows.net")
        'DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=[redacted];EndpointSuffix=core.windows.net'
        >>> redact_text("eval of meta-llama/Llama-2-7b at 9fceb02d0ae598e95dc970b74767f19372d61af8")
        'eval of meta-llama/Llama-2-7b at 9fceb02d0ae598e95dc970b74767f19372d61af8'
    """
    if len(text) < 8 or not _MAY_HOLD_SECRET.search(text):
        return text  # the common case: one search, nothing changed
    text = _TOKENS.sub(REDACTED, text)
    text = _WEBHOOK.sub(lambda match: match.group(1) + REDACTED, text)
    text = _URL_PASSWORD.sub(lambda match: match.group(1) + REDACTED, text)
    text = _URL_KEY_USER.sub(lambda match: match.group(1) + REDACTED, text)
    text = _HEADER.sub(lambda match: match.group(1) + match.group(2) + REDACTED, text)
    text = _BEARER.sub(lambda match: match.group(1) + REDACTED, text)
    text = _BASIC.sub(_basic_credentials, text)
    return _redact_assigned(text)


def _basic_credentials(match: re.Match[str]) -> str:
    """``Basic <base64 of user:password>``; other text after "Basic " is kept."""
    try:
        decoded = base64.b64decode(match.group(2), validate=True)
    except (binascii.Error, ValueError):
        return match.group(0)
    return match.group(1) + REDACTED if b":" in decoded else match.group(0)


def _redact_assigned(text: str) -> str:
    """``text`` with the value of every ``name=value`` (and the like) whose name names a credential redacted."""
    parts: list[str] = []
    kept_from = position = 0
    while (match := _ASSIGNED.search(text, position)) is not None:
        # Unless redacted, the value is looked at in turn: it may be "name=value" itself ("note: api_key=...").
        position = match.end()
        if not _names_secret(match):
            continue
        quote, op = match.group("quote", "op")
        pattern = _QUOTED_VALUES[quote] if quote else _LINE_VALUE if op == ":" else _VALUE
        value = pattern.match(text, position)
        if value is not None and value.group().lower() not in _NOT_SECRET_VALUES and not value.group().startswith("-"):
            parts += (text[kept_from:position], REDACTED)
            kept_from = position = value.end()
    parts.append(text[kept_from:])
    return "".join(parts)


def _names_secret(match: re.Match[str]) -> bool:
    flag, name = match.group("flag", "name")
    if flag is not None:
        return is_secret_key(flag)
    in_query = match.start() > 0 and match.string[match.start() - 1] in "?&;"
    return is_secret_key(name) or (in_query and name.lower() in _QUERY_SECRETS)


_SPECIAL_TOKEN_VALUE = re.compile(r"<[^<>\s]{1,40}>|<\|[^|\s]{1,40}\|>|\[[A-Z_]{1,40}\]")
"""A tokenizer's special token (``<s>``, ``<|video_pad|>``, ``[MASK]``): what a ``*_token`` key often holds."""


def _redacts_whole(key: str, value: Any) -> bool:
    """Whether the value of ``key`` goes whole: the key names a credential (a special token's text stays)."""
    if value is None or isinstance(value, bool) or not is_secret_key(key):
        return False
    return not (isinstance(value, str) and _SPECIAL_TOKEN_VALUE.fullmatch(value))


def redact_logged(key: str, text: str) -> str:
    """A text value logged under ``key``, as backends receive it: whole if the key names a credential.

    Otherwise only the credentials in it go ([`redact_text`][jaxtrack.redaction.redact_text]).

    Examples:
        >>> redact_logged("db_password", "hunter2hunter2"), redact_logged("note", "lr=3e-4")
        ('[redacted]', 'lr=3e-4')
        >>> redact_logged("video_token", "<|video_pad|>")  # a special token, not a credential
        '<|video_pad|>'
    """
    return REDACTED if _redacts_whole(key, text) else redact_text(text)


def redact(hparams: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``hparams`` (nested or flat) with every credential replaced by [`REDACTED`][jaxtrack.redaction.REDACTED].

    The value of a key that names a credential goes whole; in every other
    text only the credentials in it go ([`redact_text`][jaxtrack.redaction.redact_text]).
    Looks inside nested mappings, lists and tuples, dataclasses and
    ``ml_collections.ConfigDict`` values (turned into dicts), so a secret in
    ``loggers: [{api_key: ...}]`` or a settings dataclass is found too.

    Examples:
        >>> redact({"optimizer": {"lr": 0.1}, "loggers": [{"api_key": "abc"}], "use_auth_token": True})
        {'optimizer': {'lr': 0.1}, 'loggers': [{'api_key': '[redacted]'}], 'use_auth_token': True}
        >>> redact({"env": {"DATABASE_URL": "mysql://root:toor@localhost/db", "HOME": "/root"}})
        {'env': {'DATABASE_URL': 'mysql://root:[redacted]@localhost/db', 'HOME': '/root'}}
    """
    out: dict[str, Any] = {}
    for key, value in hparams.items():
        if _redacts_whole(str(key), value):
            out[key] = REDACTED
        else:
            out[key] = _redact_inside(value)
    return out


def _redact_inside(value: Any) -> Any:
    if type(value) is str:
        return redact_text(value)
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
    if isinstance(value, str):  # a str subclass (an enum of strings keeps its type unless it holds a secret)
        redacted = redact_text(value)
        return value if redacted == value else redacted
    return value


def _is_value_type(value: Any) -> bool:
    from jaxtrack.values import Histogram, Image

    return isinstance(value, (Histogram, Image))


__all__ = [
    "REDACTED",
    "SECRET_PAIRS",
    "SECRET_WORDS",
    "TOKEN_FORMATS",
    "is_secret_key",
    "redact",
    "redact_logged",
    "redact_text",
]
