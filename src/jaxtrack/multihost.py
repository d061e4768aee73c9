"""Which process of a multi-process (``jax.distributed``) run this is.

By default only process 0 writes to backends, so a run appears once however
many hosts train it; the other processes keep doing the same device work.
"""

from __future__ import annotations

import jax


def process_index() -> int:
    """This process's index in a ``jax.distributed`` run (0 when there is one process)."""
    return jax.process_index()


def is_primary_process() -> bool:
    """Whether this process is the one that writes to backends (process 0).

    >>> is_primary_process()
    True
    """
    return process_index() == 0
