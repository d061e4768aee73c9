"""The run store's SQLite schema, and opening (or creating) a store.

A store is one SQLite database. Each run is a row of ``runs`` (id, name,
project, status, start/end time, host and git information, hyperparameters,
summary); ``keys`` names the metrics once for every run; ``artifacts`` lists
the files copied next to the database. A run's values are rows of the value
tables ``scalars``, ``texts``, ``histograms`` and ``images`` keyed by
``(run, step, key)`` (``STEP_TABLES`` maps each to its value columns, whose
names ``VALUE_COLUMNS`` lists in order), and each has a twin
``superseded_<table>`` that keeps the values a rewind replaced. The
``metrics`` view joins scalars with their run id and key name, for queries
by hand:

```bash
sqlite3 runs/jaxtrack.db "SELECT step, value FROM metrics WHERE run_id = '...' AND key = 'train/loss'"
```

``SCHEMA`` is the SQL that creates all of it, and ``SCHEMA_VERSION`` the
layout's version, kept in the database's ``user_version``. ``STATUSES`` are
a run's possible statuses: ``running``, ``finished``, ``failed`` and ``killed``.

A store is opened in WAL mode: a process killed at any moment (even by
SIGKILL) leaves a database that opens and holds every transaction committed
before the kill, and readers never block the writer. Several processes can
write runs into one database at once; a write waits up to
``BUSY_TIMEOUT_SECS`` for another process's transaction.
"""

from __future__ import annotations

import os
import pathlib
import sqlite3
import time
from collections.abc import Mapping

from jaxtrack.store.location import store_dir

SCHEMA_VERSION = 1
"""The version of the layout below, kept in the database's ``PRAGMA user_version``."""

STATUSES = ("running", "finished", "failed", "killed")
"""A run's status; ``killed`` is also what a ``running`` run reads as once its process is gone."""

BUSY_TIMEOUT_SECS = 60.0
"""How long a write waits for another process's transaction on the same database."""

STEP_TABLES: Mapping[str, str] = {
    "scalars": "value",  # no type: ints stay exact, NaN is stored as NULL (SQLite has no NaN)
    "texts": "value TEXT NOT NULL",
    "histograms": (
        "bucket_limits BLOB NOT NULL, bucket_counts BLOB NOT NULL, "
        "min REAL, max REAL, num INTEGER NOT NULL, sum REAL, sum_squares REAL"
    ),
    "images": "pixels BLOB NOT NULL, caption TEXT",
}
"""The tables of values at a step, each with its columns after ``(run, step, key)`` as ``CREATE TABLE`` declares
them. Each has a twin ``superseded_<table>`` that keeps the values a rewind replaced."""

VALUE_COLUMNS: Mapping[str, str] = {
    "scalars": "value",
    "texts": "value",
    "histograms": "bucket_limits, bucket_counts, min, max, num, sum, sum_squares",
    "images": "pixels, caption",
}
"""The names of each value table's columns after ``(run, step, key)``, in order, for a ``SELECT``."""

SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS runs (
    num INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    name TEXT,
    project TEXT,
    status TEXT NOT NULL,
    start_time REAL NOT NULL,
    end_time REAL,
    heartbeat REAL,
    last_step INTEGER,
    sessions INTEGER NOT NULL DEFAULT 1,
    host TEXT,
    pid INTEGER,
    git TEXT NOT NULL DEFAULT '{}',
    system TEXT NOT NULL DEFAULT '{}',
    config TEXT NOT NULL DEFAULT '{}',
    summary TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS keys (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS artifacts (
    run INTEGER NOT NULL, name TEXT NOT NULL, version INTEGER NOT NULL, type TEXT,
    path TEXT NOT NULL, time REAL NOT NULL, PRIMARY KEY (run, name, version)
);
"""
    + "".join(
        f"CREATE TABLE IF NOT EXISTS {table} (run INTEGER NOT NULL, step INTEGER NOT NULL, key INTEGER NOT NULL, "
        f"{columns}, time REAL NOT NULL, PRIMARY KEY (run, step, key)) WITHOUT ROWID;\n"
        f"CREATE TABLE IF NOT EXISTS superseded_{table} (run INTEGER NOT NULL, step INTEGER NOT NULL, "
        f"key INTEGER NOT NULL, {columns}, time REAL NOT NULL, superseded_at REAL NOT NULL);\n"
        for table, columns in STEP_TABLES.items()
    )
    + """
CREATE VIEW IF NOT EXISTS metrics AS
    SELECT runs.id AS run_id, scalars.step AS step, keys.name AS key, scalars.value AS value, scalars.time AS time
    FROM scalars JOIN runs ON runs.num = scalars.run JOIN keys ON keys.id = scalars.key;
"""
)
"""The SQL statements, ``;``-separated, that create a store's tables and view (each only if it is missing)."""


def connect(path: str | os.PathLike[str], *, create: bool) -> sqlite3.Connection:
    """A connection to the store at ``path``, in WAL mode, in autocommit (transactions are explicit).

    With ``create``, a missing database (and its directory) is made and given
    the schema; without, the file must already be a jaxtrack store. Another
    program's SQLite database, a file that is not SQLite, and a store of a
    newer jaxtrack are a ``ValueError`` naming the path, and are left as they were.

    Examples:
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "new", "runs.db")
        >>> db = connect(path, create=True)
        >>> db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        True
        >>> db.execute("PRAGMA journal_mode").fetchone()[0], db.execute("SELECT count(*) FROM runs").fetchone()[0]
        ('wal', 0)
        >>> db.close()
    """
    path = os.fspath(path)
    if create:
        os.makedirs(store_dir(path), exist_ok=True)
    uri = pathlib.Path(path).absolute().as_uri() + ("?mode=rwc" if create else "?mode=rw")
    db = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_SECS, isolation_level=None, check_same_thread=False)
    # Switching a new file to WAL and the first read of a WAL file can be refused at once, without
    # SQLite's busy handler, while another process does the same: retried here, within the same bound.
    deadline = time.monotonic() + BUSY_TIMEOUT_SECS
    pause = 0.005
    while True:
        try:
            _prepare(db, path, create=create)
            return db
        except sqlite3.OperationalError as error:
            if not _is_busy(error) or time.monotonic() + pause > deadline:
                db.close()
                raise ValueError(f"{path!r} could not be opened as a jaxtrack run store: {error}") from None
        except sqlite3.DatabaseError as error:
            db.close()
            raise ValueError(f"{path!r} is not a jaxtrack run store: {error}") from None
        except BaseException:
            db.close()
            raise
        time.sleep(pause)
        pause = min(pause * 2, 0.25)


def _prepare(db: sqlite3.Connection, path: str, *, create: bool) -> None:
    # Checked before anything is changed: another program's database is left as it was.
    if _store_version(db) > SCHEMA_VERSION:
        raise ValueError(f"{path!r} was written by a newer jaxtrack; upgrade jaxtrack to read it")
    if not create and _store_version(db) != SCHEMA_VERSION:
        raise ValueError(f"{path!r} is not a jaxtrack run store")
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    if create and _store_version(db) < SCHEMA_VERSION:
        db.execute("BEGIN IMMEDIATE")  # two processes creating one store: the second sees the first's tables
        try:
            version = _store_version(db)
            if version == 0 and db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                raise ValueError(f"{path!r} is an SQLite database of another program, not a jaxtrack run store")
            if version < SCHEMA_VERSION:
                for statement in SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")


def _is_busy(error: sqlite3.OperationalError) -> bool:
    message = str(error)
    return "database is locked" in message or "database is busy" in message


def _store_version(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


__all__ = [
    "BUSY_TIMEOUT_SECS",
    "SCHEMA",
    "SCHEMA_VERSION",
    "STATUSES",
    "STEP_TABLES",
    "VALUE_COLUMNS",
    "connect",
]
