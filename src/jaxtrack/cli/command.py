"""What every ``jaxtrack`` command shares: the error it raises for the user, and opening the store it reads.

A command module raises ``CommandError`` for a problem the user can fix; the
command line (``jaxtrack.cli.main``) reports it as one line,
``jaxtrack: error: <message>``, with exit status 1. Both live here rather
than in ``main``, which imports every command module: a command importing
``main`` back would make an import cycle.
"""

from __future__ import annotations

import argparse

from jaxtrack.store import RunStore, default_store_path


class CommandError(Exception):
    """A problem the user can fix, reported as ``jaxtrack: error: <message>`` with exit status 1."""


def open_store(args: argparse.Namespace) -> RunStore:
    """The store a command reads: ``--store``, else ``$JAXTRACK_STORE``, else ``runs/jaxtrack.db``."""
    return RunStore(args.store if args.store is not None else default_store_path())


__all__ = ["CommandError", "open_store"]
