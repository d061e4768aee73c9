"""Where a run store lives: the default database file, the variable that moves it, the directory beside it.

The store is ``DEFAULT_STORE_PATH`` (``runs/jaxtrack.db``, relative to the
working directory) unless a path is given or the environment variable named
by ``STORE_ENV_VAR`` (``JAXTRACK_STORE``) is set. A store's artifacts are kept
in the directory that holds its database file.
"""

from __future__ import annotations

import os

STORE_ENV_VAR = "JAXTRACK_STORE"
"""Environment variable that overrides the default store path, for the tracker and the command line."""

DEFAULT_STORE_PATH = os.path.join("runs", "jaxtrack.db")
"""Where runs are stored when no path is given and ``$JAXTRACK_STORE`` is unset (relative to the working directory)."""


def default_store_path() -> str:
    """The store used when none is given: ``$JAXTRACK_STORE``, else ``runs/jaxtrack.db``.

    Examples:
        >>> import os
        >>> default_store_path() == (os.environ.get("JAXTRACK_STORE") or os.path.join("runs", "jaxtrack.db"))
        True
    """
    return os.environ.get(STORE_ENV_VAR) or DEFAULT_STORE_PATH


def store_dir(path: str) -> str:
    """The absolute directory of the store at ``path``: artifact paths are stored relative to it.

    Examples:
        >>> import os
        >>> store_dir(os.path.join("runs", "jaxtrack.db")) == os.path.join(os.getcwd(), "runs")
        True
    """
    return os.path.dirname(os.path.abspath(path))


__all__ = ["DEFAULT_STORE_PATH", "STORE_ENV_VAR", "default_store_path", "store_dir"]
