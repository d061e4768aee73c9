"""RunWriter against a real SQLite store, written by this process and by real child processes.

What ``LocalTracker`` (a tracker over a ``RunWriter``) and ``RunWriter`` itself
write is read back through :class:`~jaxtrack.store.RunStore` (and, where the
layout itself is the point, plain ``sqlite3``): no mocks. The durability and
concurrency tests start ``tests/support/local_store_writer.py`` as separate Python
processes, kill one with SIGKILL, and synchronise on the steps the writers
print, never on sleeps.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest

from jaxtrack.store import RunStore, RunWriter
from jaxtrack.store import writer as writer_module
from jaxtrack.trackers.local import LocalTracker
from jaxtrack.values import Histogram, Image
from support.store import integrity, query, read_history, read_run, start_writer, writer_rows

REPO_ROOT = Path(__file__).resolve().parents[2]


# ---- 1. the run's row: where it ran --------------------------------------------------------------


def _git_head(repo: Path) -> str | None:
    """The commit ``repo``'s HEAD names, read from ``.git`` without running git (None if it cannot be read)."""
    git_dir = repo / ".git"
    if not git_dir.is_dir():
        return None
    head = (git_dir / "HEAD").read_text().strip()
    if not head.startswith("ref: "):
        return head
    ref = head[len("ref: ") :]
    if (git_dir / ref).is_file():
        return (git_dir / ref).read_text().strip()
    packed = git_dir / "packed-refs"
    if packed.is_file():
        for line in packed.read_text().splitlines():
            if line.endswith(" " + ref):
                return line.split()[0]
    return None


@pytest.mark.skipif(
    shutil.which("git") is None or not (REPO_ROOT / ".git").exists(), reason="needs git and a git checkout"
)
def test_run_started_inside_a_git_checkout_records_its_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO_ROOT)
    path = tmp_path / "runs.db"
    with LocalTracker(path, run_id="git-run") as tracker:
        tracker.log({"loss": 1.0}, step=0)
    git = read_run(path, "git-run").git
    assert set(git) == {"commit", "branch", "dirty"}
    assert len(git["commit"]) == 40 and int(git["commit"], 16) >= 0
    assert isinstance(git["branch"], str) and git["branch"]
    assert isinstance(git["dirty"], bool)
    expected = _git_head(REPO_ROOT)
    if expected is not None:
        assert git["commit"] == expected


