"""A local run store read back for tests, through ``RunStore`` and plain ``sqlite3``, and the writer process.

``start_writer`` starts ``local_store_writer.py`` as a separate Python
process, for the durability and concurrency tests; ``writer_rows`` are the
history rows it writes.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

from jaxtrack.store import RunStore, StoredRun

WRITER = Path(__file__).resolve().parent / "local_store_writer.py"


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


def start_writer(path: Path, run_id: str, num_steps: int, *, cwd: Path, stderr: Any) -> subprocess.Popen[str]:
    """``local_store_writer.py`` in a new Python process (CPU-only JAX, no git repository around it)."""
    return subprocess.Popen(
        [sys.executable, str(WRITER), str(path), run_id, str(num_steps)],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )


def writer_rows(steps: range) -> list[dict[str, Any]]:
    """The history rows ``local_store_writer.py`` writes at ``steps``."""
    return [{"step": s, "i": s, "note": f"step {s}", "x": float(s)} for s in steps]
