"""The local run store: an SQLite database that needs no account or server, and the tracker that writes it.

[`LocalTracker`][jaxtrack.trackers.local.LocalTracker] is jaxtrack's default backend (``type: local``). Each
run is a row of ``runs`` (id, name, project, status, start/end time, host and
git information, hyperparameters, summary); its values are rows of
``scalars``, ``texts``, ``histograms`` and ``images`` keyed by
``(run, step, key)``. The ``metrics`` view joins scalars with their run id and
key name, for queries by hand:

```bash
sqlite3 runs/jaxtrack.db "SELECT step, value FROM metrics WHERE run_id = '...' AND key = 'train/loss'"
```

Each ``log`` call is one transaction, committed before the call returns, in
WAL mode: a process killed at any moment (even by SIGKILL) leaves a database
that opens and holds every report committed before the kill. Commits are
also synced to the disk at least once a second while a run logs, so a
report is safe from a power loss within a second. Several processes can
write runs into one database at once.

A run started again with the same id (``init_tracker(..., run_id=X)``)
continues where it stopped: ``step=None`` continues after its last step, its
status is ``running`` again, its hyperparameters and summary are merged. A
step lower than steps already stored (a restart from an older checkpoint)
supersedes the stored values at that step and after: they move to the
``superseded_*`` tables, out of the run's history but not deleted.

[`RunStore`][jaxtrack.trackers.local.RunStore] reads a store; the ``jaxtrack`` command line is built on it.

The store is ``DEFAULT_STORE_PATH`` (``runs/jaxtrack.db``, relative to the
working directory) unless a path is given or the environment variable named
by ``STORE_ENV_VAR`` (``JAXTRACK_STORE``) is set. ``STATUSES`` are a run's
possible statuses: ``running``, ``finished``, ``failed`` and ``killed``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import fnmatch
import io
import json
import math
import os
import pathlib
import platform
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from jaxtrack._paths import safe_file_name
from jaxtrack.multihost import per_process, writes
from jaxtrack.redaction import redact
from jaxtrack.run_id import new_run_id, validate_run_id
from jaxtrack.trackers.base import StepCounter, Tracker, check_run_end_status
from jaxtrack.trackers.config import TrackerConfig
from jaxtrack.values import DEFAULT_NUM_BINS, Histogram, Image, flatten, normalize, to_host, to_plain

STORE_ENV_VAR = "JAXTRACK_STORE"
"""Environment variable that overrides the default store path, for the tracker and the command line."""

DEFAULT_STORE_PATH = os.path.join("runs", "jaxtrack.db")
"""Where runs are stored when no path is given and ``$JAXTRACK_STORE`` is unset (relative to the working directory)."""

SCHEMA_VERSION = 1
STATUSES = ("running", "finished", "failed", "killed")
"""A run's status; ``killed`` is also what a ``running`` run reads as once its process is gone."""

SYNC_SECS = 1.0
"""Commits are synced to the disk at least this often while a run logs."""

BUSY_TIMEOUT_SECS = 60.0
"""How long a write waits for another process's transaction on the same database."""

_INT64 = 2**63

# The tables of values at a step: name -> the columns after (run, step, key). Each
# has a twin superseded_<name> that keeps the values a rewind replaced.
_STEP_TABLES: dict[str, str] = {
    "scalars": "value",  # no type: ints stay exact, NaN is stored as NULL (SQLite has no NaN)
    "texts": "value TEXT NOT NULL",
    "histograms": (
        "bucket_limits BLOB NOT NULL, bucket_counts BLOB NOT NULL, "
        "min REAL, max REAL, num INTEGER NOT NULL, sum REAL, sum_squares REAL"
    ),
    "images": "pixels BLOB NOT NULL, caption TEXT",
}

_SCHEMA = (
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
        for table, columns in _STEP_TABLES.items()
    )
    + """
CREATE VIEW IF NOT EXISTS metrics AS
    SELECT runs.id AS run_id, scalars.step AS step, keys.name AS key, scalars.value AS value, scalars.time AS time
    FROM scalars JOIN runs ON runs.num = scalars.run JOIN keys ON keys.id = scalars.key;
"""
)