def test_run_started_outside_git_has_empty_git_info(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    outside = tmp_path / "not-a-repo"
    outside.mkdir()
    monkeypatch.chdir(outside)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # git must not find a repository above tmp_path
    with LocalTracker(tmp_path / "runs.db", run_id="no-git") as tracker:
        tracker.log({"loss": 1.0}, step=0)
    run = read_run(tmp_path / "runs.db", "no-git")
    assert run.git == {}
    assert Path(run.system["cwd"]).resolve() == outside.resolve()


# ---- 2. resuming and rewinding -------------------------------------------------------------------


def test_resumed_run_continues_with_merged_config_and_summary(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    with LocalTracker(path, run_id="resume", name="first name", project="p") as first:
        for _ in range(3):
            first.log({"loss": 1.0})  # steps 0..2
        first.log_hyperparameters({"lr": 0.1, "seed": 1})
        first.log_summary({"best": 1.0, "epoch": 1})
    assert first.resumed_step is None

    second = LocalTracker(path, run_id="resume")
    assert second.resumed_step == 2
    with RunStore(path) as store:
        during = store.run("resume")
    assert (during.status, during.sessions, during.end_time, during.pid) == ("running", 2, None, os.getpid())
    assert (during.name, during.project) == ("first name", "p")  # kept when the resume gives none
    second.log({"loss": 0.5})  # step 3
    second.log({"loss": 0.25}, commit=False)  # step 4, left open
    second.log({"acc": 0.9})  # step 4 too
    second.log_hyperparameters({"lr": 0.2, "batch": 32})
    second.log_summary({"epoch": 2, "final": 0.25})
    second.finish()

    run = read_run(path, "resume")
    assert (run.status, run.sessions, run.last_step) == ("finished", 2, 4)
    assert run.start_time <= during.start_time <= run.end_time  # the start is the first session's
    assert run.config == {"lr": 0.2, "seed": 1, "batch": 32}
    assert run.summary == {"best": 1.0, "epoch": 2, "final": 0.25}
    assert read_history(path, "resume") == [
        {"step": 0, "loss": 1.0},
        {"step": 1, "loss": 1.0},
        {"step": 2, "loss": 1.0},
        {"step": 3, "loss": 0.5},
        {"step": 4, "loss": 0.25, "acc": 0.9},
    ]


def test_resume_from_an_older_step_supersedes_the_later_values(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    with LocalTracker(path, run_id="rewind") as first:
        for step in range(10):
            first.log(
                {"loss": float(step), "old_only": step, "note": f"old {step}", "w": np.arange(step + 1.0)}, step=step
            )
    with LocalTracker(path, run_id="rewind") as second:
        assert second.resumed_step == 9
        for step in range(5, 8):
            second.log({"loss": 100.0 + step, "note": f"new {step}"}, step=step)

    with RunStore(path) as store:
        history = store.history("rewind")
        superseded = store.superseded("rewind")
        stats = store.metric_stats("rewind")
        run = store.run("rewind")
    assert [row["step"] for row in history] == list(range(8))
    for row in history[:5]:
        step = row["step"]
        assert set(row) == {"step", "loss", "old_only", "note", "w"}
        assert (row["loss"], row["old_only"], row["note"], row["w"].num) == (float(step), step, f"old {step}", step + 1)
    assert history[5:] == [{"step": s, "loss": 100.0 + s, "note": f"new {s}"} for s in range(5, 8)]

    old = {(r["key"], r["step"]): r["value"] for r in superseded}
    assert old == {
        **{("loss", s): float(s) for s in range(5, 10)},
        **{("old_only", s): s for s in range(5, 10)},
        **{("note", s): f"old {s}" for s in range(5, 10)},
    }
    assert all(r["superseded_at"] >= r["time"] for r in superseded)
    assert query(path, "SELECT step FROM superseded_histograms ORDER BY step") == [(s,) for s in range(5, 10)]
    assert query(path, "SELECT count(*) FROM histograms") == [(5,)]
    assert run.last_step == 7
    assert (stats["loss"]["count"], stats["loss"]["last_step"], stats["loss"]["last"]) == (8, 7, 107.0)
    assert (stats["old_only"]["count"], stats["old_only"]["last_step"]) == (5, 4)


def test_step_going_back_in_one_session_supersedes_too(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    with LocalTracker(path, run_id="back") as tracker:
        for step in range(5):
            tracker.log({"loss": float(step)}, step=step)
        tracker.log({"loss": -2.0}, step=2)
        tracker.log({"loss": -3.0})  # step=None continues after the step it went back to
    assert read_history(path, "back") == [
        {"step": 0, "loss": 0.0},
        {"step": 1, "loss": 1.0},
        {"step": 2, "loss": -2.0},
        {"step": 3, "loss": -3.0},
    ]
    assert sorted((r["step"], r["value"]) for r in RunStore(path).superseded("back")) == [
        (2, 2.0),
        (3, 3.0),
        (4, 4.0),
    ]


# ---- 3. crashes and concurrent writers -----------------------------------------------------------


def test_sigkill_leaves_an_intact_store_with_every_committed_report(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    with open(tmp_path / "writer.err", "w") as stderr:
        writer = start_writer(path, "sigkilled", 0, cwd=tmp_path, stderr=stderr)
    last_printed = -1
    try:
        assert writer.stdout is not None
        while last_printed < 200:
            line = writer.stdout.readline()
            assert line, f"the writer exited early: {(tmp_path / 'writer.err').read_text()}"
            last_printed = int(line)
        os.kill(writer.pid, signal.SIGKILL)
    finally:
        if writer.poll() is None:
            writer.kill()
        writer.wait()
        writer.stdout.close()
    assert writer.returncode == -signal.SIGKILL

    assert integrity(path) == "ok"
    assert query(path, "SELECT status, end_time FROM runs WHERE id = 'sigkilled'") == [("running", None)]
    run = read_run(path, "sigkilled")
    assert run.status == "killed"  # its process on this host is gone
    assert (run.pid, run.host) == (writer.pid, socket.gethostname())
    history = read_history(path, "sigkilled")
    last = history[-1]["step"]
    assert last >= last_printed and run.last_step == last
    assert history == writer_rows(range(last + 1))  # every committed report, no gap

    db = sqlite3.connect(path)
    db.execute("UPDATE runs SET host = 'another-host' WHERE id = 'sigkilled'")
    db.commit()
    db.close()
    assert read_run(path, "sigkilled").status == "running"  # a process on another host cannot be checked


def test_two_processes_write_one_store_at_once(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"  # created by whichever writer gets there first
    writers = [start_writer(path, run_id, 300, cwd=tmp_path, stderr=subprocess.PIPE) for run_id in ("proc-a", "proc-b")]
    outputs = [writer.communicate(timeout=240) for writer in writers]
    for writer, (out, err) in zip(writers, outputs, strict=True):
        assert writer.returncode == 0, err
        assert out.split() == [*map(str, range(300)), "done"]

    assert integrity(path) == "ok"
    with RunStore(path) as store:
        assert {run.id: (run.status, run.last_step) for run in store.runs()} == {
            "proc-a": ("finished", 299),
            "proc-b": ("finished", 299),
        }
        for run_id in ("proc-a", "proc-b"):
            assert store.history(run_id) == writer_rows(range(300))
    assert query(path, "SELECT count(*) FROM keys") == [(3,)]  # the two runs share their key names


def test_two_trackers_in_one_process_write_one_store_from_two_threads(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    trackers = [LocalTracker(path, run_id=f"thread-{i}") for i in range(2)]
    errors: list[BaseException] = []

    def write(tracker: LocalTracker, offset: float) -> None:
        try:
            for step in range(200):
                tracker.log({"x": offset + step, "shared": step}, step=step)
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            errors.append(error)

    threads = [threading.Thread(target=write, args=(t, 1000.0 * i)) for i, t in enumerate(trackers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for tracker in trackers:
        tracker.finish()
    assert errors == []
    for i in range(2):
        assert read_history(path, f"thread-{i}") == [{"step": s, "x": 1000.0 * i + s, "shared": s} for s in range(200)]
    assert integrity(path) == "ok"


# ---- 4. names from users: keys, artifact names ---------------------------------------------------


def test_odd_keys_are_stored_as_given(tmp_path: Path) -> None:
    path = tmp_path / "store" / "runs.db"
    metrics = {
        "../../etc/passwd": 1.0,
        "with space": 2.0,
        "ünïcødé/λ": 3.0,
        "quote'\"; DROP TABLE runs; --": 4.0,
        "emoji 🚀": "text value",
    }
    with LocalTracker(path, run_id="実験-1") as tracker:
        tracker.log(metrics, step=0)
        tracker.log_hyperparameters({"a b": {"c/d": 1}})
        tracker.log_summary({"../x": 1.0})
    with RunStore(path) as store:
        assert store.history("実験-1") == [{"step": 0, **metrics}]
        assert set(store.keys("実験-1")) == set(metrics)
        run = store.run("実験-1")
    assert (run.config, run.summary) == ({"a b/c/d": 1}, {"../x": 1.0})
    assert sorted(p.name for p in path.parent.iterdir() if not p.name.startswith("runs.db")) == []
    assert not (tmp_path / "etc").exists()


def test_missing_artifact_is_a_file_not_found_error(tmp_path: Path) -> None:
    with LocalTracker(tmp_path / "runs.db", run_id="art") as tracker:
        with pytest.raises(FileNotFoundError, match=r"missing\.bin"):
            tracker.log_artifact(tmp_path / "missing.bin")
    assert RunStore(tmp_path / "runs.db").artifacts("art") == []


def test_artifact_names_cannot_leave_the_artifacts_directory(tmp_path: Path) -> None:
    path = tmp_path / "store" / "runs.db"
    source = tmp_path / "payload.txt"
    source.write_text("payload")
    with LocalTracker(path, run_id="実験-2") as tracker:
        tracker.log_artifact(source, name="../../x")
        tracker.log_artifact(source, name="/etc/passwd")
    artifacts_dir = (path.parent / "artifacts" / "1-実験-2").resolve()
    with RunStore(path) as store:
        artifacts = store.artifacts("実験-2")
    assert [a["name"] for a in artifacts] == ["../../x", "/etc/passwd"]  # the names are kept as given
    for entry in artifacts:
        copied = Path(entry["path"]).resolve()
        assert copied.is_relative_to(artifacts_dir) and copied.read_text() == "payload"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["payload.txt", "store"]
    assert not (tmp_path / "x").exists()


def test_artifact_names_that_sanitise_alike_keep_their_own_files(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "weights.bin").write_bytes(b"A")
    (tmp_path / "b" / "weights.bin").write_bytes(b"B")
    with LocalTracker(path, run_id="names") as tracker:
        tracker.log_artifact(tmp_path / "a" / "weights.bin", name="model v1")
        tracker.log_artifact(tmp_path / "b" / "weights.bin", name="model_v1")
    contents = {a["name"]: Path(a["path"]).read_bytes() for a in RunStore(path).artifacts("names")}
    assert contents == {"model v1": b"A", "model_v1": b"B"}


def test_runs_whose_ids_sanitise_alike_keep_their_own_artifacts(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    source = tmp_path / "weights.bin"
    for run_id in ("run+1", "run_1"):
        source.write_text(run_id)
        with LocalTracker(path, run_id=run_id) as tracker:
            tracker.log_artifact(source, name="weights")
    with RunStore(path) as store:
        for run_id in ("run+1", "run_1"):
            (artifact,) = store.artifacts(run_id)
            assert Path(artifact["path"]).read_text() == run_id


# ---- 5. a RunWriter on its own -------------------------------------------------------------------


def test_run_writer_writes_normalized_values_at_the_steps_it_is_given(tmp_path: Path) -> None:
    path = tmp_path / "new" / "runs.db"  # the directory is created too
    pixels = np.full((2, 3, 3), 7, np.uint8)
    with RunWriter(path, run_id="direct", name="by hand", project="p") as writer:
        assert writer.resumed_step is None
        writer.write([("loss", 1.0), ("count", 3), ("note", "a"), ("img", Image(pixels))], step=0)
        writer.write([("loss", float("nan")), ("w", Histogram.from_array(np.arange(4.0), num_bins=2))], step=5)
    with RunStore(path) as store:
        run = store.run("direct")
        first, second = store.history("direct")
    assert (run.name, run.project, run.status, run.last_step, run.sessions) == ("by hand", "p", "finished", 5, 1)
    assert (first["step"], first["loss"], first["count"], first["note"]) == (0, 1.0, 3, "a")
    np.testing.assert_array_equal(first["img"].pixels, pixels[None])
    assert second["step"] == 5 and math.isnan(second["loss"]) and second["w"].bucket_counts.tolist() == [2, 2]


def test_run_writer_continues_a_run_and_keeps_its_name_and_project(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    with RunWriter(path, run_id="again", name="first", project="p") as writer:
        writer.write([("loss", 1.0)], step=3)
        writer.merge_config({"lr": 0.1})
        writer.merge_summary({"best": 1.0, "picture": Image(np.zeros((4, 5, 3), np.uint8))})
    with RunWriter(path, run_id="again") as writer:
        assert writer.resumed_step == 3
        writer.write([("loss", 0.5)], step=4)
        writer.merge_config({"batch": 8})
        writer.merge_summary({"best": 0.5})
    run = read_run(path, "again")
    assert (run.name, run.project, run.sessions, run.last_step) == ("first", "p", 2, 4)
    assert run.config == {"lr": 0.1, "batch": 8}
    assert run.summary == {"best": 0.5, "picture": "<image 4x5x3>"}


def test_run_writer_closes_the_run_failed_when_its_block_raises(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    with pytest.raises(ZeroDivisionError), RunWriter(path, run_id="broken") as writer:
        writer.write([("loss", 1.0)], step=0)
        _ = 1 / 0
    run = read_run(path, "broken")
    assert (run.status, run.last_step) == ("failed", 0) and run.end_time is not None


def test_run_writer_close_takes_only_an_end_status_and_once(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    writer = RunWriter(path, run_id="ends")
    for status in ("running", "done", ""):
        with pytest.raises(ValueError, match=repr(status)):
            writer.close(status)
    writer.close("killed")
    writer.close("finished")  # harmless: the run ended as killed
    writer.flush()  # harmless
    with pytest.raises(RuntimeError, match="'ends' is closed"):
        writer.write([("loss", 1.0)], step=0)
    assert read_run(path, "ends").status == "killed"


def test_run_writer_refuses_an_unsafe_run_id(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="run_id"):
        RunWriter(tmp_path / "runs.db", run_id="../up")
    assert not (tmp_path / "runs.db").exists()


def test_a_write_is_synced_to_the_disk_once_sync_secs_have_passed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "runs.db"
    with RunWriter(path, run_id="sync") as writer:
        statements: list[str] = []
        writer._db.set_trace_callback(statements.append)  # what the writer asks of SQLite
        monkeypatch.setattr(writer_module, "SYNC_SECS", 3600.0)
        writer.write([("loss", 1.0)], step=0)
        assert "PRAGMA synchronous = FULL" not in statements  # within the interval: WAL's NORMAL commit
        monkeypatch.setattr(writer_module, "SYNC_SECS", 0.0)
        writer.write([("loss", 2.0)], step=1)
        assert statements.count("PRAGMA synchronous = FULL") == 1
        assert statements[-1] == "PRAGMA synchronous = NORMAL"  # back to the cheap commits after it
    assert read_history(path, "sync") == [{"step": 0, "loss": 1.0}, {"step": 1, "loss": 2.0}]
