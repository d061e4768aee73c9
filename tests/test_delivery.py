"""Faults: a backend that raises, hangs or falls behind costs only itself; the training loop keeps going.

Each backend gets its own queue and thread (:mod:`jaxtrack.delivery`). These
tests put a faulty backend next to healthy ones (a real local store, read
back with :class:`~jaxtrack.RunStore`, and a recording tracker) and check
that the healthy ones get every report, that the fault is reported (logged
once, counted, named by ``finish()``), and that the training thread neither
raises nor blocks. A hanging backend waits on an event the test releases at
teardown. Waits are bounded with generous limits that only a hang exceeds.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import logging
import sqlite3
import threading
import time
import uuid
import warnings
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import jaxtrack as jt
from jaxtrack import reporter, tracking
from jaxtrack.delivery import BackendLane, Call
from jaxtrack.reporter import Reporter
from jaxtrack.store import RunStore
from jaxtrack.trackers.local import LocalTracker
from jaxtrack.tracking import BackendError
from support.recording import RecordingTracker

WAIT = 60  # generous bound for anything that should happen promptly


def unique(prefix: str) -> str:
    """A backend name no other test uses: the reporter counts failures and drops by name, process-wide."""
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


@pytest.fixture
def hanging() -> Iterator[Any]:
    """Makes :class:`HangingTracker` s, released at teardown (and their backlog delivered)."""
    made: list[HangingTracker] = []

    def make(name: str, **attributes: Any) -> HangingTracker:
        made.append(HangingTracker(name, **attributes))
        return made[-1]

    yield make
    for tracker in made:
        tracker.release.set()
    reporter.default_reporter().flush(timeout=WAIT)


@pytest.fixture
def not_strict(monkeypatch: pytest.MonkeyPatch) -> None:
    """Strict mode is process-wide: put back what it was after the test."""
    monkeypatch.setattr(tracking, "_strict", tracking._strict)


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
    """``jt.finish(**kwargs)``, and the messages of the RuntimeWarnings it gave."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        jt.finish(**kwargs)
    return [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]


# ---- a backend that raises -------------------------------------------------------------------------


def test_a_failing_backend_is_logged_once_counted_and_the_others_get_everything(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="jaxtrack")
    failing = FailingTracker(
        unique("failing"), methods=("log", "log_summary", "log_hyperparameters", "flush", "finish")
    )
    recording = RecordingTracker(unique("recording"))
    path = tmp_path / "runs.db"
    jt.current_tracker(jt.CompositeTracker([failing, LocalTracker(path, run_id="faults"), recording]))

    sent = [{"loss": 1.0 / (step + 1), "note": f"step {step}"} for step in range(30)]
    for step, metrics in enumerate(sent):  # none of these raises on the training thread
        jt.log(metrics, step=step)
    jt.log_summary({"best_loss": 1 / 30})
    jt.log_hyperparameters({"lr": 0.1})
    assert jt.flush(timeout=WAIT)

    assert stored_history(path, "faults") == [{"step": step, **metrics} for step, metrics in enumerate(sent)]
    assert recording.logs == [(step, metrics, None) for step, metrics in enumerate(sent)]
    assert recording.summaries == [{"best_loss": 1 / 30}] and recording.hparams == [{"lr": 0.1}]

    errors = reporter.default_reporter().errors
    assert errors.counts[failing.name, "log"] == 30
    assert errors.counts[failing.name, "log_summary"] == 1
    assert errors.counts[failing.name, "log_hyperparameters"] == 1
    assert "is down" in str(errors.last[failing.name, "log"])
    # Logged once per method, however often it fails, naming the backend.
    logged = [r for r in caplog.records if r.levelno == logging.ERROR and repr(failing.name) in r.getMessage()]
    assert sorted(r.getMessage().split(" failed in ")[1].split(";")[0] for r in logged) == sorted(
        {method for name, method in errors.counts if name == failing.name}
    )
    assert all(r.exc_info is not None for r in logged)  # with the backend's traceback

    messages = finish_warnings()
    assert any(f"{failing.name}.log failed x30" in m and f"{failing.name}.finish failed x1" in m for m in messages), (
        messages
    )
    assert recording.finished == 1
    assert stored_status(path, "faults")[0] == "finished"


