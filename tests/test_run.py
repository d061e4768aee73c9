"""How a run ends: one lifecycle for finish, scopes, strict mode, and the process ending (SIGTERM, errors, exit).

Each test starts ``tests/support/process_exit_worker.py`` as a real child process
that records into a local store, ends it one way or another, and reads the
store back with :class:`~jaxtrack.RunStore` (and the raw ``runs`` row, since
``RunStore`` reports a ``running`` run whose process is gone as ``killed``).
The parent synchronises on the steps the child prints, never on sleeps; a
child that outlives its bounded wait is killed and the test fails.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import jaxtrack
import jaxtrack as jt
from jaxtrack.store import RunStore
from jaxtrack.trackers.local import LocalTracker
from support.backends import local_spec
from support.faults import FailingTracker, finish_warnings, stored_history, stored_status, unique
from support.recording import RecordingTracker

WORKER = Path(__file__).resolve().parent / "support" / "process_exit_worker.py"
WAIT = 120  # generous bound for a child to start (imports JAX) or to end: only a hang exceeds it


class Child:
    """The worker in a new process; a watchdog kills it if it prints or ends nothing for ``WAIT`` seconds."""

    def __init__(self, scenario: str, tmp_path: Path) -> None:
        self.err_path = tmp_path / f"{scenario}.err"
        with open(self.err_path, "w") as err:
            self.process = subprocess.Popen(
                [sys.executable, str(WORKER), scenario, str(tmp_path / "runs.db"), f"run-{scenario}"],
                cwd=tmp_path,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                env={**os.environ, "JAX_PLATFORMS": "cpu"},
            )
        self.lines: list[str] = []
        self.timed_out = False
        self.watchdog: threading.Timer | None = None
        self._arm()

    def _arm(self) -> None:
        if self.watchdog is not None:
            self.watchdog.cancel()
        self.watchdog = threading.Timer(WAIT, self._time_out)
        self.watchdog.daemon = True
        self.watchdog.start()

    def _time_out(self) -> None:
        self.timed_out = True
        self.process.kill()

    @property
    def stderr(self) -> str:
        return self.err_path.read_text()

    def run_until(self, step: int) -> None:
        """Reads the child's lines until it printed ``step``."""
        assert self.process.stdout is not None
        while not (self.lines and self.lines[-1].isdigit() and int(self.lines[-1]) >= step):
            line = self.process.stdout.readline()
            if not line:
                hung = f"printed nothing for {WAIT} s" if self.timed_out else "ended"
                pytest.fail(f"the child {hung} before step {step}:\n{self.stderr[-4000:]}")
            self.lines.append(line.rstrip("\n"))

    def end(self) -> int:
        """Reads what the child prints until it ends; its exit status (the test fails if it hangs)."""
        assert self.process.stdout is not None
        self._arm()
        self.lines += self.process.stdout.read().splitlines()  # the lines already buffered too
        self.process.wait()
        self.kill()
        assert not self.timed_out, f"the child did not end within {WAIT} s:\n{self.stderr[-4000:]}"
        return self.process.returncode

    def kill(self) -> None:
        if self.watchdog is not None:
            self.watchdog.cancel()
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()

    @property
    def steps(self) -> list[int]:
        return [int(line) for line in self.lines if line.isdigit()]


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Any]:
    """Starts workers (``start(scenario)``), killed at teardown if still alive."""
    children: list[Child] = []

    def make(scenario: str) -> Child:
        children.append(Child(scenario, tmp_path))
        return children[-1]

    yield make
    for child in children:
        child.kill()


def _raw_run(path: Path, run_id: str) -> tuple[str, Any]:
    """The stored ``(status, end_time)``, as written (not derived from whether the process lives)."""
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT status, end_time FROM runs WHERE id = ?", (run_id,)).fetchone()
    finally:
        db.close()


def _stored_steps(path: Path, run_id: str) -> list[int]:
    with RunStore(path) as store:
        history = store.history(run_id)
    assert all(row == {"step": row["step"], "i": row["step"], "x": float(row["step"])} for row in history)
    return [row["step"] for row in history]


def _check_every_printed_step_is_stored(tmp_path: Path, child: Child, run_id: str, first: int) -> None:
    printed = child.steps
    stored = _stored_steps(tmp_path / "runs.db", run_id)
    assert printed == list(range(first, first + len(printed)))
    assert stored == list(range(first, first + len(stored))), "the stored steps have a gap"
    assert len(stored) >= len(printed), f"printed up to step {printed[-1]}, stored up to {stored[-1:]}"


