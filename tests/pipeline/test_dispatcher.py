"""The background reporter: order, batching, flushing, back-pressure, failures, and exit."""

from __future__ import annotations

import logging
import pathlib
import subprocess
import sys
import threading

import jax.numpy as jnp
import numpy as np
import pytest

import jaxtrack as jt
from jaxtrack.reporter import Reporter
from support.recording import RecordingTracker

WAIT = 60  # generous bound for anything that should happen promptly


class BatchRecordingReporter(Reporter):
    """A reporter that notes how many tasks each delivery took at once."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.batches: list[int] = []

    def _deliver(self, batch):
        self.batches.append(len(batch))
        super()._deliver(batch)


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
def reporter():
    made = []

    def make(**kwargs):
        made.append(BatchRecordingReporter(**kwargs))
        return made[-1]

    yield make
    for each in made:
        each.close(timeout=WAIT)


def test_rejects_an_empty_queue_bound():
    with pytest.raises(ValueError, match="max_pending"):
        Reporter(max_pending=0)


def test_order_is_kept_per_thread_across_many_submitters(reporter):
    rep = reporter()
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
            rep.submit(tracker, "log", {"who": who}, step=i)

    workers = [threading.Thread(target=submit_all, args=(f"t{n}",)) for n in range(count)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(WAIT)
    assert rep.flush(timeout=WAIT)
    assert len(seen) == count * per_thread
    for n in range(count):
        assert [step for who, step in seen if who == f"t{n}"] == list(range(per_thread))
    assert threads_seen == {f"jaxtrack-{tracker.name}"}  # one thread, the backend's own, calls it: in order


def test_calls_of_one_thread_arrive_in_submission_order_across_methods(reporter):
    rep = reporter()
    tracker = RecordingTracker()
    for i in range(50):
        rep.submit(tracker, "log", {"i": jnp.asarray(i) if i % 3 else i}, step=i)
        if i % 10 == 9:
            rep.submit(tracker, "log_summary", {"upto": i})
    rep.submit(tracker, "finish")
    assert rep.flush(timeout=WAIT)
    assert [s for s, _, _ in tracker.logs] == list(range(50))
    assert [int(m["i"]) for _, m, _ in tracker.logs] == list(range(50))
    assert tracker.summaries == [{"upto": i} for i in (9, 19, 29, 39, 49)]
    assert tracker.finished == 1


def test_work_piled_up_behind_a_slow_tracker_is_delivered_in_one_batch(reporter):
    rep = reporter()  # default linger and queue bound
    tracker = BlockingTracker()
    rep.submit(tracker, "log", {"i": 0}, step=0)
    assert tracker.entered.wait(WAIT)
    for i in range(1, 51):
        rep.submit(tracker, "log", {"i": jnp.float32(i)}, step=i)
    assert rep.pending == 51
    assert rep.flush(timeout=0.2) is False  # the tracker is still blocked
    assert tracker.logs == []
    tracker.release.set()
    assert rep.flush(timeout=WAIT) is True
    # flush returned only once everything was delivered:
    assert [s for s, _, _ in tracker.logs] == list(range(51))
    assert rep.pending == 0
    assert rep.batches == [1, 50]


def test_flush_waits_for_delivery_and_wait_true_waits_for_the_call(reporter):
    rep = reporter(linger_secs=5.0)  # a long linger: flush and wait=True must cut it short
    tracker = RecordingTracker()
    for i in range(5):
        rep.submit(tracker, "log", {"i": i}, step=i)
    assert rep.flush(timeout=WAIT)
    assert len(tracker.logs) == 5
    rep.submit(tracker, "log_summary", {"done": 1}, wait=True)
    assert tracker.summaries == [{"done": 1}]


def test_a_full_queue_blocks_the_submitter_until_there_is_room(reporter):
    # A "block" backend that is max_pending calls behind holds up the reporter, whose
    # own queue then fills, and the submitter waits: nothing is dropped, memory is bounded.
    rep = reporter(max_pending=3, linger_secs=0)
    tracker = BlockingTracker()
    tracker.max_pending = 1
    rep.submit(tracker, "log", {"i": 0}, step=0)
    assert tracker.entered.wait(WAIT)
    count = 20
    submitted = threading.Event()

    def submit_the_rest():
        for i in range(1, count):
            rep.submit(tracker, "log", {"i": i}, step=i)
        submitted.set()

    blocked = threading.Thread(target=submit_the_rest)
    blocked.start()
    assert not submitted.wait(0.5)  # still waiting for room
    # At most: the running call, a full lane, the batch the reporter holds, a full queue.
    assert rep.pending <= 1 + 1 + 3 + 3

    # A caller the device waits on (a host callback) queues past the bound instead.
    unblocked = threading.Event()
    urgent = threading.Thread(
        target=lambda: (rep.submit(tracker, "log", {"i": count}, step=count, may_block=False), unblocked.set())
    )
    urgent.start()
    assert unblocked.wait(WAIT)
    assert not submitted.is_set()

    tracker.release.set()
    assert submitted.wait(WAIT)
    blocked.join(WAIT)
    urgent.join(WAIT)
    assert rep.flush(timeout=WAIT)
    assert sorted(s for s, _, _ in tracker.logs) == list(range(count + 1))
    assert [s for s, _, _ in tracker.logs if s < count] == list(range(count))  # each submitter's order kept


def test_a_failing_tracker_is_logged_once_counted_and_does_not_stop_the_others(reporter, caplog):
    rep = reporter()

    class Failing(RecordingTracker):
        def log(self, metrics, *, step=None, commit=None):
            raise OSError(f"backend down at {step}")

    failing, healthy = Failing("failing"), RecordingTracker("healthy")
    with caplog.at_level(logging.ERROR, logger="jaxtrack"):
        for step in range(3):
            rep.submit(failing, "log", {"loss": 1.0}, step=step)
            rep.submit(healthy, "log", {"loss": float(step)}, step=step)
        rep.submit(failing, "log_summary", {"best": 0.5})  # its other methods still work
        assert rep.flush(timeout=WAIT)
    assert [(s, m) for s, m, _ in healthy.logs] == [(0, {"loss": 0.0}), (1, {"loss": 1.0}), (2, {"loss": 2.0})]
    assert failing.summaries == [{"best": 0.5}]
    assert rep.errors.counts == {("failing", "log"): 3}
    assert isinstance(rep.errors.last["failing", "log"], OSError)
    assert "backend down at 2" in str(rep.errors.last["failing", "log"])
    assert bool(rep.errors)
    assert "failing.log failed 3 time(s)" in str(rep.errors)
    reports = [r for r in caplog.records if r.name == "jaxtrack" and "'failing'" in r.getMessage()]
    assert len(reports) == 1
    assert reports[0].exc_info is not None


def test_prepare_gets_the_arguments_on_the_host(reporter):
    rep = reporter()
    tracker = RecordingTracker()
    received = []

    def prepare(values, scale):
        received.append((type(values), type(scale)))
        return ({"doubled": values * 2, "scaled": values * scale},)

    rep.submit(tracker, "log", jnp.arange(3.0), jnp.float32(10.0), step=7, prepare=prepare)
    assert rep.flush(timeout=WAIT)
    assert received == [(np.ndarray, np.ndarray)]
    [(step, metrics, _)] = tracker.logs
    assert step == 7
    np.testing.assert_array_equal(metrics["doubled"], [0.0, 2.0, 4.0])
    np.testing.assert_array_equal(metrics["scaled"], [0.0, 10.0, 20.0])


def test_metric_keys_reach_the_tracker_in_the_order_they_were_given(reporter):
    # Whether or not a report holds JAX arrays (or shares its batch with one that does).
    rep = reporter()
    tracker = BlockingTracker()
    rep.submit(tracker, "log", {"first": 0.0}, step=0)
    assert tracker.entered.wait(WAIT)
    rep.submit(tracker, "log", {"zeta": 1.0, "alpha": 2.0}, step=1)
    rep.submit(tracker, "log", {"zeta": jnp.float32(1.0), "alpha": 2.0, "mid": {"b": 1, "a": 2}}, step=2)
    tracker.release.set()
    assert rep.flush(timeout=WAIT)
    assert [list(m) for _, m, _ in tracker.logs] == [["first"], ["zeta", "alpha"], ["zeta", "alpha", "mid/b", "mid/a"]]


def test_a_tracker_that_logs_from_inside_its_log_does_not_deadlock():
    class Echoing(RecordingTracker):
        def log(self, metrics, *, step=None, commit=None):
            super().log(metrics, step=step, commit=commit)
            if "echo" not in metrics:
                jt.log({"echo": metrics["x"]}, step=step)  # back through the reporter, from its own thread

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


def test_a_tracker_that_flushes_from_inside_its_log_does_not_wait_for_itself(reporter):
    rep = reporter(linger_secs=0)
    flushed = []

    class Flushing(RecordingTracker):
        def log(self, metrics, *, step=None, commit=None):
            super().log(metrics, step=step, commit=commit)
            flushed.append(rep.flush(timeout=1))  # jt.flush() here (no timeout) would hang for ever

    tracker = Flushing()
    rep.submit(tracker, "log", {"x": 1.0}, step=0)
    assert rep.flush(timeout=WAIT)
    assert flushed == [True]


def test_close_delivers_what_is_queued_then_refuses_more():
    rep = Reporter()
    tracker = RecordingTracker()
    for i in range(10):
        rep.submit(tracker, "log", {"i": i}, step=i)
    assert rep.close(timeout=WAIT)
    assert len(tracker.logs) == 10
    with pytest.raises(RuntimeError, match="closed"):
        rep.submit(tracker, "log", {"i": 10}, step=10)


EXIT_SCRIPT = """
import threading
import jax
import jax.numpy as jnp
import jaxtrack as jt