def test_strict_mode_raises_backend_failures_on_the_training_thread(tmp_path: Path, not_strict: None) -> None:
    failing = FailingTracker(unique("failing"), methods=("log",))
    path = tmp_path / "runs.db"
    jt.init_tracker(jt.CompositeTracker([failing, LocalTracker(path, run_id="strict")]), strict=True)

    jt.log({"loss": 0.0}, step=0)  # fails on the backend's thread, later
    with pytest.raises(BackendError, match=rf"{failing.name}.*log.*RuntimeError: {failing.name} is down"):
        jt.flush(timeout=WAIT)

    jt.log({"loss": 1.0}, step=1)  # the failure above was raised once; this one fails later
    assert reporter.default_reporter().flush(timeout=WAIT)
    with pytest.raises(BackendError, match=failing.name) as raised:
        jt.log({"loss": 2.0}, step=2)
    assert isinstance(raised.value.__cause__, RuntimeError)

    jt.log({"loss": 3.0}, step=3)
    with pytest.raises(BackendError, match=failing.name), pytest.warns(RuntimeWarning, match=rf"{failing.name}\.log"):
        jt.finish()  # says what was lost, as without strict mode, then raises
    assert tracking.current_or_none() is None  # finished nonetheless

    assert stored_status(path, "strict")[0] == "finished"
    stored = {row["step"] for row in stored_history(path, "strict")}
    assert {0, 1, 3} <= stored  # every report whose log() returned reached the local store


def test_strict_mode_still_records_the_report_whose_log_call_raised(tmp_path: Path, not_strict: None) -> None:
    failing = FailingTracker(unique("failing"), methods=("log",))
    path = tmp_path / "runs.db"
    jt.init_tracker(jt.CompositeTracker([failing, LocalTracker(path, run_id="strict-lost")]), strict=True)
    jt.log({"loss": 0.0}, step=0)
    assert reporter.default_reporter().flush(timeout=WAIT)
    with pytest.raises(BackendError):
        jt.log({"loss": 1.0}, step=1)
    with contextlib.suppress(BackendError), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        jt.finish()  # raises too once step 1 reaches the failing backend
    assert [row["step"] for row in stored_history(path, "strict-lost")] == [0, 1]


def test_strict_mode_ends_with_its_run(tmp_path: Path, not_strict: None) -> None:
    jt.init_tracker(RecordingTracker(unique("strict-run")), strict=True)
    jt.finish()

    failing = FailingTracker(unique("failing"), methods=("log",))
    jt.current_tracker(jt.CompositeTracker([failing, RecordingTracker(unique("recording"))]))
    jt.log({"loss": 0.0}, step=0)
    assert reporter.default_reporter().flush(timeout=WAIT)
    jt.log({"loss": 1.0}, step=1)  # a non-strict run: the failure is counted, not raised
    jt.flush(timeout=WAIT)
    finish_warnings()


def test_finish_reports_only_the_failures_of_its_own_run() -> None:
    name = unique("flaky")
    jt.current_tracker(jt.CompositeTracker([FailingTracker(name, methods=("log",)), RecordingTracker(unique("r"))]))
    jt.log({"loss": 1.0}, step=0)
    assert any(f"{name}.log failed x1" in m for m in finish_warnings())

    healthy = RecordingTracker(name)  # the next run: a new backend of that name, which works
    jt.current_tracker(healthy)
    jt.log({"loss": 0.5}, step=0)
    assert finish_warnings() == []


# ---- a backend that hangs --------------------------------------------------------------------------


