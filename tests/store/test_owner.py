"""One writer per run: an owner with a heartbeat, refusal of a second writer, take-over, and liveness.

Real processes (``tests/support/local_store_writer.py``), a real SIGKILL, and a
real PID namespace (``unshare``) where the machine allows one.
"""

from __future__ import annotations

import gc
import os
import signal
import socket
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

import jaxtrack as jt
from jaxtrack.store import RunStore, RunWriter
from jaxtrack.store.owner import Owner, pid_namespace
from jaxtrack.trackers.local import LocalTracker
from support.faults import wait_until
from support.store import query, read_history, read_run, read_step_lines, start_writer, writer_rows


def _stop(writer: subprocess.Popen[str]) -> None:
    if writer.poll() is None:
        os.killpg(writer.pid, signal.SIGKILL)
    writer.wait()
    if writer.stdout is not None:
        writer.stdout.close()


def _superseded(path: Path) -> int:
    return (
        query(path, "SELECT count(*) FROM superseded_scalars")[0][0]
        + query(path, "SELECT count(*) FROM superseded_texts")[0][0]
    )


def test_a_second_process_resuming_a_run_being_written_is_refused_naming_the_writer(tmp_path: Path) -> None:
    """Case 3: the second process superseded the live run's values and overwrote half of them."""
    path = tmp_path / "runs.db"
    with open(tmp_path / "first.err", "w") as first_err:
        first = start_writer(path, "shared", 0, cwd=tmp_path, stderr=first_err)  # writes until killed
    try:
        read_step_lines(first, until=50)
        # Another process resumes the same run id: refused at the start, before it writes anything.
        second = start_writer(path, "shared", 300, cwd=tmp_path, stderr=subprocess.PIPE)
        _, error = second.communicate(timeout=120)
        assert second.returncode != 0
        assert "RunInUseError" in error and "'shared'" in error
        assert f"host {socket.gethostname()}, process {first.pid}" in error and "heartbeat" in error
        # And this process too, through the tracker a user would make.
        with pytest.raises(jt.RunInUseError, match=rf"run 'shared' is being written .*process {first.pid}.*{path}"):
            LocalTracker(path, run_id="shared")
        last = read_step_lines(first, until=80)
    finally:
        _stop(first)
    history = read_history(path, "shared")
    assert history[: last + 1] == writer_rows(range(last + 1))  # the first writer's values, every one
    assert _superseded(path) == 0
    assert read_run(path, "shared").sessions == 1


