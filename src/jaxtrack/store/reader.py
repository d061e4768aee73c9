"""Reading a run store: its runs, each one's history, metrics, summary, config and artifacts.

[`RunStore`][jaxtrack.store.reader.RunStore] opens a store read-only and
answers look-ups by run (an id, a unique prefix of one, a name, or
``latest``); the ``jaxtrack`` command line is built on it. Each run is a
[`StoredRun`][jaxtrack.store.reader.StoredRun]: its ``runs`` row, with a
``running`` run whose writer is dead read as ``killed`` (its process gone,
or, where the process cannot be checked from here, its heartbeat stale: see
[`jaxtrack.store.owner`][jaxtrack.store.owner]).
A store is read while runs write into it: each read sees every report
committed before it.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import functools
import json
import math
import os
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np

from jaxtrack.store.codec import decode
from jaxtrack.store.location import artifact_file, default_store_path
from jaxtrack.store.owner import STALE_AFTER_SECS, Owner
from jaxtrack.store.schema import STEP_TABLES, VALUE_COLUMNS, connect, store_error
from jaxtrack.values import Histogram

_T = TypeVar("_T")


@dataclasses.dataclass(frozen=True)
class StoredRun:
    """One run of a [`RunStore`][jaxtrack.store.reader.RunStore], as its ``runs`` row describes it.

    Examples:
        >>> import os, tempfile
        >>> from jaxtrack.store import RunStore
        >>> from jaxtrack.trackers.local import LocalTracker
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
    """``running``, ``finished``, ``failed`` or ``killed`` (also a running run whose writer is dead)."""
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
        path: the database; default [`default_store_path`][jaxtrack.store.location.default_store_path]. A missing file is
            a ``FileNotFoundError``; a file that is not a jaxtrack store, or one SQLite finds corrupt
            while reading it, a [`StoreError`][jaxtrack.errors.StoreError] (a ``ValueError``) naming it.
            A store that may not be written (a read-only file, directory or file system) is read
            without writing anything.
        stale_after_secs: a ``running`` run whose writer cannot be checked directly
            (another host, another PID namespace) reads as ``killed`` once its
            heartbeat is older than this.

    Examples:
        >>> import os, tempfile
        >>> from jaxtrack.trackers.local import LocalTracker
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

    def __init__(
        self, path: str | os.PathLike[str] | None = None, *, stale_after_secs: float = STALE_AFTER_SECS
    ) -> None:
        self.path = os.fspath(path) if path is not None else default_store_path()
        self.stale_after_secs = stale_after_secs
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"no run store at {self.path!r} (LocalTracker creates one when a run starts)")
        self._db = connect(self.path, create=False)

    def runs(self, *, project: str | None = None) -> list[StoredRun]:
        """Every run, oldest first (only ``project``'s when given)."""
        where, args = ("WHERE project = ?", (project,)) if project is not None else ("", ())
        rows = self._db.execute(f"SELECT {_RUN_COLUMNS} FROM runs {where} ORDER BY start_time, num", args)
        return [_stored_run(row, self.stale_after_secs) for row in rows.fetchall()]

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
        for table in STEP_TABLES:
            columns = VALUE_COLUMNS[table]
            for step, key, *data in self._db.execute(
                f"SELECT step, key, {columns} FROM {table} WHERE run = ? ORDER BY step, key", (num,)
            ):
                name = names[key]
                if wanted is None or name in wanted:
                    rows.setdefault(step, {"step": step})[name] = decode(table, data)
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
            >>> from jaxtrack.store import RunStore
            >>> from jaxtrack.trackers.local import LocalTracker
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
            f"SELECT step, {VALUE_COLUMNS['histograms']} FROM histograms "
            "WHERE run = ? AND key = (SELECT id FROM keys WHERE name = ?) ORDER BY step",
            (num, key),
        ).fetchall()
        if not rows:
            self._missing_key(run_id, key, kind="histogram")
        return np.array([row[0] for row in rows], dtype=np.int64), [decode("histograms", row[1:]) for row in rows]

    def metric_stats(self, run_id: str) -> dict[str, dict[str, Any]]:
        """Per key: ``last`` value and ``last_step``, ``count``, and for scalars ``min`` and ``max`` (NaNs left out)."""
        num = self._num(run_id)
        names = self._key_names()
        stats: dict[str, dict[str, Any]] = {}
        for key, count, low, high in self._db.execute(
            "SELECT key, count(*), min(value), max(value) FROM scalars WHERE run = ? GROUP BY key", (num,)
        ):
            stats[names[key]] = {"count": count, "min": low, "max": high}
        for table in STEP_TABLES:
            for key, step, count, *data in self._db.execute(
                f"SELECT t.key, t.step, latest.count, {VALUE_COLUMNS[table]} FROM {table} AS t "
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
                    entry["last"] = decode(table, data)
        return dict(sorted(stats.items()))

    def summary(self, run_id: str) -> dict[str, Any]:
        """The run's summary values."""
        return self._resolve(run_id).summary

    def config(self, run_id: str) -> dict[str, Any]:
        """The run's hyperparameters (flat ``"a/b"`` keys, credentials redacted)."""
        return self._resolve(run_id).config

    def artifacts(self, run_id: str) -> list[dict[str, Any]]:
        """The run's artifacts: ``name``, ``version``, ``type``, ``path`` (absolute), ``time``.

        Each path is checked to lie inside the store's ``artifacts`` folder: a
        store that lists a file elsewhere (``/etc/passwd``, ``../../x``, a
        link out) is an [`UnsafePathError`][jaxtrack.errors.UnsafePathError]
        naming it, so nothing built on the reader copies it.
        """
        num = self._num(run_id)
        rows = self._db.execute(
            "SELECT name, version, type, path, time FROM artifacts WHERE run = ? ORDER BY time, name, version", (num,)
        )
        return [
            {"name": n, "version": v, "type": t, "path": artifact_file(self.path, p), "time": at}
            for n, v, t, p, at in rows
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
                value = decode(table, [value])
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
        return _stored_run(row, self.stale_after_secs)

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


def _naming_the_store(method: Callable[..., _T]) -> Callable[..., _T]:
    """``method`` of a ``RunStore``, with SQLite's errors ("database disk image is malformed") as a ``StoreError`` naming the file."""

    @functools.wraps(method)
    def read(self: RunStore, *args: Any, **kwargs: Any) -> _T:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as error:
            raise store_error(self.path, error, "reading it") from error

    return read


for _method in ("runs", "run", "keys", "history", "scalars", "histograms", "metric_stats", "summary", "config",
                "artifacts", "superseded", "select_keys"):  # fmt: skip
    setattr(RunStore, _method, _naming_the_store(getattr(RunStore, _method)))

_KINDS = {"scalars": "scalar", "texts": "text", "histograms": "histogram", "images": "image"}
_RUN_COLUMNS = "id, name, project, status, start_time, end_time, heartbeat, last_step, sessions, host, pid, git, system, config, summary"


def _stored_run(row: Sequence[Any], stale_after: float) -> StoredRun:
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
    parsed_system = json.loads(system)
    if status == "running":
        owner = Owner(host, pid, parsed_system.get("pid_namespace"), heartbeat)
        if not owner.alive(stale_after=stale_after):
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
        system=parsed_system,
        config=json.loads(config),
        summary=json.loads(summary),
    )


def _is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


__all__ = ["RunStore", "StoredRun"]