def default_store_path() -> str:
    """The store used when none is given: ``$JAXTRACK_STORE``, else ``runs/jaxtrack.db``.

    Examples:
        >>> import os
        >>> default_store_path() == (os.environ.get("JAXTRACK_STORE") or os.path.join("runs", "jaxtrack.db"))
        True
    """
    return os.environ.get(STORE_ENV_VAR) or DEFAULT_STORE_PATH


class LocalTracker(Tracker):
    """Records a run in a local SQLite store (see [`jaxtrack.trackers.local`][jaxtrack.trackers.local]).

    Scalars, strings, histograms (from [`Histogram`][jaxtrack.Histogram] values and
    arrays) and [`Image`][jaxtrack.Image] values are kept at their step;
    hyperparameters (credentials redacted) and the summary are merged into
    the run's row; artifacts are copied next to the database, under
    ``artifacts/<n>-<run id>/``. In a multi-process JAX run only process 0 writes.

    Args:
        path: the database file (created with its directory if missing); default
            [`default_store_path`][jaxtrack.trackers.local.default_store_path].
        run_id: the run's id; an existing run with this id is continued.
        name: a human-readable name (default: none; the id is shown).
        project: groups runs in ``jaxtrack runs --project``.
        histogram_bins: buckets of the histogram made from an array value.
        all_processes: in a multi-process run, every process writes a run of its
            own (``<run id>-process<i>``; give each host its own ``path`` unless the
            file system is one SQLite can lock across hosts), not only process 0.

    Examples:
        >>> import os, tempfile, jaxtrack as jt
        >>> from jaxtrack.trackers.local import LocalTracker, RunStore
        >>> path = os.path.join(tempfile.mkdtemp(), "runs.db")
        >>> with LocalTracker(path, run_id="demo", name="first") as tracker:
        ...     tracker.log({"train": {"loss": 0.5}}, step=1)
        ...     tracker.log({"train": {"loss": 0.25}}, step=2)
        >>> with RunStore(path) as store:
        ...     store.runs()[0].status, store.history("demo")
        ('finished', [{'step': 1, 'train/loss': 0.5}, {'step': 2, 'train/loss': 0.25}])
    """

    name = "local"

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        run_id: str | None = None,
        name: str | None = None,
        project: str | None = None,
        histogram_bins: int = DEFAULT_NUM_BINS,
        all_processes: bool = False,
    ) -> None:
        self.path = os.fspath(path) if path is not None else default_store_path()
        self.run_id = validate_run_id(run_id) if run_id is not None else new_run_id()
        if all_processes:
            self.run_id = per_process(self.run_id)  # process i writes its own run, "<id>-process<i>"
        self.histogram_bins = histogram_bins
        self._lock = threading.RLock()
        self._steps = StepCounter()
        self._finished = False
        self._status = "finished"
        self._key_ids: dict[str, int] = {}
        self._last_step = -1
        self._synced_at = time.monotonic()
        self._db: sqlite3.Connection | None = None
        if not writes(all_processes):
            return
        self._db = _connect(self.path, create=True)
        self._run, last_step = self._start(name, project)
        if last_step is not None:
            self._last_step = last_step
            self._steps.last_step = last_step
            self.resumed_step = last_step

    def _start(self, name: str | None, project: str | None) -> tuple[int, int | None]:
        now = time.time()
        host, pid = socket.gethostname(), os.getpid()
        with self._transaction() as db:
            row = db.execute("SELECT num, last_step FROM runs WHERE id = ?", (self.run_id,)).fetchone()
            if row is None:
                cursor = db.execute(
                    "INSERT INTO runs (id, name, project, status, start_time, heartbeat, host, pid, git, system) "
                    "VALUES (?, ?, ?, 'running', ?, ?, ?, ?, ?, ?)",
                    (self.run_id, name, project, now, now, host, pid, _json(_git_info()), _json(_system_info())),
                )
                return int(cursor.lastrowid or 0), None
            num, last_step = row
            db.execute(
                "UPDATE runs SET status = 'running', end_time = NULL, heartbeat = ?, host = ?, pid = ?, "
                "sessions = sessions + 1, name = coalesce(?, name), project = coalesce(?, project) WHERE num = ?",
                (now, host, pid, name, project, num),
            )
            return int(num), last_step

    def log(self, metrics: Mapping[str, Any], *, step: int | None = None, commit: bool | None = None) -> None:
        with self._lock:
            self._check_open()
            flat = flatten(metrics)
            self.validate(flat)
            values = self._normalized(flat)  # a refused value must not use up a step
            resolved = self._steps.resolve(step, commit)
            if self._db is None:
                return
            now = time.time()
            with self._transaction() as db:
                if resolved < self._last_step:
                    self._supersede(db, resolved, now)
                self._insert(db, values, resolved, now)
                self._last_step = resolved  # the latest step, or where a rewind restarted the run
                db.execute(
                    "UPDATE runs SET last_step = ?, heartbeat = ? WHERE num = ?", (self._last_step, now, self._run)
                )

    def validate(self, metrics: Mapping[str, Any]) -> None:
        if "step" in metrics:
            raise ValueError("metric name 'step' is reserved by the local store (each row's step); pass step=")

    def _normalized(self, flat: Mapping[str, Any]) -> list[tuple[str, Any]]:
        """``(key, value)`` of a flat mapping's values as the store keeps them; ``None`` values are left out."""
        out = []
        for key, raw in to_host(flat).items():
            value = normalize(key, raw, num_bins=self.histogram_bins)
            if value is not None:
                out.append((key, value))
        return out

    def _insert(self, db: sqlite3.Connection, values: list[tuple[str, Any]], step: int, now: float) -> None:
        rows: dict[str, list[tuple[Any, ...]]] = {table: [] for table in _STEP_TABLES}
        run = self._run
        for key, value in values:
            head = (run, step, self._key_id(db, key))
            if type(value) is float:  # the common case first
                rows["scalars"].append((*head, None if value != value else value, now))
            elif isinstance(value, str):
                rows["texts"].append((*head, value, now))
            elif isinstance(value, Histogram):
                rows["histograms"].append((*head, *_histogram_columns(value), now))
            elif isinstance(value, Image):
                rows["images"].append((*head, _npy(value.to_uint8()), value.caption, now))
            else:
                rows["scalars"].append((*head, _sql_number(value), now))
        for table, table_rows in rows.items():
            if table_rows:
                placeholders = ", ".join("?" * len(table_rows[0]))
                db.executemany(f"INSERT OR REPLACE INTO {table} VALUES ({placeholders})", table_rows)

    def _supersede(self, db: sqlite3.Connection, step: int, now: float) -> None:
        for table in _STEP_TABLES:
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

    def log_summary(self, metrics: Mapping[str, Any]) -> None:
        with self._lock:
            self._check_open()
            if self._db is None:
                return
            values = {key: _summary_value(value) for key, value in self._normalized(flatten(metrics))}
            self._merge_json("summary", values)

    def log_hyperparameters(self, hparams: Mapping[str, Any]) -> None:
        with self._lock:
            self._check_open()
            if self._db is None:
                return
            self._merge_json("config", to_plain(redact(to_host(flatten(hparams)))))

    def _merge_json(self, column: str, values: Mapping[str, Any]) -> None:
        with self._transaction() as db:
            (stored,) = db.execute(f"SELECT {column} FROM runs WHERE num = ?", (self._run,)).fetchone()
            merged = {**json.loads(stored), **values}
            db.execute(
                f"UPDATE runs SET {column} = ?, heartbeat = ? WHERE num = ?", (_json(merged), time.time(), self._run)
            )

    def log_artifact(
        self, artifact_path: str | os.PathLike[str], *, name: str | None = None, type: str | None = None
    ) -> None:
        with self._lock:
            self._check_open()
            if self._db is None:
                return
            source = os.fspath(artifact_path)
            if not os.path.exists(source):
                raise FileNotFoundError(f"artifact path does not exist: {source!r}")
            name = name or os.path.basename(os.path.normpath(source))
            run_dir = os.path.join(_store_dir(self.path), "artifacts", f"{self._run}-{safe_file_name(self.run_id)}")
            # Copied before the transaction, so a large file does not hold the store's write
            # lock (other processes' runs) while it copies; moved into place inside it.
            os.makedirs(run_dir, exist_ok=True)
            staging = tempfile.mkdtemp(prefix=".incoming-", dir=run_dir)
            try:
                copied = os.path.join(staging, safe_file_name(os.path.basename(os.path.normpath(source))))
                if os.path.isdir(source):
                    shutil.copytree(source, copied)
                else:
                    shutil.copy2(source, copied)
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
                    relative = os.path.relpath(os.path.join(folder, os.path.basename(copied)), _store_dir(self.path))
                    db.execute(
                        "INSERT INTO artifacts (run, name, version, type, path, time) VALUES (?, ?, ?, ?, ?, ?)",
                        (self._run, name, version, type, relative, time.time()),
                    )
            finally:
                shutil.rmtree(staging, ignore_errors=True)  # gone already unless something failed

    def set_status(self, status: str) -> None:
        with self._lock:
            self._status = check_run_end_status(status)

    def flush(self) -> None:
        with self._lock:
            if self._db is not None and not self._finished:
                self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
                self._synced_at = time.monotonic()

    def finish(self) -> None:
        with self._lock:
            if self._finished:
                return
            self._finished = True
            if self._db is None:
                return
            try:
                now = time.time()
                with self._transaction(sync=True) as db:
                    db.execute(
                        "UPDATE runs SET status = ?, end_time = ?, heartbeat = ? WHERE num = ?",
                        (self._status, now, now, self._run),
                    )
            finally:
                self._db.close()  # the last connection to close folds the WAL into the database
                self._db = None

    @contextlib.contextmanager
    def _transaction(self, *, sync: bool = False) -> Iterator[sqlite3.Connection]:
        db = self._db
        assert db is not None
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

    def _check_open(self) -> None:
        if self._finished:
            raise RuntimeError(f"LocalTracker for run {self.run_id!r} is finished; start a new tracker to log more")

    def __repr__(self) -> str:
        return f"LocalTracker(path={self.path!r}, run_id={self.run_id!r})"


