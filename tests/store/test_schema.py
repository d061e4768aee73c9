"""Opening a store: a new one gets the schema; a file that is not a jaxtrack store, a corrupt, locked or read-only
store is refused before a run starts, naming the file, and left alone; a read-only store is still read."""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

import pytest

import jaxtrack as jt
from jaxtrack.store import RunStore
from jaxtrack.store import schema as schema_module
from jaxtrack.store.schema import SCHEMA_VERSION, STEP_TABLES, connect
from jaxtrack.trackers.local import LocalTracker
from support.cli import run_cli
from support.disk import remount_read_only, small_disk
from support.store import query, read_history


def _another_programs_database(path: Path, create_table: str) -> None:
    """An SQLite database with one table, as another program would leave it."""
    db = sqlite3.connect(path)
    db.execute(create_table)
    db.commit()
    db.close()


# ---- files that are not stores -------------------------------------------------------------------


def test_run_store_on_files_that_are_not_stores_is_a_value_error(tmp_path: Path) -> None:
    text = tmp_path / "notes.db"
    text.write_text("these are not the runs you are looking for\n" * 100)
    with pytest.raises(ValueError, match="not a jaxtrack run store"):
        RunStore(text)
    foreign = tmp_path / "foreign.db"
    _another_programs_database(foreign, "CREATE TABLE things (x)")
    with pytest.raises(ValueError, match=r"foreign\.db.*not a jaxtrack run store"):
        RunStore(foreign)
    newer = tmp_path / "newer.db"
    LocalTracker(newer, run_id="r").finish()
    db = sqlite3.connect(newer)
    db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(ValueError, match="newer jaxtrack"):
        RunStore(newer)


