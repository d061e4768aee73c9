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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jaxtrack.store import RunStore

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


def test_sigterm_while_log_holds_the_reporter_lock_still_finishes_the_run(tmp_path: Path, start: Any) -> None:
    child = start("sigterm-in-submit")
    assert child.end() == -signal.SIGTERM, child.stderr[-4000:]
    assert "survived SIGTERM" not in child.lines
    assert _stored_steps(tmp_path / "runs.db", "run-sigterm-in-submit") == list(range(20))
    assert _raw_run(tmp_path / "runs.db", "run-sigterm-in-submit")[0] == "killed"