@TrackerConfig.register("local")
@dataclasses.dataclass(frozen=True)
class LocalConfig(TrackerConfig):
    """``type: local``: a [`LocalTracker`][jaxtrack.trackers.local.LocalTracker] writing the run into the store at ``path``.

    ``path`` defaults to [`default_store_path`][jaxtrack.trackers.local.default_store_path] (``$JAXTRACK_STORE`` or
    ``runs/jaxtrack.db``), the store the ``jaxtrack`` command line reads by
    default. The other fields are ``LocalTracker``'s arguments.

    Examples:
        >>> LocalConfig(path="runs/my.db", project="digits").to_dict()
        {'type': 'local', 'path': 'runs/my.db', 'name': None, 'project': 'digits', 'histogram_bins': 64, 'all_processes': False}
    """

    path: str | None = None
    name: str | None = None
    project: str | None = None
    histogram_bins: int = DEFAULT_NUM_BINS
    all_processes: bool = False

    def init(self, run_id: str | None) -> LocalTracker:
        return LocalTracker(
            self.path,
            run_id=run_id,
            name=self.name,
            project=self.project,
            histogram_bins=self.histogram_bins,
            all_processes=self.all_processes,
        )


@dataclasses.dataclass(frozen=True)
class StoredRun:
    """One run of a [`RunStore`][jaxtrack.trackers.local.RunStore], as its ``runs`` row describes it.

    Examples:
        >>> import os, tempfile
        >>> from jaxtrack.trackers.local import LocalTracker, RunStore
        >>> path = os.path.join(tempfile.mkdtemp(), "runs.db")
        >>> with LocalTracker(path, run_id="r1", project="demo") as tracker:
        ...     tracker.log({"loss": 1.0}, step=5)
        >>> with RunStore(path) as store:
        ...     run = store.run("r1")
        >>> run.status, run.project, run.last_step, run.sessions, run.display_name
        ('finished', 'demo', 5, 1, 'r1')
    """

    id: str
    """The run's id."""
    name: str | None
    """Its human-readable name, if it was given one."""
    project: str | None
    """The project it was filed under, if any."""
    status: str
    """``running``, ``finished``, ``failed`` or ``killed`` (also a running run whose process on this host is gone)."""
    start_time: float
    """When the run started (seconds since the epoch)."""
    end_time: float | None
    """When it finished (``None`` while it runs, or if its process died before finishing it)."""
    heartbeat: float | None
    """When the run last wrote."""
    last_step: int | None
    """The latest step stored (``None`` before any value)."""
    sessions: int
    """How many times the run was started (1, plus one per resume)."""
    host: str | None
    """The host name of the process that last started (or resumed) it."""
    pid: int | None
    """That process's id."""
    git: dict[str, Any]
    """The working directory's git ``commit``, ``branch`` and ``dirty`` flag (empty outside git)."""
    system: dict[str, Any]
    """Python, platform, JAX and jaxtrack versions, the program and its working directory."""
    config: dict[str, Any]
    """The run's hyperparameters (flat ``"a/b"`` keys, credentials redacted)."""
    summary: dict[str, Any]
    """The run's summary values."""

    @property
    def display_name(self) -> str:
        """The name, or the id for a run without one."""
        return self.name or self.id

    @property
    def duration(self) -> float:
        """Seconds from start to end (or to the last write, for a run that did not finish)."""
        end = self.end_time or self.heartbeat or self.start_time
        return max(end - self.start_time, 0.0)


