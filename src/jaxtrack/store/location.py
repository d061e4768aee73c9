"""Where a run store lives: the default database file, the variable that moves it, the directory beside it.

The store is ``DEFAULT_STORE_PATH`` (``runs/jaxtrack.db``, relative to the
working directory) unless a path is given or the environment variable named
by ``STORE_ENV_VAR`` (``JAXTRACK_STORE``) is set. A store's artifacts are kept
in the ``artifacts`` folder beside its database file: nothing is written
through a link planted there, and nothing is read from outside it.
"""

from __future__ import annotations

import os

from jaxtrack._artifacts import own_folder
from jaxtrack.errors import UnsafePathError

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


def run_artifacts_dir(path: str, folder: str) -> str:
    """The store's ``artifacts/<folder>`` directory, created if missing; a link on the way is an ``UnsafePathError``.

    The store's own directory may be a link (the user chose it); the folders
    jaxtrack makes below it must be real ones, or a planted link would have it
    write outside the store.

    Examples:
        >>> import os, tempfile
        >>> store = os.path.join(tempfile.mkdtemp(), "runs.db")
        >>> run_artifacts_dir(store, "1-r1") == os.path.join(os.path.dirname(store), "artifacts", "1-r1")
        True
    """
    directory = own_folder(os.path.join(store_dir(path), "artifacts"), owner="the run store")
    return own_folder(os.path.join(directory, folder), owner="the run store")


def artifact_file(path: str, relative: str) -> str:
    """The absolute path of an artifact the store at ``path`` lists as ``relative``, checked to be inside its ``artifacts`` folder.

    A listed path that leads elsewhere (absolute, ``..``, through a link, or an
    ``artifacts`` folder that is itself a link) is an ``UnsafePathError``
    naming it: a store from someone else must not make a reader or an export
    copy ``/etc/passwd``.

    Examples:
        >>> artifact_file("/data/runs.db", "artifacts/1-r1/1-model-v1/model.bin")
        '/data/artifacts/1-r1/1-model-v1/model.bin'
        >>> artifact_file("/data/runs.db", "../../etc/passwd")
        Traceback (most recent call last):
        ...
        jaxtrack.errors.UnsafePathError: the run store '/data/runs.db' lists an artifact at '../../etc/passwd', outside its artifacts folder '/data/artifacts': refusing to read it (was the store written by someone else?)
    """
    base = store_dir(path)
    folder = os.path.join(os.path.realpath(base), "artifacts")
    if isinstance(relative, str) and "\0" not in relative and not os.path.isabs(relative):
        real = os.path.realpath(os.path.join(base, relative))
        if os.path.commonpath([folder, real]) == folder and real != folder:
            return os.path.join(base, relative)
    raise UnsafePathError(
        f"the run store {path!r} lists an artifact at {relative!r}, outside its artifacts folder "
        f"{os.path.join(base, 'artifacts')!r}: refusing to read it (was the store written by someone else?)"
    )


__all__ = [
    "DEFAULT_STORE_PATH",
    "STORE_ENV_VAR",
    "artifact_file",
    "default_store_path",
    "run_artifacts_dir",
    "store_dir",
]