@pytest.mark.parametrize(("scenario", "first_step"), [("loop", 0), ("train", 1)], ids=["plain-loop", "jt.train"])
def test_sigterm_mid_training_finishes_the_run_as_killed_and_dies_by_the_signal(
    tmp_path: Path, start: Any, scenario: str, first_step: int
) -> None:
    child = start(scenario)
    child.run_until(50)
    child.process.send_signal(signal.SIGTERM)

    assert child.end() == -signal.SIGTERM, child.stderr[-4000:]  # as if jaxtrack had not handled it
    status, end_time = _raw_run(tmp_path / "runs.db", f"run-{scenario}")
    assert (status, end_time is not None) == ("killed", True), child.stderr[-4000:]
    # Every report jt.log accepted before the signal (and any after, before the handler ran) is stored.
    _check_every_printed_step_is_stored(tmp_path, child, f"run-{scenario}", first_step)


def test_uncaught_exception_finishes_the_run_as_failed_and_still_prints_the_traceback(
    tmp_path: Path, start: Any
) -> None:
    child = start("raise")
    assert child.end() == 1
    assert "Traceback (most recent call last)" in child.stderr
    assert "ValueError: boom from the worker" in child.stderr
    status, end_time = _raw_run(tmp_path / "runs.db", "run-raise")
    assert (status, end_time is not None) == ("failed", True)
    assert _stored_steps(tmp_path / "runs.db", "run-raise") == child.steps == list(range(20))


def test_uncaught_keyboard_interrupt_finishes_the_run_as_killed(tmp_path: Path, start: Any) -> None:
    child = start("interrupt")
    assert child.end() in (130, -signal.SIGINT), child.stderr[-4000:]
    assert "KeyboardInterrupt" in child.stderr
    status, end_time = _raw_run(tmp_path / "runs.db", "run-interrupt")
    assert (status, end_time is not None) == ("killed", True)
    assert _stored_steps(tmp_path / "runs.db", "run-interrupt") == child.steps == list(range(20))


def test_normal_exit_without_finish_finishes_the_run(tmp_path: Path, start: Any) -> None:
    child = start("exit")
    assert child.end() == 0, child.stderr[-4000:]
    status, end_time = _raw_run(tmp_path / "runs.db", "run-exit")
    assert (status, end_time is not None) == ("finished", True)
    assert _stored_steps(tmp_path / "runs.db", "run-exit") == child.steps == list(range(20))


def test_a_sigterm_handler_of_the_program_is_left_in_place(tmp_path: Path, start: Any) -> None:
    child = start("own-handler")
    child.run_until(20)
    assert "handler kept" in child.lines
    child.process.send_signal(signal.SIGTERM)

    # The program's handler ran (it finishes the run itself and exits 7), not jaxtrack's.
    assert child.end() == 7, child.stderr[-4000:]
    assert "own handler ran" in child.lines
    assert _raw_run(tmp_path / "runs.db", "run-own-handler")[0] == "killed"
    _check_every_printed_step_is_stored(tmp_path, child, "run-own-handler", first=0)


def test_sigterm_while_log_holds_the_dispatchers_lock_still_finishes_the_run(tmp_path: Path, start: Any) -> None:
    child = start("sigterm-in-submit")
    assert child.end() == -signal.SIGTERM, child.stderr[-4000:]
    assert "survived SIGTERM" not in child.lines
    assert _stored_steps(tmp_path / "runs.db", "run-sigterm-in-submit") == list(range(20))
    assert _raw_run(tmp_path / "runs.db", "run-sigterm-in-submit")[0] == "killed"


# ---- a backend that hangs at the end -------------------------------------------------------------------


@pytest.mark.parametrize("ending", ["exit", "sigterm"])
def test_a_hung_backend_neither_blocks_training_nor_keeps_the_process_from_ending(
    tmp_path: Path, start: Any, ending: str
) -> None:
    """Case 4: training blocked after ~11.6k reports, then a normal exit and SIGTERM both hung for ever."""
    child = start(f"hung-{ending}")
    child.run_until(1999)  # every report logged: the loop waited for the hung backend once, then went on
    if ending == "sigterm":
        while "trained" not in child.lines:
            line = child.process.stdout.readline() if child.process.stdout is not None else ""
            assert line, child.stderr[-4000:]
            child.lines.append(line.rstrip("\n"))
        child.process.send_signal(signal.SIGTERM)
    code = child.end()  # the watchdog kills a child that hangs: this asserts it ended by itself
    assert code == (0 if ending == "exit" else -signal.SIGTERM), child.stderr[-4000:]
    assert "has taken no call for 1 s" in child.stderr  # declared hung, once, by name
    assert "hung: did not finish within 3 s" in child.stderr or "hung: " in child.stderr
    assert "report(s) dropped while it hung" in child.stderr  # the warning says what it lost
    status, end_time = _raw_run(tmp_path / "runs.db", f"run-hung-{ending}")
    assert (status, end_time is not None) == ("finished" if ending == "exit" else "killed", True)
    assert _stored_steps(tmp_path / "runs.db", f"run-hung-{ending}") == list(
        range(2000)
    )  # the local store lost nothing