path = {path!r}
script_done = threading.Event()


class FileTracker(jt.NoopTracker):
    name = "file"

    def log(self, metrics, *, step=None, commit=None):
        # Hold the first delivery until the script has queued everything, so that
        # all of it is still pending when the interpreter starts to exit.
        assert script_done.wait(120)
        with open(path, "a") as file:
            file.write(f"log {{step}} " + " ".join(f"{{k}}={{float(v):g}}" for k, v in metrics.items()) + "\\n")

    def finish(self):
        with open(path, "a") as file:
            file.write("finished\\n")


jt.current_tracker(FileTracker())


@jt.jit
def step(x):
    jt.jit_log({{"x": x}})
    return x + 1


x = jnp.float32(0.0)
for i in range(100):
    jt.log({{"i": jnp.float32(i) if i % 2 else i}}, step=i)
for i in range(10):
    x = step(x)
    if i % 5 == 4:
        step.report(100 + i)
script_done.set()
# no jt.finish(): exit must deliver what is queued and finish the tracker
"""


def test_everything_queued_is_delivered_and_trackers_finished_at_exit(tmp_path):
    out = tmp_path / "delivered.txt"
    completed = subprocess.run(
        [sys.executable, "-c", EXIT_SCRIPT.format(path=str(out))], capture_output=True, text=True, timeout=180
    )
    assert completed.returncode == 0, completed.stderr[-5000:]
    lines = pathlib.Path(out).read_text().splitlines()
    assert lines == [
        *(f"log {i} i={i}" for i in range(100)),
        "log 104 x=2",  # mean of 0..4
        "log 109 x=7",  # mean of 5..9
        "finished",
    ]


def test_reported_values_reader_sees_each_value_once_in_order():
    from jaxtrack.reporter import NonFinite, ReportedValues

    board = ReportedValues(capacity=1000)
    board.update({"old": 1.0}, step=0)
    reader = board.reader()  # values from before the reader are not its business
    assert reader.read() == []
    board.update({"a": 1.0, "b": {"c": np.array([1.0, np.nan])}}, step=1)
    board.update({"a": 2.0, "skipped": "text"}, step=2)
    assert reader.read() == [("a", 1, 1.0), ("b/c", 1, NonFinite(1)), ("a", 2, 2.0)]
    assert reader.read() == []
    for step in range(3, 2003):  # more than the capacity: only the newest are kept
        board.update({"a": float(step)}, step=step)
    fresh = reader.read()
    assert len(fresh) == 1000 and fresh[0] == ("a", 1003, 1003.0) and fresh[-1] == ("a", 2002, 2002.0)
    board.update({"a": 0.5}, step=2003)
    assert reader.read() == [("a", 2003, 0.5)]