class RunStore:
    """Reads a local run store: runs, their history, summary and config.

    Also a context manager that closes it.

    Args:
        path: the database; default [`default_store_path`][jaxtrack.trackers.local.default_store_path]. A missing file is
            a ``FileNotFoundError``, a file that is not a jaxtrack store a ``ValueError``.

    Examples:
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "runs.db")
        >>> with LocalTracker(path, run_id="r1") as tracker:
        ...     tracker.log_hyperparameters({"lr": 0.1, "api_key": "hunter2"})
        ...     tracker.log({"loss": 1.0, "note": "start"}, step=0)
        ...     tracker.log({"loss": 0.5}, step=1)
        ...     tracker.log_summary({"best_loss": 0.5})
        >>> store = RunStore(path)
        >>> [run.id for run in store.runs()], store.run("r1").config, store.run("r1").summary
        (['r1'], {'lr': 0.1, 'api_key': '[redacted]'}, {'best_loss': 0.5})
        >>> store.history("r1")
        [{'step': 0, 'loss': 1.0, 'note': 'start'}, {'step': 1, 'loss': 0.5}]
        >>> store.keys("r1")
        {'loss': 'scalar', 'note': 'text'}
        >>> steps, losses = store.scalars("r1", "loss")
        >>> steps.tolist(), losses.tolist()
        ([0, 1], [1.0, 0.5])
        >>> store.close()
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = os.fspath(path) if path is not None else default_store_path()
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"no run store at {self.path!r} (LocalTracker creates one when a run starts)")
        self._db = _connect(self.path, create=False)

    def runs(self, *, project: str | None = None) -> list[StoredRun]:
        """Every run, oldest first (only ``project``'s when given)."""
        where, args = ("WHERE project = ?", (project,)) if project is not None else ("", ())
        rows = self._db.execute(f"SELECT {_RUN_COLUMNS} FROM runs {where} ORDER BY start_time, num", args)
        return [_stored_run(row) for row in rows.fetchall()]

    def run(self, ref: str) -> StoredRun:
        """The run ``ref`` names: its id, ``latest``, a unique prefix of its id, or its name (the latest such run).

        Raises ``KeyError`` with a message naming the store's runs when none matches.
        """
        runs = self.runs()
        if ref == "latest" and runs:
            return runs[-1]
        for candidates in (
            [run for run in runs if run.id == ref],
            [run for run in runs if run.id.startswith(ref)],
            [run for run in runs if run.name == ref][-1:],
        ):
            if len(candidates) == 1:
                return candidates[0]
            if len(candidates) > 1:
                raise KeyError(
                    f"run {ref!r} is ambiguous in {self.path}: it starts {', '.join(r.id for r in candidates)}"
                )
        if not runs:
            raise KeyError(f"no run {ref!r}: the store {self.path} has no runs")
        names = [run.id for run in runs] + [run.name for run in runs if run.name]
        hint = difflib.get_close_matches(ref, names, n=1)
        known = ", ".join(run.id for run in runs[-5:])
        raise KeyError(
            f"no run {ref!r} in {self.path}"
            + (f"; did you mean {hint[0]!r}?" if hint else "")
            + f" (latest runs: {known}; `jaxtrack runs` lists them all)"
        )

    def keys(self, run_id: str) -> dict[str, str]:
        """The run's keys, sorted, each with its kind: ``scalar``, ``text``, ``histogram`` or ``image``."""
        num = self._num(run_id)
        kinds: dict[str, str] = {}
        for table, kind in _KINDS.items():
            for (name,) in self._db.execute(
                f"SELECT DISTINCT keys.name FROM {table} JOIN keys ON keys.id = {table}.key WHERE run = ?", (num,)
            ):
                kinds.setdefault(name, kind)
        return dict(sorted(kinds.items()))

    def history(self, run_id: str, keys: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """The run's values as wide rows ``{"step": s, key: value, ...}``, ordered by step (like W&B's ``scan_history``).

        Scalars are numbers (NaN where NaN was logged), strings are strings,
        histograms [`Histogram`][jaxtrack.Histogram] and images
        [`Image`][jaxtrack.Image] values. ``keys`` limits the columns; a row
        appears for every step where one of them has a value.
        """
        num = self._num(run_id)
        names = self._key_names()
        wanted = None if keys is None else set(keys)
        rows: dict[int, dict[str, Any]] = {}
        for table in _STEP_TABLES:
            columns = _READ_COLUMNS[table]
            for step, key, *data in self._db.execute(
                f"SELECT step, key, {columns} FROM {table} WHERE run = ? ORDER BY step, key", (num,)
            ):
                name = names[key]
                if wanted is None or name in wanted:
                    rows.setdefault(step, {"step": step})[name] = _decode(table, data)
        return [rows[step] for step in sorted(rows)]

    def scalars(self, run_id: str, key: str) -> tuple[np.ndarray, np.ndarray]:
        """One scalar metric as ``(steps, values)`` arrays (int64, float64), ordered by step.

        Raises ``KeyError`` naming the run's scalar keys when ``key`` is not one.
        """
        num = self._num(run_id)
        rows = self._db.execute(
            "SELECT step, value FROM scalars WHERE run = ? AND key = (SELECT id FROM keys WHERE name = ?) ORDER BY step",
            (num, key),
        ).fetchall()
        if not rows:
            self._missing_key(run_id, key, kind="scalar")
        steps = np.array([row[0] for row in rows], dtype=np.int64)
        values = np.array([math.nan if row[1] is None else float(row[1]) for row in rows], dtype=np.float64)
        return steps, values

    def histograms(self, run_id: str, key: str) -> tuple[np.ndarray, list[Histogram]]:
        """One histogram metric as ``(steps, histograms)``: an int64 array and a [`Histogram`][jaxtrack.Histogram] a step.

        Raises ``KeyError`` naming the run's histogram keys when ``key`` is not one.

        Examples:
            >>> import os, tempfile, numpy as np
            >>> from jaxtrack.trackers.local import LocalTracker, RunStore
            >>> path = os.path.join(tempfile.mkdtemp(), "runs.db")
            >>> with LocalTracker(path, run_id="hist") as tracker:
            ...     tracker.log({"weights": np.arange(6.0)}, step=1)
            ...     tracker.log({"weights": np.arange(6.0) * 2}, step=2)
            >>> with RunStore(path) as store:
            ...     steps, histograms = store.histograms("hist", "weights")
            >>> steps.tolist(), [float(h.max) for h in histograms], int(histograms[0].bucket_counts.sum())
            ([1, 2], [5.0, 10.0], 6)
        """
        num = self._num(run_id)
        rows = self._db.execute(
            f"SELECT step, {_READ_COLUMNS['histograms']} FROM histograms "
            "WHERE run = ? AND key = (SELECT id FROM keys WHERE name = ?) ORDER BY step",
            (num, key),
        ).fetchall()
        if not rows:
            self._missing_key(run_id, key, kind="histogram")
        return np.array([row[0] for row in rows], dtype=np.int64), [_decode("histograms", row[1:]) for row in rows]

    def metric_stats(self, run_id: str) -> dict[str, dict[str, Any]]:
        """Per key: ``last`` value and ``last_step``, ``count``, and for scalars ``min`` and ``max`` (NaNs left out)."""
        num = self._num(run_id)
        names = self._key_names()
        stats: dict[str, dict[str, Any]] = {}
        for key, count, low, high in self._db.execute(
            "SELECT key, count(*), min(value), max(value) FROM scalars WHERE run = ? GROUP BY key", (num,)
        ):
            stats[names[key]] = {"count": count, "min": low, "max": high}
        for table in _STEP_TABLES:
            for key, step, count, *data in self._db.execute(
                f"SELECT t.key, t.step, latest.count, {_READ_COLUMNS[table]} FROM {table} AS t "
                f"JOIN (SELECT key, max(step) AS step, count(*) AS count FROM {table} WHERE run = ? GROUP BY key) "
                "AS latest ON t.key = latest.key AND t.step = latest.step WHERE t.run = ?",
                (num, num),
            ):
                entry = stats.setdefault(names[key], {"count": 0})
                if table != "scalars":
                    entry["count"] += count
                # A key logged as a number at some steps and as text at others: the latest step wins.
                if entry.get("last_step", -1) <= step:
                    entry["last_step"] = step
                    entry["last"] = _decode(table, data)
        return dict(sorted(stats.items()))

    def summary(self, run_id: str) -> dict[str, Any]:
        """The run's summary values."""
        return self._resolve(run_id).summary

    def config(self, run_id: str) -> dict[str, Any]:
        """The run's hyperparameters (flat ``"a/b"`` keys, credentials redacted)."""
        return self._resolve(run_id).config

    def artifacts(self, run_id: str) -> list[dict[str, Any]]:
        """The run's artifacts: ``name``, ``version``, ``type``, ``path`` (absolute), ``time``."""
        num = self._num(run_id)
        rows = self._db.execute(
            "SELECT name, version, type, path, time FROM artifacts WHERE run = ? ORDER BY time, name, version", (num,)
        )
        base = _store_dir(self.path)
        return [
            {"name": n, "version": v, "type": t, "path": os.path.join(base, p), "time": at} for n, v, t, p, at in rows
        ]

    def superseded(self, run_id: str) -> list[dict[str, Any]]:
        """Scalar and text values that a rewind replaced: ``step``, ``key``, ``value``, ``time``, ``superseded_at``."""
        num = self._num(run_id)
        names = self._key_names()
        out = []
        for table in ("scalars", "texts"):
            for step, key, value, logged, superseded_at in self._db.execute(
                f"SELECT step, key, value, time, superseded_at FROM superseded_{table} WHERE run = ?", (num,)
            ):
                value = _decode(table, [value])
                out.append(
                    {"step": step, "key": names[key], "value": value, "time": logged, "superseded_at": superseded_at}
                )
        return sorted(out, key=lambda row: (row["superseded_at"], row["step"], row["key"]))

    def select_keys(self, run_id: str, patterns: Sequence[str], *, kind: str | None = None) -> list[str]:
        """The run's keys matching ``patterns`` (exact names or shell-style ``train/*``), in order.

        Raises ``KeyError`` naming a pattern that matches nothing, with the closest key.
        """
        kinds = self.keys(run_id)
        available = [key for key, k in kinds.items() if kind is None or k == kind]
        selected: list[str] = []
        for pattern in patterns:
            matches = [key for key in available if fnmatch.fnmatchcase(key, pattern)] if _is_glob(pattern) else []
            if not _is_glob(pattern) and pattern in available:
                matches = [pattern]
            if not matches:
                self._missing_key(run_id, pattern, kind=kind)
            selected.extend(key for key in matches if key not in selected)
        return selected

    def _missing_key(self, run_id: str, key: str, *, kind: str | None) -> None:
        kinds = self.keys(run_id)
        available = [k for k, v in kinds.items() if kind is None or v == kind]
        hint = difflib.get_close_matches(key, available, n=1)
        what = f"{kind} key" if kind else "key"
        raise KeyError(
            f"run {run_id!r} has no {what} {key!r}"
            + (f"; did you mean {hint[0]!r}?" if hint else "")
            + (
                f" (its {what}s: {', '.join(available[:20])}{' ...' if len(available) > 20 else ''})"
                if available
                else ""
            )
        )

    def _resolve(self, run_id: str) -> StoredRun:
        row = self._db.execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            return self.run(run_id)
        return _stored_run(row)

    def _num(self, run_id: str) -> int:
        row = self._db.execute("SELECT num FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            row = self._db.execute("SELECT num FROM runs WHERE id = ?", (self.run(run_id).id,)).fetchone()
        return int(row[0])

    def _key_names(self) -> dict[int, str]:
        return dict(self._db.execute("SELECT id, name FROM keys").fetchall())

    def close(self) -> None:
        """Closes the database connection."""
        self._db.close()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RunStore({self.path!r})"


_KINDS = {"scalars": "scalar", "texts": "text", "histograms": "histogram", "images": "image"}
_READ_COLUMNS = {
    "scalars": "value",
    "texts": "value",
    "histograms": "bucket_limits, bucket_counts, min, max, num, sum, sum_squares",
    "images": "pixels, caption",
}
_RUN_COLUMNS = "id, name, project, status, start_time, end_time, heartbeat, last_step, sessions, host, pid, git, system, config, summary"


def _stored_run(row: Sequence[Any]) -> StoredRun:
    (
        run_id,
        name,
        project,
        status,
        start,
        end,
        heartbeat,
        last_step,
        sessions,
        host,
        pid,
        git,
        system,
        config,
        summary,
    ) = row
    if status == "running" and host == socket.gethostname() and pid is not None and not _process_alive(pid):
        status = "killed"
    return StoredRun(
        id=run_id,
        name=name,
        project=project,
        status=status,
        start_time=start,
        end_time=end,
        heartbeat=heartbeat,
        last_step=last_step,
        sessions=sessions,
        host=host,
        pid=pid,
        git=json.loads(git),
        system=json.loads(system),
        config=json.loads(config),
        summary=json.loads(summary),
    )


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _decode(table: str, data: Sequence[Any]) -> Any:
    if table == "scalars":
        return math.nan if data[0] is None else data[0]
    if table == "texts":
        return data[0]
    if table == "histograms":
        limits, counts, low, high, num, total, squares = data
        return Histogram(
            bucket_limits=np.frombuffer(limits, dtype=np.float64).copy(),
            bucket_counts=np.frombuffer(counts, dtype=np.int64).copy(),
            min=math.nan if low is None else low,
            max=math.nan if high is None else high,
            num=num,
            sum=math.nan if total is None else total,
            sum_squares=math.nan if squares is None else squares,
        )
    pixels, caption = data
    return Image(np.load(io.BytesIO(pixels), allow_pickle=False), caption=caption)


def _histogram_columns(value: Histogram) -> tuple[Any, ...]:
    return (
        np.asarray(value.bucket_limits, dtype=np.float64).tobytes(),
        np.asarray(value.bucket_counts, dtype=np.int64).tobytes(),
        _sql_number(float(value.min)),
        _sql_number(float(value.max)),
        int(value.num),
        _sql_number(float(value.sum)),
        _sql_number(float(value.sum_squares)),
    )


def _sql_number(value: Any) -> int | float | None:
    """A scalar as SQLite stores it: ints exactly (within 64 bits), NaN as NULL."""
    if isinstance(value, int):
        return int(value) if -_INT64 <= value < _INT64 else float(value)
    number = float(value)
    return None if math.isnan(number) else number


def _summary_value(value: Any) -> Any:
    if isinstance(value, Image):
        return f"<image {'x'.join(map(str, np.shape(value.pixels)))}>"
    return to_plain(value)


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=repr)


def _is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


def _store_dir(path: str) -> str:
    return os.path.dirname(os.path.abspath(path))


def _connect(path: str, *, create: bool) -> sqlite3.Connection:
    if create:
        os.makedirs(_store_dir(path), exist_ok=True)
    uri = pathlib.Path(path).absolute().as_uri() + ("?mode=rwc" if create else "?mode=rw")
    db = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_SECS, isolation_level=None, check_same_thread=False)
    try:
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
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            db.execute(statement)
                    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
    except sqlite3.DatabaseError as error:
        db.close()
        raise ValueError(f"{path!r} is not a jaxtrack run store: {error}") from None
    except BaseException:
        db.close()
        raise
    return db


def _store_version(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


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
    import jax

    from jaxtrack._version import __version__

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "jax": jax.__version__,
        "jaxtrack": __version__,
        "program": os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else None,
        "cwd": os.getcwd(),
    }


__all__ = [
    "DEFAULT_STORE_PATH",
    "STATUSES",
    "STORE_ENV_VAR",
    "LocalConfig",
    "LocalTracker",
    "RunStore",
    "StoredRun",
    "default_store_path",
]