# ---- what is queued is delivered at exit -----------------------------------------------------------------

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


def test_everything_queued_is_delivered_and_trackers_finished_at_exit(tmp_path: Path) -> None:
    out = tmp_path / "delivered.txt"
    completed = subprocess.run(
        [sys.executable, "-c", EXIT_SCRIPT.format(path=str(out))], capture_output=True, text=True, timeout=180
    )
    assert completed.returncode == 0, completed.stderr[-5000:]
    lines = out.read_text().splitlines()
    assert lines == [
        *(f"log {i} i={i}" for i in range(100)),
        "log 104 x=2",  # mean of 0..4
        "log 109 x=7",  # mean of 5..9
        "finished",
    ]


# ---- strict mode ---------------------------------------------------------------------------------------


class FailingAt(jt.NoopTracker):
    """Raises from ``log`` at the given steps."""

    def __init__(self, name: str, steps: set[int]) -> None:
        self.name = name
        self.steps = steps

    def log(self, metrics, *, step=None, commit=None):
        if step in self.steps:
            raise OSError(f"{self.name} failed at {step}")


def test_strict_mode_names_the_backend_and_step_of_each_failure_in_turn(tmp_path: Path) -> None:
    """Case 10: the second backend's failure was reported under the name of the one that failed first."""
    path = tmp_path / "runs.db"
    first, second = FailingAt(unique("first"), {1, 3}), FailingAt(unique("second"), {2})
    jt.init_tracker([local_spec(path), first, second], run_id="strict-turns", strict=True)
    jt.log({"x": 0.0}, step=0)
    jt.log({"x": 1.0}, step=1)  # the first fails
    with pytest.raises(jt.BackendError) as raised:
        jt.flush(timeout=60)
    assert (raised.value.backend, raised.value.method, raised.value.step) == (first.name, "log", 1)
    assert f"{first.name!r} failed in log at step 1" in str(raised.value)
    assert isinstance(raised.value.__cause__, OSError)
    jt.log({"x": 2.0}, step=2)  # the second fails
    jt.log({"x": 3.0}, step=3)  # the first fails again
    with pytest.raises(jt.BackendError) as raised:
        jt.flush(timeout=60)
    assert (raised.value.backend, raised.value.step) == (second.name, 2)  # the lowest step first, each once
    with pytest.raises(jt.BackendError) as raised:
        jt.log({"x": 4.0}, step=4)  # raised at the next call, after queueing it
    assert (raised.value.backend, raised.value.step) == (first.name, 3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        jt.finish()  # nothing left to raise
    messages = [str(w.message) for w in caught]
    assert any(f"{first.name}.log failed x2" in m and f"{second.name}.log failed x1" in m for m in messages)
    assert [row["step"] for row in local_history_rows(path, "strict-turns")] == [0, 1, 2, 3, 4]


def test_strict_mode_raises_at_finish_after_the_run_has_ended(tmp_path: Path) -> None:
    failing = FailingTracker(unique("failing"), methods=("log",))
    path = tmp_path / "runs.db"
    jt.init_tracker(jt.CompositeTracker([failing, LocalTracker(path, run_id="strict")]), strict=True)
    jt.log({"loss": 0.0}, step=0)
    with (
        pytest.raises(jt.BackendError, match=rf"{failing.name}.*log.*RuntimeError: {failing.name} is down"),
        pytest.warns(jt.DataLossWarning, match=rf"{failing.name}.log failed x1"),
    ):
        jt.finish()  # says what was lost, as without strict mode, then raises
    assert jaxtrack.run.current() is None  # finished nonetheless
    assert stored_status(path, "strict")[0] == "finished"
    assert [row["step"] for row in stored_history(path, "strict")] == [0]


def test_strict_mode_ends_with_its_run() -> None:
    jt.init_tracker(RecordingTracker(unique("strict-run")), strict=True)
    jt.finish()
    failing = FailingTracker(unique("failing"), methods=("log",))
    jt.current_tracker(jt.CompositeTracker([failing, RecordingTracker(unique("recording"))]))
    jt.log({"loss": 0.0}, step=0)
    assert jt.flush(timeout=60)  # a non-strict run: the failure is counted, not raised
    assert any(f"{failing.name}.log failed x1" in m for m in finish_warnings())


def local_history_rows(path: Path, run_id: str) -> list[dict[str, Any]]:
    with RunStore(path) as store:
        return store.history(run_id)
