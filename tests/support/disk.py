"""A small real disk that fills up, goes read-only or comes back, and the same faults injected into SQLite.

``small_disk(tmp_path)`` mounts a ``tmpfs`` of a few megabytes inside the
test's directory and unmounts it at the end (the test is skipped, with the
reason, where mounting is not permitted); ``fill`` takes every free byte with
a filler file and ``free`` gives some back. ``FaultyConnection`` wraps a real
``sqlite3.Connection`` and fails the statements chosen as SQLite does on a
full disk (a failed ``COMMIT`` has rolled its transaction back), so machines
without ``mount`` still run the same paths.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

FILLER = "filler"
DISK_FULL = "database or disk is full"


@contextlib.contextmanager
def small_disk(tmp_path: Path, size: str = "16m") -> Iterator[Path]:
    """A real ``tmpfs`` of ``size`` mounted at ``tmp_path / "disk"``, unmounted afterwards (skips if not permitted)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(disk)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (a full disk needs one): {mounted.stderr.strip() or 'not permitted'}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False, capture_output=True)


def fill(disk: Path) -> None:
    """Takes every free byte of ``disk`` with its filler file (a write then fails with ``ENOSPC``)."""
    fd = os.open(disk / FILLER, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for size in (1 << 20, 1 << 12, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)
    try:
        with pytest.raises(OSError) as full:
            (disk / "probe").write_bytes(b"x" * 4096)
        assert full.value.errno == errno.ENOSPC
    finally:
        (disk / "probe").unlink(missing_ok=True)


def free(disk: Path, nbytes: int) -> None:
    """Gives ``nbytes`` of ``disk`` back (from its filler file)."""
    filler = disk / FILLER
    os.truncate(filler, max(filler.stat().st_size - nbytes, 0))


def remount_read_only(disk: Path) -> None:
    """Makes ``disk`` (a ``small_disk``) a read-only file system."""
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True, capture_output=True)


class FaultyConnection:
    """A real ``sqlite3.Connection`` whose statements that ``fails(sql)`` picks raise as on a full disk.

    ``failures`` of them fail (then it behaves); a failed ``COMMIT`` rolls the
    transaction back first, as SQLite does when the disk is full. ``failed``
    counts the failures so far.
    """

    def __init__(self, db: sqlite3.Connection, fails: Callable[[str], bool], failures: int = 1) -> None:
        self._db = db
        self._fails = fails
        self.failures = failures
        self.failed = 0

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if self.failures and self._fails(sql):
            self.failures -= 1
            self.failed += 1
            if sql == "COMMIT":
                self._db.execute("ROLLBACK")
            raise sqlite3.OperationalError(DISK_FULL)
        return self._db.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


def fail_commits(writer: Any, failures: int = 1) -> FaultyConnection:
    """Makes the next ``failures`` commits of ``writer`` (a ``RunWriter``) fail as on a full disk."""
    faulty = FaultyConnection(writer._db, lambda sql: sql == "COMMIT", failures)
    writer._db = faulty
    return faulty


__all__ = ["DISK_FULL", "FaultyConnection", "fail_commits", "fill", "free", "remount_read_only", "small_disk"]