def test_refusing_a_foreign_database_leaves_it_unchanged(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.db"
    _another_programs_database(foreign, "CREATE TABLE things (x)")
    with pytest.raises(ValueError):
        RunStore(foreign)
    assert query(foreign, "PRAGMA journal_mode") == [("delete",)]


def test_tracker_refuses_a_foreign_database(tmp_path: Path) -> None:
    foreign = tmp_path / "app.db"
    _another_programs_database(foreign, "CREATE TABLE users (name TEXT)")
    with pytest.raises(ValueError, match="not a jaxtrack run store"):
        LocalTracker(foreign, run_id="r").finish()
    assert query(foreign, "SELECT name FROM sqlite_master WHERE type = 'table'") == [("users",)]


# ---- a new store ---------------------------------------------------------------------------------


def test_a_new_store_has_every_table_the_view_and_the_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "runs.db"
    connect(path, create=True).close()
    names = {name for (name,) in query(path, "SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")}
    assert names == {"runs", "keys", "artifacts", "metrics", *STEP_TABLES, *(f"superseded_{t}" for t in STEP_TABLES)}
    assert query(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert query(path, "PRAGMA journal_mode") == [("wal",)]
    db = connect(path, create=False)  # and it opens as a store
    try:
        assert db.execute("SELECT count(*) FROM metrics").fetchone() == (0,)
    finally:
        db.close()


def test_opening_a_store_twice_to_create_it_keeps_the_first(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    first = connect(path, create=True)
    try:
        first.execute("INSERT INTO keys (name) VALUES ('loss')")
        connect(path, create=True).close()  # the schema is there: nothing is made again
        assert query(path, "SELECT name FROM keys") == [("loss",)]
    finally:
        first.close()


def test_many_connections_creating_one_store_at_once_all_succeed(tmp_path: Path) -> None:
    # Switching a new file to WAL is refused at once (no busy handler) while another connection does it too;
    # before the retry about one creation in twenty failed with "database is locked" under this race.
    failures: list[BaseException] = []
    for attempt in range(100):
        path = tmp_path / f"store-{attempt}" / "runs.db"
        barrier = threading.Barrier(4)

        def create(path: Path = path, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            try:
                connect(path, create=True).close()
            except Exception as error:  # noqa: BLE001 - collected and asserted on below
                failures.append(error)

        threads = [threading.Thread(target=create) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert failures == []


# ---- stores that cannot be used: refused at the start, naming the file and what to do -------------


def _store_with_values(path: Path, runs: int = 4, steps: int = 300) -> None:
    for r in range(runs):
        with LocalTracker(path, run_id=f"run-{r}") as tracker:
            for step in range(steps):
                tracker.log({"loss": float(step), "note": f"step {step} of run {r}"}, step=step)


def _corrupt_the_middle(path: Path) -> bytes:
    """Overwrites 4 KB in the middle of the database (a page of values) and returns the file's bytes after."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4096] = b"\xa5" * 4096
    path.write_bytes(bytes(data))
    return bytes(data)


def test_a_corrupt_store_is_refused_at_init_tracker_and_left_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    _store_with_values(path)
    corrupt = _corrupt_the_middle(path)
    with pytest.raises(jt.StoreError, match=r"runs\.db'? is corrupt.*\.recover") as error:
        jt.init_tracker({"type": "local", "path": str(path)}, run_id="after")
    assert error.value.reason == "corrupt" and error.value.path == str(path)
    assert path.read_bytes() == corrupt  # not written into
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs.db"]


def test_reading_a_corrupt_store_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    _store_with_values(path)
    _corrupt_the_middle(path)
    with RunStore(path) as store, pytest.raises(jt.StoreError, match=r"runs\.db'? is corrupt") as error:
        for run in store.runs():
            store.history(run.id)  # "database disk image is malformed", once a read reaches the page
    assert str(path) in str(error.value)


def test_a_store_locked_past_the_timeout_is_refused_at_init_naming_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "runs.db"
    LocalTracker(path, run_id="first").finish()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another program holds the write lock, and does not let go
    monkeypatch.setattr(schema_module, "BUSY_TIMEOUT_SECS", 0.2)
    try:
        with pytest.raises(jt.StoreError, match=r"runs\.db'? is locked.*fuser") as error:
            jt.init_tracker({"type": "local", "path": str(path)}, run_id="second")
        assert error.value.reason == "locked"
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert query(path, "SELECT id FROM runs") == [("first",)]


def test_a_store_on_a_read_only_file_system_is_refused_at_init_and_still_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with small_disk(tmp_path, size="4m") as disk:
        path = disk / "runs.db"
        with LocalTracker(path, run_id="kept") as tracker:
            tracker.log({"loss": 0.5}, step=3)
        remount_read_only(disk)
        with pytest.raises(jt.StoreError, match=r"runs\.db'? cannot be written.*read-only") as error:
            jt.init_tracker({"type": "local", "path": str(path)}, run_id="new")
        assert error.value.reason == "read-only"
        assert read_history(path, "kept") == [{"step": 3, "loss": 0.5}]
        assert "kept" in run_cli(capsys, "runs", "--store", str(path))
        assert "loss" in run_cli(capsys, "show", "kept", "--store", str(path))
        assert sorted(os.listdir(disk)) == ["runs.db"]


def test_a_read_only_store_in_a_read_only_directory_is_read_without_writing_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "shared"
    path = folder / "runs.db"
    with LocalTracker(path, run_id="kept") as tracker:
        tracker.log({"loss": 0.5}, step=3)
    before = path.read_bytes(), path.stat().st_mtime_ns
    path.chmod(0o444)
    folder.chmod(0o555)
    try:
        with RunStore(path) as store:
            assert store.history("kept") == [{"step": 3, "loss": 0.5}]
            assert os.listdir(folder) == ["runs.db"]  # no -wal or -shm made beside it, even by root
        assert "kept" in run_cli(capsys, "runs", "--store", str(path))
        assert "loss" in run_cli(capsys, "show", "kept", "--store", str(path))
        assert os.listdir(folder) == ["runs.db"]
        assert (path.read_bytes(), path.stat().st_mtime_ns) == before
    finally:
        folder.chmod(0o755)
        path.chmod(0o644)
