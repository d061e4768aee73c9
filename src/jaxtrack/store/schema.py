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

import contextlib
import errno
import os
import pathlib
import sqlite3
import time
from collections.abc import Mapping

from jaxtrack.errors import StoreError
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
    """A connection to the store at ``path``: with ``create`` for writing, in WAL mode; without, read-only.

    With ``create``, a missing database (and its directory) is made and given
    the schema, and an existing one is checked: it must be a jaxtrack store,
    intact (``PRAGMA quick_check``) and writable, so a bad store is refused
    before a run writes into it. Without, the file must already be a
    jaxtrack store and is opened to read only (SQLite's ``query_only``): on a
    read-only file system, or when the file or its directory may not be
    written, nothing at all is written, not even SQLite's WAL files beside it. Transactions are explicit (autocommit).

    A store that cannot be used is a [`StoreError`][jaxtrack.errors.StoreError]
    (a ``ValueError``) naming the file, what is wrong (another program's
    database, a newer jaxtrack's store, corrupt, locked past
    ``BUSY_TIMEOUT_SECS``, read-only, a full disk) and what to do; the file is
    left as it was, and a new file that could not be made a store is removed.

    Examples:
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "new", "runs.db")
        >>> db = connect(path, create=True)
        >>> db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        True
        >>> db.execute("PRAGMA journal_mode").fetchone()[0], db.execute("SELECT count(*) FROM runs").fetchone()[0]
        ('wal', 0)
        >>> db.close()
        >>> reader = connect(path, create=False)
        >>> reader.execute("INSERT INTO keys (name) VALUES ('x')")
        Traceback (most recent call last):
        sqlite3.OperationalError: attempt to write a readonly database
        >>> reader.close()
    """
    path = os.fspath(path)
    existed = os.path.exists(path)
    try:
        if create:
            os.makedirs(store_dir(path), exist_ok=True)
        return _connect(path, create=create)
    except OSError as error:
        raise store_error(path, error, "opening") from None
    except BaseException:
        if create and not existed:
            _remove_empty(path)
        raise


def _connect(path: str, *, create: bool) -> sqlite3.Connection:
    uri = pathlib.Path(path).absolute().as_uri()
    if create:
        uri += "?mode=rwc"
    elif _frozen(path):
        uri += "?mode=ro&immutable=1"
    elif os.access(path, os.W_OK) and os.access(store_dir(path), os.W_OK):
        # Read-write but query-only: the last connection to close removes the WAL files, as a writer's does.
        uri += "?mode=rw"
    else:
        uri += "?mode=ro"
    # Switching a new file to WAL and the first read of a WAL file can be refused at once, without
    # SQLite's busy handler, while another process does the same: retried here, within the same bound.
    deadline = time.monotonic() + BUSY_TIMEOUT_SECS
    pause = 0.005
    while True:
        db = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_SECS, isolation_level=None, check_same_thread=False)
        try:
            _prepare(db, path, create=create)
            return db
        except sqlite3.Error as error:
            db.close()
            if not create and _error_kind(error) == "read-only" and "&immutable=1" not in uri and _no_wal(path):
                # A reader that cannot make the shared-memory file beside the database (a directory it
                # may not write): with no write-ahead log, the database file alone is the store.
                uri += "&immutable=1"
                continue
            if _error_kind(error) != "locked" or time.monotonic() + pause > deadline:
                raise store_error(path, error, "opening") from None
        except BaseException:
            db.close()
            raise
        time.sleep(pause)
        pause = min(pause * 2, 0.25)


