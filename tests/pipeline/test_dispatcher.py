"""The dispatcher: one order for every call, batching, flushing, room, failures, prepared calls."""

from __future__ import annotations

import logging
import threading
import time
import warnings

import jax.numpy as jnp
import numpy as np
import pytest

import jaxtrack
import jaxtrack as jt
from jaxtrack.pipeline.calls import Call
from jaxtrack.pipeline.dispatcher import Dispatcher
from support.recording import RecordingTracker

WAIT = 60  # generous bound for anything that should happen promptly


class BatchRecordingDispatcher(Dispatcher):
    """A dispatcher that notes how many calls each delivery took at once."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.batches: list[int] = []

    def _deliver(self, batch):
        if batch:
            self.batches.append(len(batch))
        super()._deliver(batch)

    def log(self, tracker, metrics, *, step=None, **kwargs):
        return self.submit(tracker, Call("log", metrics, step=step), **kwargs)

    def wait_for_all(self, timeout=WAIT):
        return self.flush(time.monotonic() + timeout)


class BlockingTracker(RecordingTracker):
    """Blocks in its first ``log`` until released, so that work piles up behind it."""

    def __init__(self, name="blocking"):
        super().__init__(name)
        self.entered = threading.Event()
        self.release = threading.Event()

    def log(self, metrics, *, step=None, commit=None):
        if not self.entered.is_set():
            self.entered.set()
            assert self.release.wait(WAIT)
        super().log(metrics, step=step, commit=commit)


@pytest.fixture
def dispatcher():
    made = []

    def make(**kwargs):
        made.append(BatchRecordingDispatcher(**kwargs))
        return made[-1]

    yield make
    for each in made:
        each.wait_for_all()


def test_rejects_an_empty_queue_bound():
    with pytest.raises(ValueError, match="max_calls"):
        Dispatcher(max_calls=0)
    with pytest.raises(ValueError, match="max_bytes"):
        Dispatcher(max_bytes=0)


def test_order_is_kept_per_thread_across_many_submitters(dispatcher):
    rep = dispatcher()
    seen: list[tuple[str, int]] = []
    threads_seen = set()

    class Recorder(RecordingTracker):
        def log(self, metrics, *, step=None, commit=None):
            threads_seen.add(threading.current_thread().name)
            seen.append((metrics["who"], step))

    tracker = Recorder()
    count, per_thread = 4, 300
    start = threading.Barrier(count)

    def submit_all(who):
        start.wait(WAIT)
        for i in range(per_thread):
            rep.log(tracker, {"who": who}, step=i)

    workers = [threading.Thread(target=submit_all, args=(f"t{n}",)) for n in range(count)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(WAIT)
    assert rep.wait_for_all()
    assert len(seen) == count * per_thread
    for n in range(count):
        assert [step for who, step in seen if who == f"t{n}"] == list(range(per_thread))
    assert threads_seen == {f"jaxtrack-{tracker.name}"}  # one thread, the backend's own, calls it: in order


def test_calls_of_one_thread_arrive_in_submission_order_across_methods(dispatcher):
    rep = dispatcher()
    tracker = RecordingTracker()
    for i in range(50):
        rep.log(tracker, {"i": jnp.asarray(i) if i % 3 else i}, step=i)
        if i % 10 == 9:
            rep.submit(tracker, Call("log_summary", {"upto": i}))
    rep.submit(tracker, Call("finish"))
    assert rep.wait_for_all()
    assert [s for s, _, _ in tracker.logs] == list(range(50))
    assert [int(m["i"]) for _, m, _ in tracker.logs] == list(range(50))
    assert tracker.summaries == [{"upto": i} for i in (9, 19, 29, 39, 49)]
    assert tracker.finished == 1


def test_work_piled_up_behind_a_slow_tracker_is_delivered_in_one_batch(dispatcher):
    rep = dispatcher()  # default linger and queue bound
    tracker = BlockingTracker()
    rep.log(tracker, {"i": 0}, step=0)
    assert tracker.entered.wait(WAIT)
    for i in range(1, 51):
        rep.log(tracker, {"i": jnp.float32(i)}, step=i)
    assert rep.pending == 51
    assert rep.wait_for_all(timeout=0.2) is False  # the tracker is still blocked
    assert tracker.logs == []
    tracker.release.set()
    assert rep.wait_for_all() is True
    # flush returned only once everything was delivered:
    assert [s for s, _, _ in tracker.logs] == list(range(51))
    assert rep.pending == 0
    assert rep.batches == [1, 50]


def test_flush_waits_for_delivery_and_wait_true_waits_for_the_call(dispatcher):
    rep = dispatcher(linger_secs=5.0)  # a long linger: flush and wait=True must cut it short
    tracker = RecordingTracker()
    for i in range(5):
        rep.log(tracker, {"i": i}, step=i)
    assert rep.wait_for_all()
    assert len(tracker.logs) == 5
    rep.submit(tracker, Call("log_summary", {"done": 1}), wait=True)
    assert tracker.summaries == [{"done": 1}]


def test_a_full_block_lane_makes_the_submitter_wait_until_there_is_room(dispatcher):
    # A "block" backend max_pending calls behind makes the next log wait at the call: nothing is
    # dropped, memory is bounded, and the dispatcher itself never waits for a backend.
    rep = dispatcher(linger_secs=0)
    tracker = BlockingTracker()
    tracker.max_pending = 2
    other = RecordingTracker("other")
    rep.log(tracker, {"i": 0}, step=0)
    assert tracker.entered.wait(WAIT)
    count = 20
    submitted = threading.Event()

    def submit_the_rest():
        for i in range(1, count):
            rep.log(tracker, {"i": i}, step=i)
        submitted.set()

    blocked = threading.Thread(target=submit_the_rest)
    blocked.start()
    assert not submitted.wait(0.5)  # still waiting for room
    assert rep.pending <= 1 + 2 + 1  # the running call, a full lane, and the call just routed past the bound
    rep.log(other, {"i": 0}, step=0)  # another backend is not held up
    assert rep.wait_for_all(timeout=0.5) is False and other.logs == [(0, {"i": 0}, None)]

    # A caller the device waits on (a host callback) queues past the bound instead.
    unblocked = threading.Event()
    urgent = threading.Thread(target=lambda: (rep.log(tracker, {"i": count}, step=count, room=False), unblocked.set()))
    urgent.start()
    assert unblocked.wait(WAIT)
    assert not submitted.is_set()

    tracker.release.set()
    assert submitted.wait(WAIT)
    blocked.join(WAIT)
    urgent.join(WAIT)
    assert rep.wait_for_all()
    assert sorted(s for s, _, _ in tracker.logs) == list(range(count + 1))
    assert [s for s, _, _ in tracker.logs if s < count] == list(range(count))  # each submitter's order kept


def test_a_full_queue_makes_the_submitter_wait_for_the_dispatcher(dispatcher):
    rep = dispatcher(max_calls=4, linger_secs=0)
    tracker = RecordingTracker()
    hold = threading.Event()
    entered = threading.Event()

    def held(values):  # the dispatcher's thread stops in a prepare hook until released
        entered.set()
        assert hold.wait(WAIT)
        return values

    rep.submit(tracker, Call("log", {"i": 0}, step=0, prepare=held))
    assert entered.wait(WAIT)
    done = threading.Event()

    def fill():
        for i in range(1, 12):
            rep.log(tracker, {"i": i}, step=i)
        done.set()

    thread = threading.Thread(target=fill)
    thread.start()
    assert not done.wait(0.5)  # the queue holds at most max_calls
    assert len(rep._queue) <= 4
    hold.set()
    assert done.wait(WAIT)
    thread.join(WAIT)
    assert rep.wait_for_all()
    assert [s for s, _, _ in tracker.logs] == list(range(12))


def test_a_failing_tracker_is_logged_once_counted_and_does_not_stop_the_others(dispatcher, caplog):
    rep = dispatcher()

    class Failing(RecordingTracker):
        def log(self, metrics, *, step=None, commit=None):
            raise OSError(f"backend down at {step}")

    failing, healthy = Failing("failing"), RecordingTracker("healthy")
    with caplog.at_level(logging.ERROR, logger="jaxtrack"):
        for step in range(3):
            rep.log(failing, {"loss": 1.0}, step=step)
            rep.log(healthy, {"loss": float(step)}, step=step)
        rep.submit(failing, Call("log_summary", {"best": 0.5}))  # its other methods still work
        assert rep.wait_for_all()
    assert [(s, m) for s, m, _ in healthy.logs] == [(0, {"loss": 0.0}), (1, {"loss": 1.0}), (2, {"loss": 2.0})]
    assert failing.summaries == [{"best": 0.5}]
    assert rep.health.counts == {("failing", "log"): 3}
    health = rep.health.take(failing)
    assert health.failures == {"log": 3} and isinstance(health.last_error, OSError)
    assert "backend down at 2" in str(health.last_error)
    assert health.describe() == "failing.log failed x3 at steps 0-2 (last error: OSError: backend down at 2)"
    reports = [r for r in caplog.records if r.name == "jaxtrack" and "'failing'" in r.getMessage()]
    assert len(reports) == 1 and "at step 0" in reports[0].getMessage()
    assert reports[0].exc_info is not None


def test_prepare_gets_the_payload_on_the_host(dispatcher):
    rep = dispatcher()
    tracker = RecordingTracker()
    received = []

    def prepare(payload):
        values, scale = payload
        received.append((type(values), type(scale)))
        return {"doubled": values * 2, "scaled": values * scale}

    rep.submit(tracker, Call("log", (jnp.arange(3.0), jnp.float32(10.0)), step=7, prepare=prepare, owned=True))
    assert rep.wait_for_all()
    assert received == [(np.ndarray, np.ndarray)]
    [(step, metrics, _)] = tracker.logs
    assert step == 7
    np.testing.assert_array_equal(metrics["doubled"], [0.0, 2.0, 4.0])
    np.testing.assert_array_equal(metrics["scaled"], [0.0, 10.0, 20.0])


def test_metric_keys_reach_the_tracker_in_the_order_they_were_given(dispatcher):
    # Whether or not a report holds JAX arrays (or shares its batch with one that does).
    rep = dispatcher()
    tracker = BlockingTracker()
    rep.log(tracker, {"first": 0.0}, step=0)
    assert tracker.entered.wait(WAIT)
    rep.log(tracker, {"zeta": 1.0, "alpha": 2.0}, step=1)
    rep.log(tracker, jt.flatten({"zeta": jnp.float32(1.0), "alpha": 2.0, "mid": {"b": 1, "a": 2}}), step=2)
    tracker.release.set()
    assert rep.wait_for_all()
    assert [list(m) for _, m, _ in tracker.logs] == [["first"], ["zeta", "alpha"], ["zeta", "alpha", "mid/b", "mid/a"]]


def test_a_tracker_that_logs_from_inside_its_log_does_not_deadlock():
    class Echoing(RecordingTracker):
        def log(self, metrics, *, step=None, commit=None):
            super().log(metrics, step=step, commit=commit)
            if "echo" not in metrics:
                jt.log({"echo": metrics["x"]}, step=step)  # on its own thread: a plain call to itself

    tracker = Echoing()
    with jt.current_tracker(tracker):
        for step in range(3):
            jt.log({"x": jnp.float32(step)}, step=step)
        assert jt.flush(timeout=WAIT)
    assert [(s, list(m)) for s, m, _ in tracker.logs] == [
        (0, ["x"]),
        (0, ["echo"]),
        (1, ["x"]),
        (1, ["echo"]),
        (2, ["x"]),
        (2, ["echo"]),
    ]
    assert [float(m.get("x", m.get("echo"))) for _, m, _ in tracker.logs] == [0.0, 0.0, 1.0, 1.0, 2.0, 2.0]


def test_a_tracker_that_flushes_from_inside_its_log_does_not_wait_for_itself(dispatcher):
    rep = dispatcher(linger_secs=0)
    flushed = []

    class Flushing(RecordingTracker):
        def log(self, metrics, *, step=None, commit=None):
            super().log(metrics, step=step, commit=commit)
            flushed.append(jt.flush())  # on its own thread: it cannot wait for itself, and does not

    tracker = Flushing()
    rep.log(tracker, {"x": 1.0}, step=0)
    assert rep.wait_for_all()
    assert flushed == [True]


def test_a_backend_that_waits_for_itself_from_its_own_thread_does_not_deadlock(monkeypatch):
    # A backend whose log flushes a composite it belongs to would wait for its own lane: it must not
    # (with a 2 s finish timeout, a wait would end in a "waited" DataLossWarning counted as its failure).
    monkeypatch.setattr(jaxtrack.run, "FINISH_TIMEOUT_SECS", 2.0)

    class Member(RecordingTracker):
        composite: jt.CompositeTracker | None = None

        def log(self, metrics, *, step=None, commit=None):
            super().log(metrics, step=step, commit=commit)
            if step == 1 and self.composite is not None:
                with warnings.catch_warnings():
                    warnings.simplefilter("error", jt.DataLossWarning)
                    self.composite.flush()  # queued behind this call, not waited for

    member, other = Member("member"), RecordingTracker("other")
    both = jt.CompositeTracker([member, other])
    member.composite = both
    with jt.current_tracker(both):
        for step in range(3):
            jt.log({"x": float(step)}, step=step)
        assert jt.flush(timeout=WAIT)
    with warnings.catch_warnings():
        warnings.simplefilter("error", jt.DataLossWarning)  # the member's flush did not fail
        both.finish()
    assert [s for s, _, _ in member.logs] == [0, 1, 2] and [s for s, _, _ in other.logs] == [0, 1, 2]
    assert member.flushed >= 1 and other.flushed >= 1