def test_take_over_moves_the_run_to_the_new_writer_and_the_old_one_writes_nothing_more(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    with open(tmp_path / "first.err", "w") as first_err:
        first = start_writer(path, "moved", 0, cwd=tmp_path, stderr=first_err)
    try:
        read_step_lines(first, until=20)
        tracker = LocalTracker(path, run_id="moved", take_over=True)
        taken_at = tracker.resumed_step
        assert taken_at is not None and taken_at >= 20
        first_after = read_step_lines(first, until=taken_at + 30)  # it goes on logging, refused each time
        for step in range(1000, 1005):
            tracker.log({"i": step}, step=step)
        tracker.finish()
    finally:
        _stop(first)
    assert first_after > taken_at
    steps = [row["step"] for row in read_history(path, "moved")]
    assert steps == [*range(taken_at + 1), *range(1000, 1005)]  # nothing of the first writer after the take-over
    run = read_run(path, "moved")
    assert (run.status, run.sessions, run.pid) == ("finished", 2, os.getpid())
    error = (tmp_path / "first.err").read_text()
    assert "RunTakenOverError" in error and f"process {os.getpid()}" in error  # each refusal says who has the run


def test_a_writer_in_this_process_not_closed_holds_its_run_until_it_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    first = RunWriter(path, run_id="held")
    first.write([("loss", 1.0)], step=0)
    with pytest.raises(jt.RunInUseError, match=rf"run 'held' .*process {os.getpid()}"):
        RunWriter(path, run_id="held")
    # The notebook case: the same run id started again through init_tracker says what to do.
    store = tmp_path / "notebook.db"
    jt.init_tracker({"type": "local", "path": str(store)}, run_id="cell")
    with pytest.raises(jt.RunInUseError, match=r"a tracker of this process still writes it .*jaxtrack\.finish\(\)"):
        jt.init_tracker({"type": "local", "path": str(store)}, run_id="cell")
    jt.finish()
    jt.init_tracker({"type": "local", "path": str(store)}, run_id="cell")  # once finished, it resumes
    jt.finish()
    del first  # dropped without close(), as a notebook cell run again does
    gc.collect()
    second = RunWriter(path, run_id="held")
    assert second.resumed_step == 0
    second.close()
    assert read_run(path, "held").sessions == 2


def test_a_taken_over_writer_raises_on_every_write_naming_the_new_holder(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    old = RunWriter(path, run_id="taken")
    old.write([("loss", 1.0)], step=0)
    new = RunWriter(path, run_id="taken", take_over=True)
    for attempt in (
        lambda: old.write([("loss", 9.0)], step=1),
        lambda: old.merge_summary({"best": 9.0}),
        lambda: old.merge_config({"lr": 9.0}),
        lambda: old.close("failed"),
    ):
        with pytest.raises(jt.RunTakenOverError, match=rf"run 'taken' .*taken over .*process {os.getpid()}"):
            attempt()
    new.write([("loss", 0.5)], step=1)
    new.close()
    run = read_run(path, "taken")
    assert (run.status, run.summary, run.config) == ("finished", {}, {})
    assert read_history(path, "taken") == [{"step": 0, "loss": 1.0}, {"step": 1, "loss": 0.5}]


def test_a_taken_over_trackers_lost_reports_are_counted_and_reported_at_finish(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    old = LocalTracker(path, run_id="counted")
    old.log({"loss": 1.0}, step=0)
    old.flush()
    new = LocalTracker(path, run_id="counted", take_over=True)
    for step in (1, 2, 3):
        old.log({"loss": 9.0}, step=step)
    with pytest.warns(jt.DataLossWarning, match=r"local\.log failed x3"):
        old.finish()
    new.finish()
    assert read_history(path, "counted") == [{"step": 0, "loss": 1.0}]


def test_the_heartbeat_is_refreshed_while_nothing_is_written(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    writer = RunWriter(path, run_id="idle", heartbeat_secs=0.05)
    try:
        (started,) = query(path, "SELECT heartbeat FROM runs WHERE id = 'idle'")[0]
        wait_until(lambda: query(path, "SELECT heartbeat FROM runs WHERE id = 'idle'")[0][0] > started, "a heartbeat")
    finally:
        writer.close()


def test_a_writer_silent_past_the_stale_time_is_dead_and_its_run_can_be_resumed(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    RunWriter(path, run_id="remote").close()
    db_query = (
        "UPDATE runs SET status = 'running', host = 'another-host', pid = 4242, heartbeat = ? WHERE id = 'remote'"
    )
    with sqlite3.connect(path) as db:
        db.execute(db_query, (time.time(),))
    assert read_run(path, "remote").status == "running"  # another host's fresh heartbeat: alive
    with pytest.raises(jt.RunInUseError, match="host another-host, process 4242, last heartbeat"):
        RunWriter(path, run_id="remote")
    with sqlite3.connect(path) as db:
        db.execute(db_query, (time.time() - 3600,))
    assert read_run(path, "remote").status == "killed"  # silent for an hour
    RunWriter(path, run_id="remote").close()  # a dead writer's run is resumed without take_over
    assert read_run(path, "remote").status == "finished"


def _unshare() -> list[str]:
    command = ["unshare", "--pid", "--fork", "--mount-proc"]
    try:
        subprocess.run([*command, "true"], check=True, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as error:
        pytest.skip(f"no PID namespace can be made here ({error}); liveness by heartbeat is covered above")
    return command


def test_a_writer_killed_in_a_pid_namespace_reads_killed_once_its_heartbeat_is_stale(tmp_path: Path) -> None:
    """Case 9: its process id named another process here (the namespace's 1 is this host's init): ``running`` forever."""
    prefix = _unshare()
    path = tmp_path / "runs.db"
    with open(tmp_path / "writer.err", "w") as err:
        writer = start_writer(path, "contained", 0, cwd=tmp_path, stderr=err, prefix=prefix)
    try:
        read_step_lines(writer, until=20)
        os.killpg(writer.pid, signal.SIGKILL)  # the namespace's processes, all of them
    finally:
        _stop(writer)
    run = read_run(path, "contained")
    owner = Owner(run.host, run.pid, run.system.get("pid_namespace"), run.heartbeat)
    assert not owner.checkable()  # its id is the namespace's, not one this process can look up
    assert run.status == "running"  # a fresh heartbeat: it may still be alive, for all this reader can tell

    def killed() -> bool:
        with RunStore(path, stale_after_secs=1.0) as store:
            return store.run("contained").status == "killed"

    wait_until(killed, "the run to read killed once its heartbeat is stale")
    # A writer judges by the default stale time (a minute): until then, resuming needs take_over.
    with pytest.raises(jt.RunInUseError, match=rf"process {run.pid}, last heartbeat"):
        LocalTracker(path, run_id="contained")
    LocalTracker(path, run_id="contained", take_over=True).finish()
    assert read_run(path, "contained").status == "finished"


def test_a_writer_of_a_live_process_silent_past_the_stale_time_is_dead() -> None:
    """A writer dropped unclosed by a process that goes on (a notebook kernel), or a process id reused."""
    here = socket.gethostname()
    alive_process = os.getppid()  # exists, but has not beaten for an hour
    assert not Owner(here, alive_process, pid_namespace(), heartbeat=time.time() - 3600).alive()
    assert Owner(here, alive_process, pid_namespace(), heartbeat=time.time()).alive()
    assert not Owner(here, 2**22 + 12345, pid_namespace(), heartbeat=time.time()).alive()  # no such process