def test_a_hanging_backend_blocks_neither_training_nor_the_other_backends(tmp_path: Path, hanging: Any) -> None:
    hung = hanging(unique("hung"))
    path = tmp_path / "runs.db"
    composite = jt.CompositeTracker([LocalTracker(path, run_id="hang"), hung])
    jt.current_tracker(composite)

    def train() -> None:
        for step in range(2000):
            jt.log({"loss": float(step)}, step=step)

    trainer = threading.Thread(target=train, name="trainer")
    trainer.start()
    trainer.join(WAIT)
    assert not trainer.is_alive(), "jt.log blocked behind the hanging backend"
    assert hung.entered.wait(WAIT)

    started = time.monotonic()
    assert not jt.flush(timeout=2)  # the hung backend cannot take it all...
    assert time.monotonic() - started < WAIT
    rep = reporter.default_reporter()
    wait_until(
        lambda: len(stored_history(path, "hang")) == 2000, "delivered to the local store"
    )  # ...the local one can
    assert stored_history(path, "hang") == [{"step": step, "loss": float(step)} for step in range(2000)]
    # The flush queued behind the last report may still be on its way to the local store's lane.
    wait_until(lambda: "local" not in rep.backlog(composite), "the local store's queue drained")
    assert rep.backlog(composite)[hung.name] > 0

    started = time.monotonic()
    messages = finish_warnings(timeout=1)
    assert time.monotonic() - started < 10, "finish() waited past its timeout for the hanging backend"
    assert any(hung.name in m and "did not finish within 1 s" in m for m in messages), messages
    assert tracking.current_or_none() is None
    wait_until(lambda: stored_status(path, "hang")[0] == "finished", "finished in the local store")


