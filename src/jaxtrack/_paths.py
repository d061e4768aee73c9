"""File names made from user strings (metric keys, artifact and run names)."""

from __future__ import annotations


def safe_file_name(name: str, *, default: str = "artifact") -> str:
    """``name`` reduced to one safe path component: no separators, no leading dots.

    >>> safe_file_name("../../etc/passwd")
    'etc_passwd'
    >>> safe_file_name("model v1.ckpt")
    'model_v1.ckpt'
    """
    cleaned = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    cleaned = cleaned.strip("._")
    while "__" in cleaned:
        cleaned = cleaned.replace("__", "_")
    return cleaned or default
