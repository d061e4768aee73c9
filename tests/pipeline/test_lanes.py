"""Faults: a backend that raises, hangs or falls behind costs only itself; the training loop keeps going.

Each backend gets its own queue and thread (:mod:`jaxtrack.pipeline.lanes`). These
tests put a faulty backend next to healthy ones (a real local store, read
back with :class:`~jaxtrack.RunStore`, and a recording tracker) and check
that the healthy ones get every report, that the fault is reported (logged
once, counted, named by ``finish()``), and that the training thread neither
raises nor blocks. A hanging backend waits on an event the test releases at
teardown. Waits are bounded with generous limits that only a hang exceeds.
"""

from __future__ import annotations

import gc
import itertools
import logging
import os
import threading
import time
import warnings
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import jaxtrack as jt
from jaxtrack import pipeline, run
from jaxtrack.pipeline.calls import Delivery
from jaxtrack.pipeline.health import Health
from jaxtrack.pipeline.lanes import Lane
from jaxtrack.trackers.local import LocalTracker
from support.faults import (
    WAIT,
    FailingTracker,
    SlowTracker,
    finish_warnings,
    hanging_trackers,
    stored_history,
    stored_status,
    unique,
    wait_until,
)
from support.recording import RecordingTracker


@pytest.fixture
def hanging() -> Iterator[Any]:
    yield from hanging_trackers()


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

    health = pipeline.default_dispatcher().health
    assert health.counts[failing.name, "log"] == 30
    assert health.counts[failing.name, "log_summary"] == 1
    assert health.counts[failing.name, "log_hyperparameters"] == 1
    assert "is down" in str(health.peek(failing).last_error)
    # Logged once per method, however often it fails, naming the backend.
    logged = [r for r in caplog.records if r.levelno == logging.ERROR and repr(failing.name) in r.getMessage()]
    assert sorted(r.getMessage().split(" failed in ")[1].split(" ")[0].split(";")[0] for r in logged) == sorted(
        {method for name, method in health.counts if name == failing.name}
    )
    assert all(r.exc_info is not None for r in logged)  # with the backend's traceback

    messages = finish_warnings()
    assert any(f"{failing.name}.log failed x30" in m and f"{failing.name}.finish failed x1" in m for m in messages), (
        messages
    )
    assert recording.finished == 1
    assert stored_status(path, "faults")[0] == "finished"


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
    rep = pipeline.default_dispatcher()
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
    assert run.current() is None
    wait_until(lambda: stored_status(path, "hang")[0] == "finished", "finished in the local store")