def test_train_returns_although_a_backend_hangs(tmp_path: Path, hanging: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # Short give-up times, wherever a fix reads them from: the constant and finish()'s default.
    monkeypatch.setattr(tracking, "FINISH_TIMEOUT_SECS", 1.0)
    monkeypatch.setitem(tracking.finish.__kwdefaults__, "timeout", 1.0)
    hung = hanging(unique("hung"))
    path = tmp_path / "runs.db"
    jt.current_tracker(jt.CompositeTracker([LocalTracker(path, run_id="train-hang"), hung]))

    def record(step: int, state: float) -> None:
        jt.log({"state": state}, step=step)

    trainer = threading.Thread(
        target=jt.train,
        args=(lambda state, batch: state + batch, 0.0, itertools.repeat(1.0), 5),
        kwargs={"callbacks": [record]},
        daemon=True,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        trainer.start()
        trainer.join(10)
    assert not trainer.is_alive(), "jaxtrack.train did not return: it waits for the hanging backend"
    assert [row["step"] for row in stored_history(path, "train-hang")] == [1, 2, 3, 4, 5]


def test_a_lane_counts_every_call_not_yet_made(hanging: Any) -> None:
    hung = hanging(unique("hung"))
    lane = BackendLane(hung, on_error=lambda *args: None)
    lane.put([Call("log", ({"i": i},), {"step": i}) for i in range(10)])  # taken by the thread in one batch
    assert hung.entered.wait(WAIT)
    assert lane.pending == 10  # one running, nine waiting behind it
    hung.release.set()
    assert lane.wait(WAIT)


def test_drop_oldest_bounds_a_hanging_backend_and_counts_what_it_drops(
    tmp_path: Path, hanging: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="jaxtrack")
    hung = hanging(unique("remote"), when_full="drop_oldest", max_pending=50)
    path = tmp_path / "runs.db"
    composite = jt.CompositeTracker([LocalTracker(path, run_id="drop"), hung])
    jt.current_tracker(composite)
    rep = reporter.default_reporter()

    most_pending = 0
    for step in range(500):
        jt.log({"loss": float(step)}, step=step)  # never blocks: the hung backend drops instead
        most_pending = max(most_pending, rep.backlog(composite).get(hung.name, 0))
    wait_until(lambda: rep.errors.dropped.get(hung.name, 0) > 0, "dropping")
    wait_until(lambda: len(stored_history(path, "drop")) == 500, "delivered to the local store")
    most_pending = max(most_pending, rep.backlog(composite).get(hung.name, 0))
    # The lane's bound: max_pending queued, plus the batch its thread took (at most as many again).
    assert most_pending <= 2 * 50

    hung.release.set()
    assert jt.flush(timeout=WAIT)
    dropped = rep.errors.dropped[hung.name]
    received = [step for step, _, _ in hung.logs]
    assert len(received) + dropped == 500  # every report was delivered or counted as dropped
    assert received == sorted(received)
    kept = 50 - hung.flushed  # the newest are kept, the oldest dropped (flush calls take room too, never dropped)
    assert received[-kept:] == list(range(500 - kept, 500))
    falling_behind = [r for r in caplog.records if "falling behind" in r.getMessage()]
    assert len(falling_behind) == 1 and hung.name in falling_behind[0].getMessage()

    messages = finish_warnings()
    assert any(f"{hung.name}: {dropped} report(s) dropped" in m for m in messages), messages
    assert stored_history(path, "drop") == [{"step": step, "loss": float(step)} for step in range(500)]
    assert stored_status(path, "drop")[0] == "finished"


def test_block_policy_never_drops_from_a_slow_backend(tmp_path: Path) -> None:
    slow = SlowTracker(unique("slow"))
    slow.max_pending = 4
    jt.current_tracker(slow)
    rep = reporter.default_reporter()

    most_pending = 0
    for step in range(300):
        jt.log({"i": step}, step=step)
        most_pending = max(most_pending, rep.backlog(slow).get(slow.name, 0))
    assert jt.flush(timeout=WAIT)

    assert slow.logs == [(step, {"i": step}, None) for step in range(300)]
    assert slow.name not in rep.errors.dropped
    assert most_pending <= 2 * 4  # max_pending queued, plus the batch being made
    assert finish_warnings() == []


def test_the_remote_backend_drops_and_the_local_ones_block() -> None:
    from jaxtrack.trackers.tensorboard import TensorboardTracker
    from jaxtrack.trackers.wandb import WandbTracker

    assert WandbTracker.when_full == "drop_oldest"
    assert LocalTracker.when_full == "block"
    assert TensorboardTracker.when_full == "block"
    assert jt.Tracker.when_full == "block" and RecordingTracker.when_full == "block"  # a user's backend
    assert BackendLane(RecordingTracker(), on_error=print).capacity == jt.Tracker.max_pending == 10_000


def test_a_backend_with_an_unknown_policy_is_refused_by_name() -> None:
    tracker = RecordingTracker(unique("odd"))
    tracker.when_full = "drop-newest"
    with pytest.raises(ValueError, match=rf"{tracker.name}.*when_full.*'drop-newest'"):
        BackendLane(tracker, on_error=print)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_backend_with_an_invalid_policy_does_not_stop_the_others() -> None:
    rep = Reporter()
    odd = RecordingTracker(unique("odd"))
    odd.when_full = "drop-newest"
    good = RecordingTracker(unique("good"))
    try:
        rep.submit(jt.CompositeTracker([odd, good]), "log", {"loss": 1.0}, step=0)
        rep.submit(good, "log", {"loss": 2.0}, step=1)
        assert rep.flush(timeout=10)
        assert [step for step, _, _ in good.logs] == [0, 1]
        assert (odd.name, "log") in rep.errors.counts
    finally:
        rep.close(timeout=1)


# ---- lanes end with their backends -----------------------------------------------------------------


def test_lanes_retire_after_finish_so_many_runs_leak_no_threads() -> None:
    names: list[str] = []
    finished: list[weakref.ref[RecordingTracker]] = []
    for run in range(10):
        backends = [RecordingTracker(unique(f"run{run}-a")), RecordingTracker(unique(f"run{run}-b"))]
        names += [backend.name for backend in backends]
        jt.current_tracker(jt.CompositeTracker(backends))
        for step in range(5):
            jt.log({"loss": float(step)}, step=step)
        assert finish_warnings() == []
        assert all(backend.finished == 1 and len(backend.logs) == 5 for backend in backends)
        finished += [weakref.ref(backend) for backend in backends]
        del backends

    lane_threads = {f"jaxtrack-{name}" for name in names}
    for thread in threading.enumerate():
        if thread.name in lane_threads:
            thread.join(WAIT)
            assert not thread.is_alive(), f"{thread.name} is still running after its backend finished"
    assert not [t.name for t in threading.enumerate() if t.name in lane_threads]
    # A later delivery lets go of the finished backends: the runs before the last are not kept alive.
    gc.collect()
    assert [ref() for ref in itertools.islice(finished, 10)] == [None] * 10
