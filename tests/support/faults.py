"""Faulty backends and what a run recorded, for the tests of failures, hangs and slow backends."""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jaxtrack as jt
from jaxtrack import pipeline
from jaxtrack.store import RunStore
from support.recording import RecordingTracker

WAIT = 60  # generous bound for anything that should happen promptly


def unique(prefix: str) -> str:
    """A backend name no other test uses: failures and losses are counted by name, process-wide."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class FailingTracker(RecordingTracker):
    """A backend whose calls of ``methods`` raise ``RuntimeError`` (every call, every method by default)."""

    def __init__(self, name: str, methods: tuple[str, ...] = ("log", "log_summary", "log_hyperparameters", "flush")):
        super().__init__(name)
        self.failing = methods

    def _fail(self, method: str) -> None:
        if method in self.failing:
            raise RuntimeError(f"{self.name} is down")

    def log(self, metrics, *, step=None, commit=None):
        self._fail("log")
        super().log(metrics, step=step, commit=commit)

    def log_summary(self, metrics):
        self._fail("log_summary")
        super().log_summary(metrics)

    def log_hyperparameters(self, hparams):
        self._fail("log_hyperparameters")
        super().log_hyperparameters(hparams)

    def flush(self):
        self._fail("flush")
        super().flush()

    def finish(self):
        self._fail("finish")
        super().finish()


class HangingTracker(RecordingTracker):
    """A backend that hangs in every call until ``release`` is set (the test's teardown sets it)."""

    def __init__(self, name: str, **attributes: Any) -> None:
        super().__init__(name)
        self.__dict__.update(attributes)  # when_full, max_pending
        self.entered = threading.Event()
        self.release = threading.Event()

    def _hang(self) -> None:
        self.entered.set()
        self.release.wait(600)

    def log(self, metrics, *, step=None, commit=None):
        self._hang()
        super().log(metrics, step=step, commit=commit)

    def flush(self):
        self._hang()
        super().flush()

    def finish(self):
        self._hang()
        super().finish()


class SlowTracker(RecordingTracker):
    """A backend that is slow (never stuck): each ``log`` takes a couple of milliseconds."""

    def log(self, metrics, *, step=None, commit=None):
        time.sleep(0.002)
        super().log(metrics, step=step, commit=commit)


def hanging_trackers() -> Iterator[Any]:
    """Fixture body: makes :class:`HangingTracker` s, released at teardown (and their backlog delivered)."""
    made: list[HangingTracker] = []

    def make(name: str, **attributes: Any) -> HangingTracker:
        made.append(HangingTracker(name, **attributes))
        return made[-1]

    yield make
    for tracker in made:
        tracker.release.set()
    pipeline.flush(timeout=WAIT)


def stored_history(path: Path, run_id: str) -> list[dict[str, Any]]:
    with RunStore(path) as store:
        return store.history(run_id)


def stored_status(path: Path, run_id: str) -> tuple[str, float | None]:
    """The run's status and end time as written (``RunStore`` derives ``killed`` for a dead process)."""
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT status, end_time FROM runs WHERE id = ?", (run_id,)).fetchone()
    finally:
        db.close()


def wait_until(condition: Any, what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"still not {what} after {timeout} s"
        time.sleep(0.01)


def finish_warnings(**kwargs: Any) -> list[str]:
    """``jt.finish(**kwargs)``, and the messages of the RuntimeWarnings (DataLossWarning) it gave."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        jt.finish(**kwargs)
    return [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]


__all__ = [
    "WAIT",
    "FailingTracker",
    "HangingTracker",
    "SlowTracker",
    "finish_warnings",
    "hanging_trackers",
    "stored_history",
    "stored_status",
    "unique",
    "wait_until",
]
