"""RunWriter after writes that fail: a full disk (a real tmpfs, and the same fault injected), space coming back.

No wrong value, ever: a report that could not be stored is lost whole (and
said so), and every later one is stored at its own step under its own keys.
Each test on a real full disk has a twin with the fault injected into a real
SQLite connection (``support.disk.FaultyConnection``), for machines where
mounting is not permitted.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import jaxtrack as jt
from jaxtrack.store import RunWriter
from jaxtrack.store import schema as schema_module
from jaxtrack.trackers.local import LocalTracker
from support.disk import DISK_FULL, FaultyConnection, fail_commits, fill, free, small_disk
from support.faults import finish_warnings
from support.store import integrity, query, read_history, read_run

MB = 1 << 20


def _first_ten_steps(writer: RunWriter) -> None:
    for step in range(10):
        writer.write([("train/loss", float(step))], step=step)


_EXPECTED_AFTER_THE_LOST_REPORT = [
    *({"step": s, "train/loss": float(s)} for s in range(10)),
    {"step": 11, "test/accuracy": 0.3, "lr": 0.1},
    {"step": 12, "eval/accuracy": 0.91, "eval/loss": 0.6},
]


def _later_reports(writer: RunWriter) -> None:
    writer.write([("test/accuracy", 0.3), ("lr", 0.1)], step=11)
    writer.write([("eval/accuracy", 0.91), ("eval/loss", 0.6)], step=12)


# ---- a commit that fails: the report is lost whole, the next ones land where they belong ---------


def test_values_after_a_commit_failed_on_a_full_disk_keep_their_own_keys(tmp_path: Path) -> None:
    with small_disk(tmp_path) as disk:
        path = disk / "runs.db"
        writer = RunWriter(path, run_id="full")
        _first_ten_steps(writer)
        fill(disk)
        with pytest.raises(jt.StoreError, match="disk is full") as lost:
            writer.write([("eval/accuracy", 0.5), ("eval/loss", 0.7)], step=10)  # new keys: their ids were cached
        assert lost.value.reason == "full" and lost.value.path == str(path) and str(path) in str(lost.value)
        free(disk, MB)
        _later_reports(writer)
        writer.close()
        assert read_history(path, "full") == _EXPECTED_AFTER_THE_LOST_REPORT
        assert integrity(path) == "ok"


def test_values_after_an_injected_failed_commit_keep_their_own_keys(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    writer = RunWriter(path, run_id="full")
    _first_ten_steps(writer)
    faulty = fail_commits(writer, failures=100)
    with pytest.raises(jt.StoreError, match="disk is full"):
        writer.write([("eval/accuracy", 0.5), ("eval/loss", 0.7)], step=10)
    faulty.failures = 0  # room again
    _later_reports(writer)
    writer.close()
    assert read_history(path, "full") == _EXPECTED_AFTER_THE_LOST_REPORT
    assert query(path, "SELECT name FROM keys ORDER BY id") == [("train/loss",), ("test/accuracy",), ("lr",), ("eval/accuracy",), ("eval/loss",)]  # fmt: skip


def test_a_rewind_whose_commit_failed_still_supersedes_the_later_steps(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    writer = RunWriter(path, run_id="rewind")
    _first_ten_steps(writer)
    faulty = fail_commits(writer, failures=100)
    with pytest.raises(jt.StoreError):
        writer.write([("train/loss", 50.0)], step=5)  # a restart from step 5, lost: steps 5-9 still stored
    faulty.failures = 0
    writer.write([("train/loss", 60.0)], step=6)  # the run restarts from step 6 instead
    writer.close()
    assert read_history(path, "rewind") == [
        *({"step": s, "train/loss": float(s)} for s in range(6)),
        {"step": 6, "train/loss": 60.0},
    ]
    assert read_run(path, "rewind").last_step == 6


def test_a_report_whose_commit_failed_once_is_stored_by_its_retry(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    writer = RunWriter(path, run_id="retry")
    _first_ten_steps(writer)
    faulty = fail_commits(writer, failures=1)
    writer.write([("eval/accuracy", 0.5)], step=10)  # the write-ahead log is emptied, then it is tried again
    assert faulty.failed == 1
    writer.close()
    assert read_history(path, "retry")[-1] == {"step": 10, "eval/accuracy": 0.5}


# ---- space coming back: logging resumes by itself, whatever the amount -------------------------


@pytest.mark.parametrize("freed", [256 * 1024, MB, 15 * MB], ids=["256KB", "1MB", "15MB"])
def test_logging_resumes_by_itself_when_room_comes_back(tmp_path: Path, freed: int) -> None:
    with small_disk(tmp_path) as disk:
        path = disk / "runs.db"
        writer = RunWriter(path, run_id="resumes")
        _first_ten_steps(writer)
        fill(disk)
        for step in range(10, 13):
            with pytest.raises(jt.StoreError, match="disk is full"):
                writer.write([("train/loss", float(step)), ("eval/loss", 1.0)], step=step)
        free(disk, freed)
        for step in range(13, 1013):
            writer.write([("train/loss", float(step))], step=step)  # not one of them fails
        writer.close()
        assert read_run(path, "resumes").status == "finished"
        history = read_history(path, "resumes")
        assert [row["step"] for row in history] == [*range(10), *range(13, 1013)]
        assert integrity(path) == "ok"


# ---- a full disk when the run starts, and when it ends -------------------------------------------


def test_a_full_disk_at_init_tracker_is_named_and_leaves_no_empty_store(tmp_path: Path) -> None:
    with small_disk(tmp_path, size="1m") as disk:
        fill(disk)
        path = disk / "runs.db"
        with pytest.raises(jt.StoreError, match=r"runs\.db'?: the disk is full") as error:
            jt.init_tracker({"type": "local", "path": str(path)}, run_id="no-room")
        assert error.value.reason == "full" and "not a jaxtrack run store" not in str(error.value)
        assert not path.exists() and sorted(os.listdir(disk)) == ["filler"]


def test_an_injected_full_disk_at_init_tracker_is_named_and_leaves_no_empty_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_connect = schema_module.sqlite3.connect

    def full_disk_connect(*args: object, **kwargs: object) -> FaultyConnection:
        # SQLite has made the empty file; switching it to WAL is the first write, and the disk is full.
        return FaultyConnection(real_connect(*args, **kwargs), lambda sql: sql.startswith("PRAGMA journal_mode"))

    monkeypatch.setattr(schema_module.sqlite3, "connect", full_disk_connect)
    path = tmp_path / "runs.db"
    with pytest.raises(jt.StoreError, match=r"runs\.db'?: the disk is full") as error:
        jt.init_tracker({"type": "local", "path": str(path)}, run_id="no-room")
    assert DISK_FULL in str(error.value) and "not a jaxtrack run store" not in str(error.value)
    assert os.listdir(tmp_path) == []


def test_losses_on_a_full_disk_are_reported_at_finish_with_their_steps_and_the_file(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    tracker = jt.init_tracker({"type": "local", "path": str(path)}, run_id="lossy")
    assert isinstance(tracker, LocalTracker) and tracker._writer is not None
    jt.log({"loss": 1.0}, step=0)
    jt.flush()
    fail_commits(tracker._writer, failures=2 * 3)  # steps 1-3, each tried twice
    for step in range(1, 6):
        jt.log({"loss": float(step)}, step=step)
    messages = finish_warnings(status="failed")
    assert any(
        "local.log failed x3 at steps 1-3" in message and "disk is full" in message and str(path) in message
        for message in messages
    ), messages
    assert [row["step"] for row in read_history(path, "lossy")] == [0, 4, 5]
    assert read_run(path, "lossy").status == "failed"


def test_a_disk_still_full_at_finish_is_said_clearly(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    tracker = jt.init_tracker({"type": "local", "path": str(path)}, run_id="no-end")
    assert isinstance(tracker, LocalTracker) and tracker._writer is not None
    jt.log({"loss": 1.0}, step=0)
    jt.flush()
    fail_commits(tracker._writer, failures=2)  # the status, and its retry
    messages = finish_warnings(status="failed")
    assert any(
        "local.finish failed x1" in message
        and "could not be recorded as 'failed'" in message
        and "disk is full" in message
        and str(path) in message
        for message in messages
    ), messages
    assert read_run(path, "no-end").status == "running"  # as the warning says: 'killed' once this process ends


def test_a_full_disk_at_finish_still_records_the_status_once_the_log_is_emptied(tmp_path: Path) -> None:
    with small_disk(tmp_path) as disk:
        path = disk / "runs.db"
        jt.init_tracker({"type": "local", "path": str(path)}, run_id="ends")
        for step in range(200):
            jt.log({"loss": float(step), "note": "x" * 200}, step=step)
        jt.flush()
        fill(disk)
        assert finish_warnings(status="failed") == []
        assert read_run(path, "ends").status == "failed"
