"""Opening a store: a new one gets the schema, a file that is not a jaxtrack store is refused and left alone."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from jaxtrack.store import RunStore
from jaxtrack.store.schema import SCHEMA_VERSION, STEP_TABLES, connect
from jaxtrack.trackers.local import LocalTracker
from support.store import query


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
