"""Imports of optional backend packages, with an error that says which extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType


class MissingExtraError(ImportError):
    """An optional package a backend needs is not installed.

    The message names the extra to install, e.g. ``pip install
    'jaxtrack[wandb]'`` (also ``[tensorboard]``, ``[clu]``, ``[checkpoint]``,
    ``[progress]``, ``[plot]``). It is an ``ImportError``, so code that falls
    back when a package is missing catches it as it would the import's error.

    Examples:
        >>> import tempfile, jaxtrack as jt
        >>> try:
        ...     tracker = jt.TensorboardTracker(tempfile.mkdtemp())
        ... except jt.MissingExtraError:  # "... pip install 'jaxtrack[tensorboard]'"
        ...     tracker = jt.ConsoleTracker()
        >>> tracker.finish()
    """


def import_optional(module: str, *, extra: str, purpose: str) -> ModuleType:
    """Imports ``module`` or raises ``MissingExtraError`` naming ``jaxtrack[extra]``."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingExtraError(
            f"{purpose} needs the '{module.split('.')[0]}' package, which is not installed: "
            f"pip install 'jaxtrack[{extra}]'"
        ) from error
