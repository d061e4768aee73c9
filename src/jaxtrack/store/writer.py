"""Writing one run into a store: its row, its values step by step, its summary, config and artifacts.

A [`RunWriter`][jaxtrack.store.writer.RunWriter] owns one run of a store
([`LocalTracker`][jaxtrack.trackers.local.LocalTracker] is a tracker over one).
Each [`write`][jaxtrack.store.writer.RunWriter.write] is one transaction,
committed before it returns; commits are also synced to the disk at least
once every ``SYNC_SECS`` seconds while a run writes, so a report is safe
from a power loss within a second.

A run started again with the same id continues where it stopped: its last
step is the writer's ``resumed_step``, its status is ``running`` again, its
hyperparameters and summary are merged. A step lower than steps already
stored (a restart from an older checkpoint) supersedes the stored values at
that step and after: they move to the ``superseded_*`` tables, out of the
run's history but not deleted.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import jax

from jaxtrack._artifacts import copy_artifact
from jaxtrack._paths import safe_file_name
from jaxtrack._version import __version__
from jaxtrack.ids import validate_run_id
from jaxtrack.store.codec import encode, json_text, to_summary
from jaxtrack.store.location import default_store_path, run_artifacts_dir, store_dir
from jaxtrack.store.schema import STATUSES, STEP_TABLES, connect

SYNC_SECS = 1.0
"""Commits are synced to the disk at least this often while a run writes."""


class RunWriter:
    """Writes one run into the store at ``path``, creating the store and the run, or continuing the run.

    Values are written as [`jaxtrack.values.normalize`][jaxtrack.values.normalize]
    returns them (numbers, strings, [`Histogram`][jaxtrack.Histogram] and
    [`Image`][jaxtrack.Image] values) under flat keys; the caller gives each
    report its step. Its methods take a lock, so threads may share a writer.
    A context manager too: it closes the run as ``finished``, or as
    ``failed`` when the block raises.

    Args:
        path: the database file (created with its directory if missing); default
            [`default_store_path`][jaxtrack.store.location.default_store_path].
        run_id: the run's id; an existing run with this id is continued.
        name: a human-readable name; a continued run keeps its name when none is given.
        project: the project the run is filed under; kept alike.

    Examples:
        >>> import os, tempfile
        >>> from jaxtrack.store import RunStore, RunWriter
        >>> path = os.path.join(tempfile.mkdtemp(), "runs.db")
        >>> with RunWriter(path, run_id="w1") as writer:
        ...     writer.write([("loss", 1.0), ("note", "start")], step=0)
        ...     writer.write([("loss", 0.5)], step=1)
        ...     writer.merge_summary({"best_loss": 0.5})
        >>> with RunWriter(path, run_id="w1") as writer:  # continued where it stopped
        ...     print(writer.resumed_step)
        ...     writer.write([("loss", 0.75)], step=1)  # a step written again: the later value wins
        1
        >>> with RunStore(path) as store:
        ...     store.history("w1"), store.run("w1").sessions, store.run("w1").summary
        ([{'step': 0, 'loss': 1.0, 'note': 'start'}, {'step': 1, 'loss': 0.75}], 2, {'best_loss': 0.5})
    """

    resumed_step: int | None
    """The last step the run had stored when this writer continued it (``None``: a new run, or no step yet)."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        run_id: str,
        name: str | None = None,
        project: str | None = None,
    ) -> None:
        # Absolute from the start: a later os.chdir (Hydra makes one) must not move the artifacts.
        self.path = os.path.abspath(path if path is not None else default_store_path())
        self.run_id = validate_run_id(run_id)
        self._lock = threading.RLock()
        self._key_ids: dict[str, int] = {}
        self._last_step = -1
        self._synced_at = time.monotonic()
        self._db: sqlite3.Connection | None = connect(self.path, create=True)
        try:
            self._run, self.resumed_step = self._start(name, project)
        except BaseException:
            self._db.close()
            raise
        if self.resumed_step is not None:
            self._last_step = self.resumed_step

    def _start(self, name: str | None, project: str | None) -> tuple[int, int | None]:
        now = time.time()
        host, pid = socket.gethostname(), os.getpid()
        with self._transaction() as db:
            row = db.execute("SELECT num, last_step FROM runs WHERE id = ?", (self.run_id,)).fetchone()
            if row is None:
                cursor = db.execute(
                    "INSERT INTO runs (id, name, project, status, start_time, heartbeat, host, pid, git, system) "
                    "VALUES (?, ?, ?, 'running', ?, ?, ?, ?, ?, ?)",
                    (
                        self.run_id,
                        name,
                        project,
                        now,
                        now,
                        host,
                        pid,
                        json_text(_git_info()),
                        json_text(_system_info()),
                    ),
                )
                return int(cursor.lastrowid or 0), None
            num, last_step = row
            db.execute(
                "UPDATE runs SET status = 'running', end_time = NULL, heartbeat = ?, host = ?, pid = ?, "
                "sessions = sessions + 1, name = coalesce(?, name), project = coalesce(?, project) WHERE num = ?",
                (now, host, pid, name, project, num),
            )
            return int(num), last_step

    def write(self, values: Iterable[tuple[str, Any]], *, step: int) -> None:
        """Stores one report's ``(key, value)`` pairs at ``step``, in one transaction.

        A value already stored for a key at ``step`` is replaced. A ``step``
        below the latest one written supersedes the values at ``step`` and
        after (of every key) first: the run restarts from there.
        """
        with self._lock:
            now = time.time()
            with self._transaction() as db:
                if step < self._last_step:
                    self._supersede(db, step, now)
                self._insert(db, values, step, now)
                self._last_step = step  # the latest step, or where a rewind restarted the run
                db.execute(
                    "UPDATE runs SET last_step = ?, heartbeat = ? WHERE num = ?", (self._last_step, now, self._run)
                )

    def _insert(self, db: sqlite3.Connection, values: Iterable[tuple[str, Any]], step: int, now: float) -> None:
        rows: dict[str, list[tuple[Any, ...]]] = {table: [] for table in STEP_TABLES}
        run = self._run
        for key, value in values:
            table, columns = encode(value)
            rows[table].append((run, step, self._key_id(db, key), *columns, now))
        for table, table_rows in rows.items():
            if table_rows:
                placeholders = ", ".join("?" * len(table_rows[0]))
                db.executemany(f"INSERT OR REPLACE INTO {table} VALUES ({placeholders})", table_rows)

    def _supersede(self, db: sqlite3.Connection, step: int, now: float) -> None:
        for table in STEP_TABLES:
            db.execute(
                f"INSERT INTO superseded_{table} SELECT *, ? FROM {table} WHERE run = ? AND step >= ?",
                (now, self._run, step),
            )
            db.execute(f"DELETE FROM {table} WHERE run = ? AND step >= ?", (self._run, step))

    def _key_id(self, db: sqlite3.Connection, key: str) -> int:
        key_id = self._key_ids.get(key)
        if key_id is None:
            db.execute("INSERT OR IGNORE INTO keys (name) VALUES (?)", (key,))
            key_id = int(db.execute("SELECT id FROM keys WHERE name = ?", (key,)).fetchone()[0])
            self._key_ids[key] = key_id
        return key_id

    def merge_summary(self, values: Mapping[str, Any]) -> None:
        """Merges normalized values into the run's summary (images are kept as a description)."""
        self._merge_json("summary", {key: to_summary(value) for key, value in values.items()})

    def merge_config(self, values: Mapping[str, Any]) -> None:
        """Merges plain JSON values into the run's hyperparameters."""
        self._merge_json("config", values)

    def _merge_json(self, column: str, values: Mapping[str, Any]) -> None:
        with self._lock, self._transaction() as db:
            (stored,) = db.execute(f"SELECT {column} FROM runs WHERE num = ?", (self._run,)).fetchone()
            merged = {**json.loads(stored), **values}
            db.execute(
                f"UPDATE runs SET {column} = ?, heartbeat = ? WHERE num = ?",
                (json_text(merged), time.time(), self._run),
            )

    def add_artifact(
        self, artifact_path: str | os.PathLike[str], *, name: str | None = None, type: str | None = None
    ) -> None:
        """Copies the file or directory at ``artifact_path`` next to the store, as a new version of ``name``.

        The copy goes under ``artifacts/<n>-<run id>/`` beside the database;
        ``name`` defaults to the path's last component. A missing path is a
        ``FileNotFoundError``. ``artifact_path`` itself may be a link (it is
        followed, once), but no link inside a directory is: links that stay
        inside it are kept as links, others are left out with an
        [`ArtifactWarning`][jaxtrack.errors.ArtifactWarning] naming them. An
        ``artifacts`` folder that is a link is an
        [`UnsafePathError`][jaxtrack.errors.UnsafePathError].
        """
        with self._lock:
            source = os.fspath(artifact_path)
            if not os.path.exists(source):
                raise FileNotFoundError(f"artifact path does not exist: {source!r}")
            name = name or os.path.basename(os.path.normpath(source))
            run_dir = run_artifacts_dir(self.path, f"{self._run}-{safe_file_name(self.run_id)}")
            # Copied before the transaction, so a large file does not hold the store's write
            # lock (other processes' runs) while it copies; moved into place inside it.
            staging = tempfile.mkdtemp(prefix=".incoming-", dir=run_dir)
            try:
                copied = os.path.join(staging, safe_file_name(os.path.basename(os.path.normpath(source))))
                copy_artifact(source, copied, name=name)
                with self._transaction() as db:
                    (version,) = db.execute(
                        "SELECT coalesce(max(version), 0) + 1 FROM artifacts WHERE run = ? AND name = ?",
                        (self._run, name),
                    ).fetchone()
                    (upload,) = db.execute("SELECT count(*) + 1 FROM artifacts WHERE run = ?", (self._run,)).fetchone()
                    # Folders carry the run's and the upload's numbers: names that clean up alike
                    # ("run+1" and "run_1", "model v1" and "model_v1") never share one.
                    folder = os.path.join(run_dir, f"{upload}-{safe_file_name(name)}-v{version}")
                    os.replace(staging, folder)
                    relative = os.path.relpath(os.path.join(folder, os.path.basename(copied)), store_dir(self.path))
                    db.execute(
                        "INSERT INTO artifacts (run, name, version, type, path, time) VALUES (?, ?, ?, ?, ?, ?)",
                        (self._run, name, version, type, relative, time.time()),
                    )
            finally:
                shutil.rmtree(staging, ignore_errors=True)  # gone already unless something failed

    def flush(self) -> None:
        """Folds the write-ahead log into the database as far as no reader holds it back (a no-op once closed)."""
        with self._lock:
            if self._db is not None:
                self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
                self._synced_at = time.monotonic()

    def close(self, status: str = "finished") -> None:
        """Records how the run ended (``finished``, ``failed`` or ``killed``), synced, and closes the store.

        Calling it again does nothing.
        """
        if status not in STATUSES or status == "running":
            raise ValueError(f"a run ends as 'finished', 'failed' or 'killed', not {status!r}")
        with self._lock:
            if self._db is None:
                return
            try:
                now = time.time()
                with self._transaction(sync=True) as db:
                    db.execute(
                        "UPDATE runs SET status = ?, end_time = ?, heartbeat = ? WHERE num = ?",
                        (status, now, now, self._run),
                    )
            finally:
                self._db.close()  # the last connection to close folds the WAL into the database
                self._db = None

    @contextlib.contextmanager
    def _transaction(self, *, sync: bool = False) -> Iterator[sqlite3.Connection]:
        db = self._db
        if db is None:
            raise RuntimeError(f"the RunWriter of run {self.run_id!r} is closed")
        sync = sync or time.monotonic() - self._synced_at >= SYNC_SECS
        if sync:
            # In WAL mode a FULL commit fsyncs the log, and with it every commit before.
            db.execute("PRAGMA synchronous = FULL")
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                self._key_ids.clear()  # keys inserted by the rolled-back transaction are gone
                raise
            db.execute("COMMIT")
        finally:
            if sync:
                db.execute("PRAGMA synchronous = NORMAL")
                self._synced_at = time.monotonic()

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc_info: object) -> None:
        self.close("finished" if exc_type is None else "failed")

    def __repr__(self) -> str:
        return f"RunWriter({self.path!r}, run_id={self.run_id!r})"


def _git_info() -> dict[str, Any]:
    """The working directory's git commit, branch and whether it has uncommitted changes (empty outside git)."""
    try:

        def git(*args: str) -> str:
            return subprocess.run(
                ["git", *args], capture_output=True, text=True, timeout=5, check=True, stdin=subprocess.DEVNULL
            ).stdout.strip()

        commit, branch = git("rev-parse", "HEAD", "--abbrev-ref", "HEAD").splitlines()
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError, ValueError):
        return {}
    return {"commit": commit, "branch": branch, "dirty": dirty}


def _system_info() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "jax": jax.__version__,
        "jaxtrack": __version__,
        "program": os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else None,
        "cwd": os.getcwd(),
    }


__all__ = ["SYNC_SECS", "RunWriter"]
