"""The local run store: an SQLite database that needs no account or server, written and read.

[`RunWriter`][jaxtrack.store.writer.RunWriter] writes one run into a store (the
[`LocalTracker`][jaxtrack.trackers.local.LocalTracker] backend is a tracker
over one); [`RunStore`][jaxtrack.store.reader.RunStore] reads a store, and the
``jaxtrack`` command line is built on it. Each run reads as a
[`StoredRun`][jaxtrack.store.reader.StoredRun].

The store is ``DEFAULT_STORE_PATH`` (``runs/jaxtrack.db``, relative to the
working directory) unless a path is given or the environment variable named
by ``STORE_ENV_VAR`` (``JAXTRACK_STORE``) is set:
[`default_store_path`][jaxtrack.store.location.default_store_path] says which.
``STATUSES`` are a run's possible statuses: ``running``, ``finished``,
``failed`` and ``killed``.

One concept a module: ``location`` (where the store is), ``schema`` (its
tables, and opening it), ``codec`` (values as columns), ``writer``,
``reader``, and the library side of ``jaxtrack export`` and ``jaxtrack plot``
(``export``, ``plot``).

Examples:
    >>> import os, tempfile
    >>> from jaxtrack.store import RunStore, RunWriter
    >>> path = os.path.join(tempfile.mkdtemp(), "runs.db")
    >>> with RunWriter(path, run_id="first", project="demo") as writer:
    ...     for step, loss in enumerate([1.0, 0.5, 0.25]):
    ...         writer.write([("train/loss", loss)], step=step)
    >>> with RunStore(path) as store:
    ...     run = store.run("latest")
    ...     steps, losses = store.scalars(run.id, "train/loss")
    >>> run.id, run.status, steps.tolist(), losses.tolist()
    ('first', 'finished', [0, 1, 2], [1.0, 0.5, 0.25])
"""

from jaxtrack.store.location import DEFAULT_STORE_PATH, STORE_ENV_VAR, default_store_path
from jaxtrack.store.reader import RunStore, StoredRun
from jaxtrack.store.schema import STATUSES
from jaxtrack.store.writer import RunWriter

__all__ = [
    "DEFAULT_STORE_PATH",
    "STATUSES",
    "STORE_ENV_VAR",
    "RunStore",
    "RunWriter",
    "StoredRun",
    "default_store_path",
]