def test_train_returns_although_a_backend_hangs(tmp_path: Path, hanging: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # A short give-up time: read when a run ends.
    monkeypatch.setattr(run, "FINISH_TIMEOUT_SECS", 1.0)
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
    lane = Lane(hung, health=Health(), implementation=hung._implementation)
    for i in range(10):
        lane.put(Delivery("log", ({"i": i},), {"step": i}, step=i))
    assert hung.entered.wait(WAIT)
    assert lane.calls == 10  # one running, nine waiting behind it
    hung.release.set()
    assert lane.wait_idle(WAIT)
    assert [step for step, _, _ in hung.logs] == list(range(10))


def test_drop_oldest_bounds_a_hanging_backend_and_counts_what_it_drops(
    tmp_path: Path, hanging: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="jaxtrack")
    hung = hanging(unique("remote"), when_full="drop_oldest", max_pending=50)
    path = tmp_path / "runs.db"
    composite = jt.CompositeTracker([LocalTracker(path, run_id="drop"), hung])
    jt.current_tracker(composite)
    rep = pipeline.default_dispatcher()

    lane = rep.lane(hung)
    most_queued = 0
    for step in range(500):
        jt.log({"loss": float(step)}, step=step)  # never blocks: the hung backend drops instead
        most_queued = max(most_queued, lane.queued)
    wait_until(lambda: rep.health.counts.get((hung.name, "behind"), 0) > 0, "dropping")
    wait_until(lambda: len(stored_history(path, "drop")) == 500, "delivered to the local store")
    most_queued = max(most_queued, lane.queued)
    assert most_queued <= 50  # the lane's bound: max_pending queued (the batch its thread took aside)

    hung.release.set()
    assert jt.flush(timeout=WAIT)
    dropped = rep.health.counts[hung.name, "behind"]
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
    rep = pipeline.default_dispatcher()

    most_pending = 0
    for step in range(300):
        jt.log({"i": step}, step=step)
        most_pending = max(most_pending, rep.backlog(slow).get(slow.name, 0))
    assert jt.flush(timeout=WAIT)

    assert slow.logs == [(step, {"i": step}, None) for step in range(300)]
    assert not [key for key in rep.health.counts if key[0] == slow.name]
    assert most_pending <= 4 + 1  # max_pending, plus the call that found room (each log waits for room at the call)
    assert finish_warnings() == []


def test_the_remote_backend_drops_and_the_local_ones_block() -> None:
    from jaxtrack.trackers.tensorboard import TensorboardTracker
    from jaxtrack.trackers.wandb import WandbTracker

    assert WandbTracker.when_full == "drop_oldest"
    assert LocalTracker.when_full == "block"
    assert TensorboardTracker.when_full == "block"
    assert jt.Tracker.when_full == "block" and RecordingTracker.when_full == "block"  # a user's backend
    tracker = RecordingTracker()
    assert Lane(tracker, health=Health(), implementation=tracker._implementation).max_calls == 10_000
    assert jt.Tracker.max_pending == 10_000 and jt.Tracker.max_pending_bytes == 256 * 2**20


def test_a_backend_with_an_unknown_policy_is_refused_by_name() -> None:
    tracker = RecordingTracker(unique("odd"))
    tracker.when_full = "drop-newest"
    with pytest.raises(ValueError, match=rf"{tracker.name}.*when_full.*'drop-newest'"):
        Lane(tracker, health=Health(), implementation=tracker._implementation)
    with pytest.raises(ValueError, match=rf"{tracker.name}.*when_full.*'drop-newest'"):
        jt.current_tracker(tracker)  # refused before the run starts
    with pytest.raises(ValueError, match=rf"{tracker.name}.*when_full.*'drop-newest'"):
        tracker.log({"loss": 1.0}, step=0)  # and at the call, never a report lost later


# ---- lanes end with their backends -----------------------------------------------------------------


def test_lanes_retire_after_finish_so_many_runs_leak_no_threads() -> None:
    names: list[str] = []
    finished: list[weakref.ref[RecordingTracker]] = []
    for number in range(10):
        backends = [RecordingTracker(unique(f"run{number}-a")), RecordingTracker(unique(f"run{number}-b"))]
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


# ---- any exception stays with its backend -----------------------------------------------------------


class Exiting(jt.NoopTracker):
    """Raises ``raised`` from ``log`` at every step ending in 3, records the other steps."""

    def __init__(self, name: str, raised: type[BaseException]) -> None:
        self.name = name
        self.raised = raised
        self.steps: list[int] = []

    def log(self, metrics, *, step=None, commit=None):
        if step % 10 == 3:
            raise self.raised(f"{self.name} gives up at {step}")
        self.steps.append(step)


class GoneAway(BaseException):
    """A BaseException that is none of Python's own."""


@pytest.mark.parametrize("raised", [SystemExit, KeyboardInterrupt, GoneAway])
def test_a_backend_raising_any_base_exception_is_counted_and_its_lane_keeps_serving(
    tmp_path: Path, raised: type[BaseException]
) -> None:
    """Case 5: a ``SystemExit`` on the backend's thread ended its lane silently; training then hung."""
    exiting = Exiting(unique("exiting"), raised)
    exiting.max_pending = 5  # a lane that stopped would fill this at once, and block the loop
    path = tmp_path / "runs.db"
    jt.current_tracker(jt.CompositeTracker([LocalTracker(path, run_id="exits"), exiting]))

    def train() -> None:
        for step in range(200):
            jt.log({"i": step}, step=step)

    trainer = threading.Thread(target=train)
    trainer.start()
    trainer.join(WAIT)
    assert not trainer.is_alive(), "training hung behind the backend that raised"
    messages = finish_warnings()
    assert exiting.steps == [step for step in range(200) if step % 10 != 3]  # its lane went on serving
    assert any(f"{exiting.name}.log failed x20" in m for m in messages), messages
    assert [row["step"] for row in stored_history(path, "exits")] == list(range(200))


# ---- memory bounded in bytes --------------------------------------------------------------------------


def _resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class SlowArrays(jt.NoopTracker):
    """Takes 5 ms a report; receives arrays as they are (``histogram_bins = None``) or as histograms."""

    def __init__(self, name: str, histogram_bins: int | None) -> None:
        self.name = name
        self.histogram_bins = histogram_bins
        self.sizes: list[int] = []

    def log(self, metrics, *, step=None, commit=None):
        time.sleep(0.005)
        value = metrics["w"]
        self.sizes.append(value.size if isinstance(value, np.ndarray) else int(value.num))


@pytest.fixture
def small_dispatcher_bound() -> Iterator[None]:
    pipeline.configure(max_queued_bytes=16 * 2**20)
    yield
    pipeline.configure(max_queued_bytes=pipeline.DEFAULT_MAX_QUEUED_BYTES)


@pytest.mark.parametrize("bins", [64, None], ids=["histograms", "raw-arrays"])
def test_memory_held_for_a_slow_backend_is_bounded_in_bytes(small_dispatcher_bound: None, bins: int | None) -> None:
    """Case 8: a 1e6-element array logged every step into a slow backend grew memory ~4 MB a step."""
    slow = SlowArrays(unique("slow"), bins)
    slow.max_pending_bytes = 16 * 2**20  # the lane's bound in bytes (arrays it receives as they are)
    jt.current_tracker(slow)
    steps, size = 300, 10**6
    start = peak = _resident_bytes()
    for step in range(steps):
        jt.log({"w": np.full(size, float(step), np.float32)}, step=step)  # 4 MB a step: 1.2 GB if nothing bounds it
        peak = max(peak, _resident_bytes())
    assert jt.flush(timeout=WAIT)
    assert finish_warnings() == []
    assert slow.sizes == [size] * steps  # every report arrived: bounded by waiting, not by dropping
    # What waits: at most the dispatcher's 16 MiB of arrays and the lane's 16 MiB, plus a few in hand.
    assert peak - start < 200 * 2**20, f"resident memory grew by {(peak - start) / 2**20:.0f} MiB"
