"""Writing one run into a store: its row, its values step by step, its summary, config and artifacts.

A [`RunWriter`][jaxtrack.store.writer.RunWriter] owns one run of a store
([`LocalTracker`][jaxtrack.trackers.local.LocalTracker] is a tracker over one).
Each [`write`][jaxtrack.store.writer.RunWriter.write] is one transaction,
committed before it returns; commits are also synced to the disk at least
once every ``SYNC_SECS`` seconds while a run writes, so a report is safe
from a power loss within a second.

A run started again with the same id continues where it stopped: its last
step is the writer's ``resumed_step``, its status is ``running`` again, its
hyperparameters and summary are merged. One writer owns a run at a time
(see [`jaxtrack.store.owner`][jaxtrack.store.owner]): continuing a run that
another live writer holds is a [`RunInUseError`][jaxtrack.RunInUseError]
unless ``take_over=True``, and a writer whose run was taken over writes
nothing more ([`RunTakenOverError`][jaxtrack.RunTakenOverError]). A step lower than steps already
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
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

import jax

from jaxtrack._artifacts import copy_artifact
from jaxtrack._paths import safe_file_name
from jaxtrack._version import __version__
from jaxtrack.errors import RunInUseError, RunTakenOverError, StoreError
from jaxtrack.ids import validate_run_id
from jaxtrack.store.codec import encode, json_text, to_summary
from jaxtrack.store.location import default_store_path, run_artifacts_dir, store_dir
from jaxtrack.store.owner import HEARTBEAT_SECS, Owner, pid_namespace
from jaxtrack.store.schema import BUSY_TIMEOUT_SECS, STATUSES, STEP_TABLES, connect, store_error

SYNC_SECS = 1.0
"""Commits are synced to the disk at least this often while a run writes."""

_T = TypeVar("_T")
_CHECKPOINT_WAIT_MS = 1000  # how long emptying the log after a full disk waits for another process's reader
_LOW_ROOM_CHECKPOINT_PAGES = 16  # after a full disk, the log is folded in every 16 pages (SQLite's default: 1,000)


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
        take_over: continue the run even if another live writer holds it; that
            writer's later writes are refused (default: refuse, with a
            [`RunInUseError`][jaxtrack.RunInUseError] naming the holder).
        heartbeat_secs: how often the run's heartbeat is refreshed while nothing is written.

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
        take_over: bool = False,
        heartbeat_secs: float = HEARTBEAT_SECS,
    ) -> None:
        # Absolute from the start: a later os.chdir (Hydra makes one) must not move the artifacts.
        self.path = os.path.abspath(path if path is not None else default_store_path())
        self.run_id = validate_run_id(run_id)
        if not heartbeat_secs > 0:
            raise ValueError(f"heartbeat_secs must be positive, got {heartbeat_secs!r}")
        self._lock = threading.RLock()
        self._key_ids: dict[str, int] = {}
        self._last_step = -1
        self._synced_at = time.monotonic()
        self._reopen = False  # a failed write left the connection unusable: a new one is opened first
        self._full = False  # a write failed for a full disk: the log is emptied before the next one
        self._db: sqlite3.Connection | None = connect(self.path, create=True)
        self._session = 0
        try:
            self._run, self.resumed_step = self._commit(lambda db: self._start(db, name, project, take_over))
        except BaseException:
            self._db.close()
            raise
        _claim_run(self)
        if self.resumed_step is not None:
            self._last_step = self.resumed_step
        self._beat_at = time.time()
        self._stopped = threading.Event()
        # The thread holds the writer weakly: a writer dropped without close() is not kept alive by it.
        self._heartbeat = threading.Thread(
            target=_beat,
            args=(weakref.ref(self), self._stopped, heartbeat_secs),
            name=f"jaxtrack-heartbeat-{self.run_id}",
            daemon=True,
        )
        self._heartbeat.start()

    def _start(
        self, db: sqlite3.Connection, name: str | None, project: str | None, take_over: bool
    ) -> tuple[int, int | None]:
        now = time.time()
        host, pid = socket.gethostname(), os.getpid()
        row = db.execute(
            "SELECT num, last_step, status, host, pid, heartbeat, json_extract(system, '$.pid_namespace') "
            "FROM runs WHERE id = ?",
            (self.run_id,),
        ).fetchone()
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
                    json_text({**_system_info(), "pid_namespace": pid_namespace()}),
                ),
            )
            self._session = 1
            return int(cursor.lastrowid or 0), None
        num, last_step, status, owner_host, owner_pid, heartbeat, namespace = row
        if status == "running" and not take_over:
            self._refuse_if_held(Owner(owner_host, owner_pid, namespace, heartbeat))
        (self._session,) = db.execute(
            "UPDATE runs SET status = 'running', end_time = NULL, heartbeat = ?, host = ?, pid = ?, "
            "system = json_set(system, '$.pid_namespace', ?), sessions = sessions + 1, "
            "name = coalesce(?, name), project = coalesce(?, project) WHERE num = ? RETURNING sessions",
            (now, host, pid, pid_namespace(), name, project, num),
        ).fetchone()
        return int(num), last_step

    def _refuse_if_held(self, owner: Owner) -> None:
        """Raises ``RunInUseError`` if ``owner`` still writes the run (in this process: a writer not closed)."""
        here = owner.is_this_process()
        # In this process: held while an earlier writer is open (one dropped unclosed holds nothing).
        if not (_is_claimed(self.path, self.run_id) if here else owner.alive()):
            return
        finish = (
            "a tracker of this process still writes it (a notebook cell run again?): finish it first "
            "(jaxtrack.finish() or tracker.finish())"
            if here
            else "finish that run first"
        )
        raise RunInUseError(
            f"run {self.run_id!r} is being written by another writer: {owner.describe()} "
            f"(store {self.path!r}); {finish}, give this one another run id, or pass "
            "take_over=True to take the run from it (its later writes are then refused)"
        )

    def _claim(self, db: sqlite3.Connection, now: float, *, last_step: int | None = None) -> None:
        """Refreshes the heartbeat (and the last step) if this writer still owns the run; else raises.

        Runs inside ``db``'s transaction, so a refused write stores nothing.
        """
        if last_step is None:
            cursor = db.execute(
                "UPDATE runs SET heartbeat = ? WHERE num = ? AND sessions = ?", (now, self._run, self._session)
            )
        else:
            cursor = db.execute(
                "UPDATE runs SET heartbeat = ?, last_step = ? WHERE num = ? AND sessions = ?",
                (now, last_step, self._run, self._session),
            )
        if cursor.rowcount == 0:
            raise self._taken_over(db)
        self._beat_at = now

    def _taken_over(self, db: sqlite3.Connection) -> RunTakenOverError:
        row = db.execute(
            "SELECT host, pid, heartbeat, json_extract(system, '$.pid_namespace') FROM runs WHERE num = ?",
            (self._run,),
        ).fetchone()
        holder = Owner(row[0], row[1], row[3], row[2]).describe() if row is not None else "the run was deleted"
        return RunTakenOverError(
            f"run {self.run_id!r} of store {self.path!r} was taken over by another writer ({holder}); "
            "this writer records nothing more"
        )

    def _beat_now(self, interval: float) -> bool:
        """Refreshes the heartbeat unless a write did lately; ``False`` once there is nothing more to beat for."""
        with self._lock:
            if self._db is None:
                return False
            now = time.time()
            if now - self._beat_at < interval / 2:
                return True
            try:
                self._commit(lambda db: self._claim(db, now))
            except RunTakenOverError:
                return False
            except StoreError:
                pass  # busy, or the disk is full: the next beat tries again
            return True

    def write(self, values: Iterable[tuple[str, Any]], *, step: int) -> None:
        """Stores one report's ``(key, value)`` pairs at ``step``, in one transaction.

        A value already stored for a key at ``step`` is replaced. A ``step``
        below the latest one written supersedes the values at ``step`` and
        after (of every key) first: the run restarts from there.

        A write that fails (a full disk, a disk error, the store locked past
        its timeout) stores nothing of the report and raises
        [`StoreError`][jaxtrack.errors.StoreError] naming the file; the
        writer goes on as if the report had not been made, so the next one is
        stored at its own step under its own keys. After a full disk, the
        write-ahead log is folded into the database and emptied, and the
        report tried once more: logging resumes by itself as soon as the disk
        has room for the report.
        """
        pairs = list(values)  # tried twice after a full disk: an iterator would be spent
        with self._lock:
            now = time.time()

            def body(db: sqlite3.Connection) -> None:
                self._claim(db, now, last_step=step)  # first: a run taken over gets nothing
                if step < self._last_step:
                    self._supersede(db, step, now)
                self._insert(db, pairs, step, now)

            self._commit(body)
            self._last_step = step  # the latest step, or where a rewind restarted the run: once it is stored

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
        def body(db: sqlite3.Connection) -> None:
            self._claim(db, time.time())
            (stored,) = db.execute(f"SELECT {column} FROM runs WHERE num = ?", (self._run,)).fetchone()
            merged = {**json.loads(stored), **values}
            db.execute(f"UPDATE runs SET {column} = ? WHERE num = ?", (json_text(merged), self._run))

        with self._lock:
            self._commit(body)

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
        source = os.fspath(artifact_path)
        if not os.path.exists(source):
            raise FileNotFoundError(f"artifact path does not exist: {source!r}")
        name = name or os.path.basename(os.path.normpath(source))
        run_dir = run_artifacts_dir(self.path, f"{self._run}-{safe_file_name(self.run_id)}")
        # Copied before the transaction, so a large file does not hold the store's write lock (other
        # processes' runs), and outside the writer's lock, so the heartbeat goes on while a large
        # checkpoint copies; moved into place inside the transaction.
        staging = tempfile.mkdtemp(prefix=".incoming-", dir=run_dir)
        moved: str | None = None  # the folder moved into place, until its row is committed
        try:
            copied = os.path.join(staging, safe_file_name(os.path.basename(os.path.normpath(source))))
            copy_artifact(source, copied, name=name)
            with self._lock, self._transaction() as db:
                self._claim(db, time.time())
                (version,) = db.execute(
                    "SELECT coalesce(max(version), 0) + 1 FROM artifacts WHERE run = ? AND name = ?",
                    (self._run, name),
                ).fetchone()
                (upload,) = db.execute("SELECT count(*) + 1 FROM artifacts WHERE run = ?", (self._run,)).fetchone()
                # Folders carry the run's and the upload's numbers: names that clean up alike
                # ("run+1" and "run_1", "model v1" and "model_v1") never share one.
                folder = os.path.join(run_dir, f"{upload}-{safe_file_name(name)}-v{version}")
                if os.path.isdir(folder) and not os.path.islink(folder):
                    # Left by an upload whose commit failed or whose process was killed: no row names it.
                    shutil.rmtree(folder)
                os.replace(staging, folder)
                moved = folder
                relative = os.path.relpath(os.path.join(folder, os.path.basename(copied)), store_dir(self.path))
                db.execute(
                    "INSERT INTO artifacts (run, name, version, type, path, time) VALUES (?, ?, ?, ?, ?, ?)",
                    (self._run, name, version, type, relative, time.time()),
                )
            moved = None  # committed: the folder is the artifact's
        finally:
            if moved is not None:  # the row was not committed: nothing may name the folder, so it goes
                shutil.rmtree(moved, ignore_errors=True)
            shutil.rmtree(staging, ignore_errors=True)  # gone already unless something failed

    def flush(self) -> None:
        """Folds the write-ahead log into the database as far as no reader holds it back (a no-op once closed)."""
        with self._lock:
            if self._db is not None and not self._reopen:
                try:
                    self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error as error:
                    raise store_error(self.path, error, f"flushing run {self.run_id!r}") from error
                self._synced_at = time.monotonic()

    def close(self, status: str = "finished") -> None:
        """Records how the run ended (``finished``, ``failed`` or ``killed``), synced, and closes the store.

        Calling it again does nothing. When the status cannot be written (the
        disk still full after the write-ahead log is emptied), the store is
        closed all the same and a [`StoreError`][jaxtrack.errors.StoreError]
        says so; the run then reads as ``killed`` once its process has ended.
        """
        if status not in STATUSES or status == "running":
            raise ValueError(f"a run ends as 'finished', 'failed' or 'killed', not {status!r}")
        self._stopped.set()
        with self._lock:
            if self._db is None:
                return
            now = time.time()

            def body(db: sqlite3.Connection) -> None:
                self._claim(db, now)  # a run taken over is the new writer's to end
                db.execute("UPDATE runs SET status = ?, end_time = ? WHERE num = ?", (status, now, self._run))

            try:
                self._commit(body, sync=True)
            except StoreError as error:
                raise StoreError(
                    f"run {self.run_id!r} could not be recorded as {status!r}, it reads as 'running' until its "
                    f"process ends, then 'killed': {error}",
                    path=error.path,
                    reason=error.reason,
                ) from error.__cause__
            finally:
                self._db.close()  # the last connection to close folds the WAL into the database
                self._db = None
                _release_run(self)

    def _commit(self, body: Callable[[sqlite3.Connection], _T], *, sync: bool = False) -> _T:
        """``body(db)`` in one transaction; after a full disk or a disk error, tried again once room is made.

        Once a write failed so, each later one first empties the write-ahead
        log (see ``_recover``) until that succeeds: the room that comes back
        goes to the database, not to a log that would fill it again.
        """
        if self._full:
            self._recover()
        try:
            with self._transaction(sync=sync) as db:
                return body(db)
        except StoreError as error:
            if error.reason not in ("full", "io"):
                raise
            self._full = True
            if not self._recover():
                raise
        with self._transaction(sync=sync) as db:
            return body(db)

    def _recover(self) -> bool:
        """Makes room after a failed write: folds the write-ahead log into the database and truncates it.

        A full disk leaves the log as long as the disk allowed, and SQLite
        only folds it in at a checkpoint after a commit that grew it past 1,000
        pages (4 MB): with less room back than that, the log grows to fill the
        disk again before any checkpoint, and no room is left for the
        checkpoint to grow the database. So once emptied, the log is folded
        in every few pages for the rest of the run: it stays at the size it
        reached, and what room there is goes to the values. A connection the
        failure left unusable is replaced (or marked to be, at the next write,
        while the store cannot be opened). Returns whether the log was emptied.
        """
        if not self._reopen and self._db is not None:
            db = self._db
            try:
                # Another process's reader may hold the log: waited for briefly, not for the busy timeout.
                db.execute(f"PRAGMA busy_timeout = {_CHECKPOINT_WAIT_MS}")
                try:
                    busy = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
                finally:
                    db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_SECS * 1000)}")
            except sqlite3.Error as error:
                if store_error(self.path, error, "").reason in ("full", "locked"):
                    return False  # no room yet: the next write tries again
            else:
                self._full = bool(busy)
                if not busy:
                    db.execute(f"PRAGMA wal_autocheckpoint = {_LOW_ROOM_CHECKPOINT_PAGES}")
                return not busy
            with contextlib.suppress(sqlite3.Error):
                db.close()
            self._reopen = True
        try:
            self._db = connect(self.path, create=True)
        except StoreError:
            return False
        self._db.execute(f"PRAGMA wal_autocheckpoint = {_LOW_ROOM_CHECKPOINT_PAGES}")
        self._reopen = self._full = False
        return True

    @contextlib.contextmanager
    def _transaction(self, *, sync: bool = False) -> Iterator[sqlite3.Connection]:
        """One transaction; when it fails, it is rolled back and every cache forgets what it did.

        SQLite's errors are a ``StoreError`` naming the file. A ``COMMIT`` that
        fails (a full disk) has rolled the transaction back: the key ids it
        cached name nothing stored, and new keys would be given them.
        """
        if self._db is None:
            raise RuntimeError(f"the RunWriter of run {self.run_id!r} is closed")
        if self._reopen:  # the last failure left the connection unusable, and the store could not be opened since
            self._db = connect(self.path, create=True)
            self._reopen = False
        db = self._db
        sync = sync or time.monotonic() - self._synced_at >= SYNC_SECS
        try:
            if sync:
                # In WAL mode a FULL commit fsyncs the log, and with it every commit before.
                db.execute("PRAGMA synchronous = FULL")
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    yield db
                    db.execute("COMMIT")
                except BaseException:
                    self._key_ids.clear()  # keys the transaction inserted are not stored
                    if db.in_transaction:
                        with contextlib.suppress(sqlite3.Error):  # the error to raise is the one that failed
                            db.execute("ROLLBACK")
                    raise
            finally:
                if sync:
                    with contextlib.suppress(sqlite3.Error):
                        db.execute("PRAGMA synchronous = NORMAL")
                    self._synced_at = time.monotonic()
        except sqlite3.Error as error:
            raise store_error(self.path, error, f"writing run {self.run_id!r}") from error

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc_info: object) -> None:
        self.close("finished" if exc_type is None else "failed")

    def __repr__(self) -> str:
        return f"RunWriter({self.path!r}, run_id={self.run_id!r})"


def _beat(ref: weakref.ref[RunWriter], stopped: threading.Event, interval: float) -> None:
    # Keeps the heartbeat fresh while nothing is written (a long evaluation, a compile), so
    # other processes see the run's writer alive; every write refreshes it too.
    while not stopped.wait(interval):
        writer = ref()
        if writer is None or not writer._beat_now(interval):
            return
        del writer


_OPEN_RUNS: weakref.WeakValueDictionary[tuple[str, str], RunWriter] = weakref.WeakValueDictionary()
"""The writers of this process not closed yet, by ``(store, run id)``."""
_OPEN_RUNS_LOCK = threading.Lock()


def _run_key(path: str, run_id: str) -> tuple[str, str]:
    return os.path.realpath(path), run_id


def _claim_run(writer: RunWriter) -> None:
    with _OPEN_RUNS_LOCK:
        _OPEN_RUNS[_run_key(writer.path, writer.run_id)] = writer


def _release_run(writer: RunWriter) -> None:
    with _OPEN_RUNS_LOCK:
        key = _run_key(writer.path, writer.run_id)
        if _OPEN_RUNS.get(key) is writer:
            del _OPEN_RUNS[key]


def _is_claimed(path: str, run_id: str) -> bool:
    with _OPEN_RUNS_LOCK:
        return _OPEN_RUNS.get(_run_key(path, run_id)) is not None


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
