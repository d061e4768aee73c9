"""Text every backend can write: valid Unicode (encodable as UTF-8), checked for names and text values alike."""

from __future__ import annotations


def check_text(key: str, text: str) -> None:
    """Raises ``ValueError`` naming ``key`` if ``text`` cannot be encoded as UTF-8 (a lone surrogate, say).

    Examples:
        >>> check_text("note", "naïve ✓")
        >>> check_text("note", "\\ud800")
        Traceback (most recent call last):
        ...
        ValueError: metric 'note': the text is not valid Unicode (surrogates not allowed at 0)
    """
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(f"metric {key!r}: the text is not valid Unicode ({error.reason} at {error.start})") from None


__all__ = ["check_text"]
