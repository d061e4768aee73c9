"""Run ids: made up when not given, checked when given, shared by every backend of a run."""

from __future__ import annotations

import datetime
import secrets


def new_run_id() -> str:
    """A fresh run id: the UTC time then random letters, so ids sort by start time.

    Examples:
        >>> len(new_run_id().split("-"))
        3
    """
    now = datetime.datetime.now(datetime.UTC)
    return f"{now:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def validate_run_id(run_id: str) -> str:
    """Checks that ``run_id`` is safe to use as a directory name and as a W&B id; returns it.

    Examples:
        >>> validate_run_id("2024-run_7")
        '2024-run_7'
        >>> validate_run_id("../up")
        Traceback (most recent call last):
        ...
        ValueError: run_id '../up' cannot be used: it must not start with '.' nor contain spaces or any of '/\\\\:#?%*"<>|'
    """
    if not isinstance(run_id, str) or not run_id:
        raise ValueError(f"run_id must be a non-empty string, got {run_id!r}")
    forbidden = '/\\:#?%*"<>|\0 '
    if run_id.startswith(".") or any(c in forbidden for c in run_id):
        raise ValueError(
            f"run_id {run_id!r} cannot be used: it must not start with '.' nor contain spaces or any of {forbidden[:-2]!r}"
        )
    return run_id


__all__ = ["new_run_id", "validate_run_id"]
