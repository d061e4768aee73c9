"""A local run store read back for tests, through ``RunStore`` and plain ``sqlite3``, and the writer process.

``start_writer`` starts ``local_store_writer.py`` as a separate Python
process, for the durability and concurrency tests; ``writer_rows`` are the
history rows it writes. ``start_jsonl_writer`` starts ``jsonl_writer.py``, the
same way, for the JSON lines tracker's kill test.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jaxtrack.store import RunStore, StoredRun

WRITER = Path(__file__).resolve().parent / "local_store_writer.py"
JSONL_WRITER = Path(__file__).resolve().parent / "jsonl_writer.py"


def read_history(path: Path, run_id: str, keys: list[str] | None = None) -> list[dict[str, Any]]:
    """The run's history rows, as ``RunStore.history`` gives them."""
    with RunStore(path) as store:
        return store.history(run_id, keys)


def read_run(path: Path, ref: str) -> StoredRun:
    """The run ``ref`` names, as ``RunStore.run`` gives it."""
    with RunStore(path) as store:
        return store.run(ref)


def integrity(path: Path) -> str:
    """SQLite's ``PRAGMA integrity_check`` of the database: ``"ok"`` when it is intact."""
    db = sqlite3.connect(path)
    try:
        return db.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        db.close()


def query(path: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """The rows of one SQL query on the database, read with plain ``sqlite3``."""
    db = sqlite3.connect(path)
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


def start_writer(
    path: Path,
    run_id: str,
    num_steps: int,
    *,
    cwd: Path,
    stderr: Any,
    prefix: Sequence[str] = (),
    take_over: bool = False,
) -> subprocess.Popen[str]:
    """``local_store_writer.py`` in a new Python process (CPU-only JAX, no git repository around it).

    ``prefix`` runs it under another command (``unshare ...``); the process
    leads a session of its own, so ``os.killpg(process.pid, ...)`` reaches it
    whatever runs it.
    """
    return subprocess.Popen(
        [
            *prefix,
            sys.executable,
            str(WRITER),
            str(path),
            run_id,
            str(num_steps),
            *(["take-over"] if take_over else []),
        ],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
        start_new_session=True,
    )


def start_jsonl_writer(path: Path, ready_step: int, *, cwd: Path) -> subprocess.Popen[str]:
    """``jsonl_writer.py`` in a new Python process (CPU-only JAX) leading a session of its own, as ``start_writer``."""
    return subprocess.Popen(
        [sys.executable, str(JSONL_WRITER), str(path), str(ready_step)],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
        start_new_session=True,
    )


def read_step_lines(writer: subprocess.Popen[str], until: int) -> int:
    """Reads the steps ``local_store_writer.py`` prints (each committed) until ``until``; the last one read."""
    assert writer.stdout is not None
    last = -1
    while last < until:
        line = writer.stdout.readline()
        assert line, f"the writer exited early (exit {writer.poll()})"
        last = int(line)
    return last


def writer_rows(steps: range) -> list[dict[str, Any]]:
    """The history rows ``local_store_writer.py`` writes at ``steps``."""
    return [{"step": s, "i": s, "note": f"step {s}", "x": float(s)} for s in steps]