def _prepare(db: sqlite3.Connection, path: str, *, create: bool) -> None:
    # Checked before anything is changed: another program's database is left as it was.
    if _store_version(db) > SCHEMA_VERSION:
        raise StoreError(
            f"{path!r} was written by a newer jaxtrack; upgrade jaxtrack to read it", path=path, reason="not-a-store"
        )
    if not create:
        if _store_version(db) != SCHEMA_VERSION:
            raise StoreError(f"{path!r} is not a jaxtrack run store", path=path, reason="not-a-store")
        db.execute("PRAGMA query_only = 1")
        return
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    if _store_version(db) == SCHEMA_VERSION:
        problem = db.execute("PRAGMA quick_check(1)").fetchone()[0]
        if problem != "ok":
            raise StoreError(_corrupt_message(path, problem), path=path, reason="corrupt")
    # Taking the write lock proves the store writable now, before a run starts (a read-only file or
    # file system, another process holding the lock); with a new store, the schema is made in it.
    db.execute("BEGIN IMMEDIATE")  # two processes creating one store: the second sees the first's tables
    try:
        version = _store_version(db)
        if version == 0 and db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
            raise StoreError(
                f"{path!r} is an SQLite database of another program, not a jaxtrack run store",
                path=path,
                reason="not-a-store",
            )
        if version < SCHEMA_VERSION:
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def store_error(path: str, error: BaseException, doing: str) -> StoreError:
    """``error`` (from SQLite or the file system) while ``doing`` something with the store at ``path``, in words.

    The message names the file, what is wrong and what to do; ``reason`` (see
    [`StoreError`][jaxtrack.errors.StoreError]) says which.

    Examples:
        >>> import errno, sqlite3
        >>> error = store_error("runs.db", sqlite3.OperationalError("database is locked"), "writing run 'r1'")
        >>> error.reason, str(error).split(";")[0]
        ('locked', "'runs.db' is locked while writing run 'r1'")
        >>> store_error("runs.db", OSError(errno.ENOSPC, "No space left on device"), "opening").reason
        'full'
    """
    if isinstance(error, StoreError):
        return error
    kind = _error_kind(error)
    where = f"{path!r}"
    if kind == "full":
        message = (
            f"{where}: the disk is full while {doing} ({error}); free space on it (jaxtrack goes on "
            "writing by itself once there is room) or put the store on another disk"
        )
    elif kind == "locked":
        message = (
            f"{where} is locked while {doing}; another process has held its write lock for over "
            f"{BUSY_TIMEOUT_SECS:.0f} s ({error}): end that process (`fuser {path}` names it) or use another store"
        )
    elif kind == "read-only":
        message = (
            f"{where} cannot be written while {doing} ({error}): the file, its directory or its file system "
            "is read-only; give write access or choose another store path (it can still be read: "
            "`jaxtrack runs --store PATH`)"
        )
    elif kind == "corrupt":
        message = _corrupt_message(path, str(error))
    elif kind == "not-a-store":
        message = f"{where} is not a jaxtrack run store ({error})"
    elif kind == "io":
        message = f"{where}: the disk failed while {doing} ({error}); check the disk, or use another store"
    else:
        message = f"{where}: {type(error).__name__} while {doing}: {error}"
    return StoreError(message, path=path, reason=kind)


def _corrupt_message(path: str, problem: str) -> str:
    problem = " ".join(problem.split())  # quick_check's report spans lines
    return (
        f"{path!r} is corrupt ({problem}); jaxtrack will not write into it. Keep it as it is, recover what "
        f"can be read with `sqlite3 {path} .recover | sqlite3 recovered.db`, and start runs in a new store"
    )


def _error_kind(error: BaseException) -> str:
    if isinstance(error, OSError):
        return {
            errno.ENOSPC: "full",
            errno.EDQUOT: "full",
            errno.EROFS: "read-only",
            errno.EACCES: "read-only",
            errno.EPERM: "read-only",
        }.get(error.errno or 0, "io")
    name = getattr(error, "sqlite_errorname", "") or ""
    message = str(error)
    if name.startswith("SQLITE_FULL") or "database or disk is full" in message:
        return "full"
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or _is_busy(message):
        return "locked"
    if name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM")) or "readonly database" in message:
        return "read-only"
    if name.startswith("SQLITE_NOTADB") or "file is not a database" in message:
        return "not-a-store"
    if name.startswith("SQLITE_CORRUPT") or "malformed" in message:
        return "corrupt"
    if name.startswith("SQLITE_IOERR") or "disk I/O error" in message:
        return "io"
    return "other"


def _is_busy(message: str) -> bool:
    return "database is locked" in message or "database is busy" in message


def _frozen(path: str) -> bool:
    """Whether no process can be writing the store, so reading it must not make SQLite's files beside it.

    True when no write-ahead log is beside it and its file system is read-only,
    or the file or its directory has no write permission (a writer could not
    write it, nor make its log): read as the file is, with ``immutable=1``.
    """
    try:
        read_only = bool(os.statvfs(store_dir(path)).f_flag & os.ST_RDONLY)
        no_write_bits = not (os.stat(path).st_mode & 0o222 and os.stat(store_dir(path)).st_mode & 0o222)
    except OSError:
        return False
    return (read_only or no_write_bits) and _no_wal(path)


def _no_wal(path: str) -> bool:
    try:
        return os.path.getsize(path + "-wal") == 0
    except OSError:
        return True


def _remove_empty(path: str) -> None:
    """Removes a database file this process created that stayed empty (with its WAL files), so nothing half-made stays."""
    with contextlib.suppress(OSError):
        if os.path.getsize(path) == 0:
            for leftover in (path + "-wal", path + "-shm"):
                with contextlib.suppress(OSError):
                    os.remove(leftover)
            os.remove(path)


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
    "store_error",
]
