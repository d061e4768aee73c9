"""Imports of optional backend packages, with an error that says which extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from jaxtrack.errors import MissingExtraError


def import_optional(module: str, *, extra: str, purpose: str) -> ModuleType:
    """Imports ``module`` or raises ``MissingExtraError`` naming ``jaxtrack[extra]``."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingExtraError(
            f"{purpose} needs the '{module.split('.')[0]}' package, which is not installed: "
            f"pip install 'jaxtrack[{extra}]'"
        ) from error
