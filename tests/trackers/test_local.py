"""LocalTracker and RunStore against a real SQLite store, written by this process and by real child processes.

Everything is read back through :class:`~jaxtrack.RunStore` (and, where the
layout itself is the point, plain ``sqlite3``): no mocks. The durability and
concurrency tests start ``tests/support/local_store_writer.py`` as separate Python
processes, kill one with SIGKILL, and synchronise on the steps the writers
print, never on sleeps.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxtrack as jt
from jaxtrack import tracking
from jaxtrack.store import RunStore
from jaxtrack.trackers.config import TrackerConfigError
from jaxtrack.trackers.local import LocalConfig, LocalTracker

TESTS_DIR = Path(__file__).resolve().parents[1]
REPO_ROOT = TESTS_DIR.parent
WRITER = TESTS_DIR / "support" / "local_store_writer.py"


def _history(path: Path, run_id: str, keys: list[str] | None = None) -> list[dict[str, Any]]:
    with RunStore(path) as store:
        return store.history(run_id, keys)


def _run(path: Path, ref: str) -> Any:
    with RunStore(path) as store:
        return store.run(ref)


def _integrity(path: Path) -> str:
    db = sqlite3.connect(path)
    try:
        return db.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        db.close()


def _query(path: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(path)
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


def _start_writer(path: Path, run_id: str, num_steps: int, *, cwd: Path, stderr: Any) -> subprocess.Popen[str]:
    """``local_store_writer.py`` in a new Python process (CPU-only JAX, no git repository around it)."""
    return subprocess.Popen(
        [sys.executable, str(WRITER), str(path), run_id, str(num_steps)],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )


def _writer_rows(steps: range) -> list[dict[str, Any]]:
    return [{"step": s, "i": s, "note": f"step {s}", "x": float(s)} for s in steps]


# ---- 1. a run written through jaxtrack's functions, read back ------------------------------------


def test_round_trip_through_init_tracker_keeps_every_value_kind(tmp_path: Path) -> None:
    path = tmp_path / "store" / "runs.db"  # the directory is created too
    weights = np.random.default_rng(0).normal(size=1000)
    pixels = np.random.default_rng(1).integers(0, 256, size=(4, 5, 3), dtype=np.uint8)
    grey = np.array([[0.0, 0.5], [1.0, 0.25]])
    explicit = jt.Histogram(
        bucket_limits=np.array([0.0, 1.0, 2.0]),
        bucket_counts=np.array([3, 4]),
        min=0.0,
        max=2.0,
        num=7,
        sum=5.0,
        sum_squares=9.0,
    )
    tracker = jt.init_tracker(
        {"type": "local", "path": str(path), "name": "round trip", "project": "tests"}, run_id="rt-1"
    )
    assert isinstance(tracker, LocalTracker) and tracker.run_id == "rt-1"
    jt.log_hyperparameters({"optimizer": {"lr": 1e-3, "name": "adam"}, "layers": (64, 32), "seed": np.int64(0)})
    jt.log(
        {
            "int": 7,
            "big": 2**62,
            "neg_big": -(2**62),
            "float": 0.1,
            "nan": float("nan"),
            "pinf": math.inf,
            "ninf": -math.inf,
            "flag": True,
            "off": False,
            "np_f32": np.float32(0.5),
            "jax_i32": jnp.int32(-3),
            "jax_f32": jnp.float32(0.25),
            "note": "héllo wörld",
            "train": {"loss": 1.5, "acc": {"top1": 0.75}},
            "weights": weights,
            "explicit": explicit,
            "picture": jt.Image(pixels, caption="a caption"),
            "grey": jt.Image(grey),
        },
        step=3,
    )
    jt.log_summary({"best": {"loss": 0.25}, "epochs": 3, "picture": jt.Image(pixels)})
    artifact = tmp_path / "weights.bin"
    artifact.write_bytes(b"version one")
    jt.log_artifact(artifact, name="weights", type="model")
    artifact.write_bytes(b"version two")  # log_artifact waited: the first copy is already taken
    jt.log_artifact(artifact, name="weights", type="model")
    checkpoint = tmp_path / "checkpoint"
    (checkpoint / "state").mkdir(parents=True)
    (checkpoint / "meta.json").write_text("{}")
    (checkpoint / "state" / "params.bin").write_bytes(b"\x00\x01\x02")
    jt.log_artifact(checkpoint)
    jt.finish()

    with RunStore(path) as store:
        (row,) = store.history("rt-1")
        run = store.run("rt-1")
        keys = store.keys("rt-1")
        artifacts = store.artifacts("rt-1")
        loss_steps, loss_values = store.scalars("rt-1", "train/loss")

    assert row["step"] == 3
    for key, value in {"int": 7, "big": 2**62, "neg_big": -(2**62), "flag": 1, "off": 0, "jax_i32": -3}.items():
        assert row[key] == value and type(row[key]) is int, key
    for key, value in {"float": 0.1, "pinf": math.inf, "ninf": -math.inf, "np_f32": 0.5, "jax_f32": 0.25}.items():
        assert row[key] == value and type(row[key]) is float, key
    assert math.isnan(row["nan"])
    assert row["note"] == "héllo wörld"
    assert (row["train/loss"], row["train/acc/top1"]) == (1.5, 0.75)

    histogram = row["weights"]
    counts, edges = np.histogram(weights, bins=64, range=(weights.min(), weights.max()))
    np.testing.assert_array_equal(histogram.bucket_counts, counts)
    np.testing.assert_array_equal(histogram.bucket_limits, edges)
    assert (histogram.num, histogram.min, histogram.max) == (1000, weights.min(), weights.max())
    assert histogram.sum == pytest.approx(weights.sum()) and histogram.sum_squares == pytest.approx(
        np.square(weights).sum()
    )
    stored = row["explicit"]
    np.testing.assert_array_equal(stored.bucket_limits, [0.0, 1.0, 2.0])
    np.testing.assert_array_equal(stored.bucket_counts, [3, 4])
    assert (stored.min, stored.max, stored.num, stored.sum, stored.sum_squares) == (0.0, 2.0, 7, 5.0, 9.0)

    picture = row["picture"]
    assert isinstance(picture, jt.Image) and picture.caption == "a caption"
    np.testing.assert_array_equal(picture.pixels, pixels[None])
    np.testing.assert_array_equal(row["grey"].pixels, np.array([[0, 128], [255, 64]], np.uint8)[None, :, :, None])

    assert keys["train/loss"] == "scalar" and keys["note"] == "text"
    assert (keys["weights"], keys["explicit"], keys["picture"]) == ("histogram", "histogram", "image")
    assert loss_steps.tolist() == [3] and loss_values.tolist() == [1.5]

    assert run.config == {"optimizer/lr": 1e-3, "optimizer/name": "adam", "layers": [64, 32], "seed": 0}
    assert run.summary == {"best/loss": 0.25, "epochs": 3, "picture": "<image 4x5x3>"}
    assert (run.id, run.name, run.project, run.status, run.sessions, run.last_step) == (
        "rt-1",
        "round trip",
        "tests",
        "finished",
        1,
        3,
    )
    assert run.start_time <= run.end_time and run.duration >= 0.0
    assert (run.host, run.pid) == (socket.gethostname(), os.getpid())
    assert run.system["jax"] == jax.__version__ and run.system["jaxtrack"] == jt.__version__
    assert run.system["python"].count(".") == 2

    assert [(a["name"], a["version"], a["type"]) for a in artifacts] == [
        ("weights", 1, "model"),
        ("weights", 2, "model"),
        ("checkpoint", 1, None),
    ]
    store_dir = path.parent.resolve()
    for entry in artifacts:
        assert Path(entry["path"]).resolve().is_relative_to(store_dir / "artifacts" / "1-rt-1")
    assert Path(artifacts[0]["path"]).read_bytes() == b"version one"
    assert Path(artifacts[1]["path"]).read_bytes() == b"version two"
    copied = Path(artifacts[2]["path"])
    assert (copied / "meta.json").read_text() == "{}"
    assert (copied / "state" / "params.bin").read_bytes() == b"\x00\x01\x02"


def test_metric_stats_leave_nans_out_of_min_and_max(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    with LocalTracker(path, run_id="stats") as tracker:
        for step, value in enumerate([3.0, float("nan"), 1.0, 2.0]):
            tracker.log({"loss": value, "note": f"n{step}"}, step=step)
        tracker.log({"only_nan": float("nan")}, step=4)
    with RunStore(path) as store:
        stats = store.metric_stats("stats")
    assert stats["loss"] == {"count": 4, "min": 1.0, "max": 3.0, "last_step": 3, "last": 2.0}
    assert stats["note"] == {"count": 4, "last_step": 3, "last": "n3"}
    assert stats["only_nan"]["count"] == 1 and stats["only_nan"]["min"] is None
    assert math.isnan(stats["only_nan"]["last"])


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
    git = _run(path, "git-run").git
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
    run = _run(tmp_path / "runs.db", "no-git")
    assert run.git == {}
    assert Path(run.system["cwd"]).resolve() == outside.resolve()


def test_ingraph_metrics_reach_the_store_as_interval_means(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"

    @jt.jit
    def train_step(x):
        jt.jit_log({"loss": x, "train": {"sq": x * x}})
        return x + 1

    jt.init_tracker({"type": "local", "path": str(path)}, run_id="ingraph")
    x = jnp.float32(1.0)
    for _ in range(3):  # logs 1, 2, 3
        x = train_step(x)
    assert train_step.report(3)
    for _ in range(2):  # logs 4, 5
        x = train_step(x)
    assert train_step.report(5, extra={"lr": 0.5})
    jt.finish()

    history = _history(path, "ingraph")
    assert [row["step"] for row in history] == [3, 5]
    assert history[0] == {"step": 3, "loss": 2.0, "train/sq": pytest.approx(14 / 3, rel=1e-6)}
    assert history[1] == {"step": 5, "loss": 4.5, "train/sq": 20.5, "lr": 0.5}
    assert _run(path, "ingraph").status == "finished"


# ---- 2. steps ------------------------------------------------------------------------------------


def test_commit_false_keeps_the_step_open_and_step_none_continues(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    with LocalTracker(path, run_id="steps") as tracker:
        tracker.log({"a": 1.0}, commit=False)  # step 0, left open
        tracker.log({"b": 2.0})  # still step 0
        tracker.log({"c": 3.0})  # step 1
        tracker.log({"d": 4.0}, step=10, commit=False)
        tracker.log({"d": 40.0, "e": 5.0}, step=10)  # the same step again: the later value wins
        tracker.log({"f": 6.0})  # step 11
    assert _history(path, "steps") == [
        {"step": 0, "a": 1.0, "b": 2.0},
        {"step": 1, "c": 3.0},
        {"step": 10, "d": 40.0, "e": 5.0},
        {"step": 11, "f": 6.0},
    ]
    assert _query(path, "SELECT count(*) FROM superseded_scalars") == [(0,)]  # same step: nothing superseded


def test_a_metric_named_step_is_refused_so_it_cannot_hide_the_row_step(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    with LocalTracker(path, run_id="step-key") as tracker:
        with pytest.raises(ValueError, match="'step' is reserved"):
            tracker.log({"step": 999.0, "loss": 1.0}, step=5)
        tracker.log({"loss": 1.0}, step=5)
    assert _history(path, "step-key") == [{"step": 5, "loss": 1.0}]


def test_history_keys_limit_the_columns_and_rows(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    with LocalTracker(path, run_id="cols") as tracker:
        tracker.log({"train/loss": 1.0, "lr": 0.1}, step=0)
        tracker.log({"eval/loss": 2.0}, step=1)
        tracker.log({"train/loss": 0.5, "lr": 0.05}, step=2)
    assert _history(path, "cols", ["train/loss"]) == [{"step": 0, "train/loss": 1.0}, {"step": 2, "train/loss": 0.5}]
    assert _history(path, "cols", ["eval/loss", "lr"]) == [
        {"step": 0, "lr": 0.1},
        {"step": 1, "eval/loss": 2.0},
        {"step": 2, "lr": 0.05},
    ]


def test_refused_report_does_not_consume_a_step(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    with LocalTracker(path, run_id="refused") as tracker:
        tracker.log({"loss": 0.0})  # step 0
        with pytest.raises(TypeError, match="'bad'"):
            tracker.log({"bad": object()})
        tracker.log({"loss": 1.0})  # the step after the last one logged: 1
    assert [row["step"] for row in _history(path, "refused")] == [0, 1]


def test_refused_report_writes_nothing_and_does_not_rewind(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    with LocalTracker(path, run_id="refused-early") as tracker:
        for step in range(3):
            tracker.log({"loss": float(step)}, step=step)
        with pytest.raises(TypeError, match="'group/bad'"):
            tracker.log({"fine": 1.0, "group": {"bad": object()}}, step=1)  # an earlier step, refused
    assert _history(path, "refused-early") == [{"step": s, "loss": float(s)} for s in range(3)]
    assert _query(path, "SELECT count(*) FROM superseded_scalars") == [(0,)]


# ---- 3. resuming and rewinding -------------------------------------------------------------------


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

    run = _run(path, "resume")
    assert (run.status, run.sessions, run.last_step) == ("finished", 2, 4)
    assert run.start_time <= during.start_time <= run.end_time  # the start is the first session's
    assert run.config == {"lr": 0.2, "seed": 1, "batch": 32}
    assert run.summary == {"best": 1.0, "epoch": 2, "final": 0.25}
    assert _history(path, "resume") == [
        {"step": 0, "loss": 1.0},
        {"step": 1, "loss": 1.0},
        {"step": 2, "loss": 1.0},
        {"step": 3, "loss": 0.5},
        {"step": 4, "loss": 0.25, "acc": 0.9},
    ]


def test_resume_through_a_composite_continues_after_the_stored_step(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    spec = [{"type": "local", "path": str(path)}, {"type": "noop"}]
    jt.init_tracker(spec, run_id="composite")
    for step in range(5):
        jt.log({"loss": float(step)}, step=step)
    jt.finish()

    tracker = jt.init_tracker(spec, run_id="composite")
    assert isinstance(tracker, jt.CompositeTracker) and tracker.resumed_step == 4
    jt.log({"loss": 50.0})  # step 5
    jt.log({"loss": 60.0})  # step 6
    jt.finish()

    run = _run(path, "composite")
    assert (run.status, run.sessions, run.last_step) == ("finished", 2, 6)
    steps, values = RunStore(path).scalars("composite", "loss")
    assert steps.tolist() == list(range(7))
    assert values.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 50.0, 60.0]


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
    assert _query(path, "SELECT step FROM superseded_histograms ORDER BY step") == [(s,) for s in range(5, 10)]
    assert _query(path, "SELECT count(*) FROM histograms") == [(5,)]
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
    assert _history(path, "back") == [
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


# ---- 4. how a run ends ---------------------------------------------------------------------------


def test_set_status_and_finish_status_are_recorded(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    with LocalTracker(path, run_id="failed-run") as tracker:
        tracker.log({"loss": 1.0}, step=0)
        tracker.set_status("failed")
    jt.init_tracker({"type": "local", "path": str(path)}, run_id="killed-run")
    jt.log({"loss": 1.0}, step=0)
    jt.finish(status="killed")
    with RunStore(path) as store:
        assert {run.id: run.status for run in store.runs()} == {"failed-run": "failed", "killed-run": "killed"}
        assert all(run.end_time is not None for run in store.runs())


@pytest.mark.parametrize("status", ["running", "done", "FINISHED", ""])
def test_invalid_status_is_a_value_error_naming_it(tmp_path: Path, status: str) -> None:
    with LocalTracker(tmp_path / "runs.db", run_id="status") as tracker:
        with pytest.raises(ValueError, match=repr(status)):
            tracker.set_status(status)
    assert _run(tmp_path / "runs.db", "status").status == "finished"


def test_finish_with_an_invalid_status_is_a_value_error(tmp_path: Path) -> None:
    tracker = jt.init_tracker({"type": "local", "path": str(tmp_path / "runs.db")}, run_id="bad-finish")
    with pytest.raises(ValueError, match="'crashed'"):
        jt.finish(status="crashed")
    assert jt.current_tracker() is tracker  # still current, still open
    jt.finish()
    assert _run(tmp_path / "runs.db", "bad-finish").status == "finished"


def test_train_without_a_tracker_records_into_the_default_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "default.db"
    monkeypatch.setenv("JAXTRACK_STORE", str(path))
    caplog.set_level(logging.WARNING, logger="jaxtrack.callbacks.loop")

    def record(step: int, state: float) -> None:
        jt.log({"state": state}, step=step)

    final = jt.train(lambda state, batch: state + batch, 0.0, itertools.repeat(1.5), 4, callbacks=[record])
    assert final == 6.0
    assert tracking.current_or_none() is None

    with RunStore(path) as store:
        (run,) = store.runs()
        history = store.history(run.id)
    assert run.status == "finished"
    assert history == [{"step": s, "state": 1.5 * s} for s in range(1, 5)]
    (warning,) = [
        r.getMessage() for r in caplog.records if r.name == "jaxtrack.callbacks.loop" and r.levelno == logging.WARNING
    ]
    assert str(path) in warning and run.id in warning


@pytest.mark.parametrize(
    ("error", "status", "summary"),
    [(ValueError("boom"), "failed", "failed: ValueError"), (KeyboardInterrupt(), "killed", "interrupted")],
    ids=["exception", "ctrl-c"],
)
def test_train_that_raises_records_the_failure_and_propagates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: BaseException, status: str, summary: str
) -> None:
    path = tmp_path / "default.db"
    monkeypatch.setenv("JAXTRACK_STORE", str(path))

    def step_fn(state: int, batch: int) -> int:
        if state >= 3:
            raise error
        return state + batch

    def record(step: int, state: int) -> None:
        jt.log({"state": state}, step=step)

    with pytest.raises(type(error)):
        jt.train(step_fn, 0, itertools.repeat(1), 10, callbacks=[record])
    assert tracking.current_or_none() is None
    run = _run(path, "latest")
    assert run.status == status
    assert run.summary == {"status": summary, "last_step": 3}
    assert [row["step"] for row in _history(path, run.id)] == [1, 2, 3]


# ---- 5. crashes and concurrent writers -----------------------------------------------------------


def test_sigkill_leaves_an_intact_store_with_every_committed_report(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    with open(tmp_path / "writer.err", "w") as stderr:
        writer = _start_writer(path, "sigkilled", 0, cwd=tmp_path, stderr=stderr)
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

    assert _integrity(path) == "ok"
    assert _query(path, "SELECT status, end_time FROM runs WHERE id = 'sigkilled'") == [("running", None)]
    run = _run(path, "sigkilled")
    assert run.status == "killed"  # its process on this host is gone
    assert (run.pid, run.host) == (writer.pid, socket.gethostname())
    history = _history(path, "sigkilled")
    last = history[-1]["step"]
    assert last >= last_printed and run.last_step == last
    assert history == _writer_rows(range(last + 1))  # every committed report, no gap

    db = sqlite3.connect(path)
    db.execute("UPDATE runs SET host = 'another-host' WHERE id = 'sigkilled'")
    db.commit()
    db.close()
    assert _run(path, "sigkilled").status == "running"  # a process on another host cannot be checked


def test_two_processes_write_one_store_at_once(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"  # created by whichever writer gets there first
    writers = [
        _start_writer(path, run_id, 300, cwd=tmp_path, stderr=subprocess.PIPE) for run_id in ("proc-a", "proc-b")
    ]
    outputs = [writer.communicate(timeout=240) for writer in writers]
    for writer, (out, err) in zip(writers, outputs, strict=True):
        assert writer.returncode == 0, err
        assert out.split() == [*map(str, range(300)), "done"]

    assert _integrity(path) == "ok"
    with RunStore(path) as store:
        assert {run.id: (run.status, run.last_step) for run in store.runs()} == {
            "proc-a": ("finished", 299),
            "proc-b": ("finished", 299),
        }
        for run_id in ("proc-a", "proc-b"):
            assert store.history(run_id) == _writer_rows(range(300))
    assert _query(path, "SELECT count(*) FROM keys") == [(3,)]  # the two runs share their key names


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
        assert _history(path, f"thread-{i}") == [{"step": s, "x": 1000.0 * i + s, "shared": s} for s in range(200)]
    assert _integrity(path) == "ok"


def test_reader_sees_each_report_as_soon_as_log_returns(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    with LocalTracker(path, run_id="live") as tracker, RunStore(path) as store:
        for step in range(3):
            tracker.log({"loss": float(step)}, step=step)
            assert store.history("live")[-1] == {"step": step, "loss": float(step)}
            assert store.run("live").status == "running"
    assert _run(path, "live").status == "finished"


# ---- 6. multi-process JAX runs -------------------------------------------------------------------


def test_non_primary_process_writes_no_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jax, "process_index", lambda *args, **kwargs: 1)
    artifact = tmp_path / "notes.txt"
    artifact.write_text("x")
    store_dir = tmp_path / "store"

    tracker = LocalTracker(store_dir / "runs.db", run_id="worker-1")
    tracker.log({"loss": 1.0, "w": np.arange(4.0), "img": jt.Image(np.zeros((2, 2, 3), np.uint8))}, step=0)
    tracker.log_summary({"best": 1.0})
    tracker.log_hyperparameters({"lr": 0.1})
    tracker.log_artifact(artifact, name="notes")
    tracker.flush()
    tracker.set_status("failed")
    tracker.finish()

    assert not store_dir.exists()
    assert sorted(tmp_path.iterdir()) == [artifact]
    with pytest.raises(RuntimeError, match="finished"):
        tracker.log({"loss": 2.0})


# ---- 7. errors and look-ups ----------------------------------------------------------------------


def test_run_store_on_a_missing_path_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "missing.db"
    with pytest.raises(FileNotFoundError, match=r"missing\.db"):
        RunStore(missing)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        RunStore(tmp_path / "nowhere")  # not a file either
    assert not missing.parent.exists()  # reading creates nothing


def test_run_store_on_files_that_are_not_stores_is_a_value_error(tmp_path: Path) -> None:
    text = tmp_path / "notes.db"
    text.write_text("these are not the runs you are looking for\n" * 100)
    with pytest.raises(ValueError, match="not a jaxtrack run store"):
        RunStore(text)
    foreign = tmp_path / "foreign.db"
    db = sqlite3.connect(foreign)
    db.execute("CREATE TABLE things (x)")
    db.commit()
    db.close()
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
    db = sqlite3.connect(foreign)
    db.execute("CREATE TABLE things (x)")
    db.commit()
    db.close()
    with pytest.raises(ValueError):
        RunStore(foreign)
    assert _query(foreign, "PRAGMA journal_mode") == [("delete",)]


def test_tracker_refuses_a_foreign_database(tmp_path: Path) -> None:
    foreign = tmp_path / "app.db"
    db = sqlite3.connect(foreign)
    db.execute("CREATE TABLE users (name TEXT)")
    db.commit()
    db.close()
    with pytest.raises(ValueError, match="not a jaxtrack run store"):
        LocalTracker(foreign, run_id="r").finish()
    assert _query(foreign, "SELECT name FROM sqlite_master WHERE type = 'table'") == [("users",)]


def _three_runs(path: Path) -> None:
    for run_id, name in (("alpha-1", "first"), ("alpha-10", "second"), ("beta", "first")):
        with LocalTracker(path, run_id=run_id, name=name) as tracker:
            tracker.log({"loss": 1.0}, step=0)


def test_run_look_up_by_id_latest_prefix_and_name(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    _three_runs(path)
    with RunStore(path) as store:
        assert [run.id for run in store.runs()] == ["alpha-1", "alpha-10", "beta"]
        assert store.run("alpha-1").id == "alpha-1"  # an exact id wins over being a prefix of another
        assert store.run("latest").id == "beta"
        assert store.run("alpha-1").display_name == "first"
        assert store.run("b").id == "beta"  # a unique prefix
        assert store.run("second").id == "alpha-10"  # a name
        assert store.run("first").id == "beta"  # a name shared by runs: the latest
        assert store.history("b") == [{"step": 0, "loss": 1.0}]  # look-ups work wherever a run is named
        with pytest.raises(KeyError, match="ambiguous") as ambiguous:
            store.run("alpha")
        assert "alpha-1" in str(ambiguous.value) and "alpha-10" in str(ambiguous.value)
        with pytest.raises(KeyError, match="'gamma'") as unknown:
            store.run("gamma")
        assert all(run_id in str(unknown.value) for run_id in ("alpha-1", "alpha-10", "beta"))
        with pytest.raises(KeyError, match="did you mean 'beta'"):
            store.history("betta")


def test_run_look_up_in_a_store_without_runs(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    LocalTracker(path, run_id="gone").finish()
    db = sqlite3.connect(path)
    db.execute("DELETE FROM runs")
    db.commit()
    db.close()
    with RunStore(path) as store:
        assert store.runs() == []
        with pytest.raises(KeyError, match="has no runs"):
            store.run("latest")


def test_runs_filtered_by_project(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    for run_id, project in (("a", "vision"), ("b", "text"), ("c", "vision")):
        LocalTracker(path, run_id=run_id, project=project).finish()
    with RunStore(path) as store:
        assert [run.id for run in store.runs(project="vision")] == ["a", "c"]
        assert store.runs(project="audio") == []


def test_select_keys_with_names_globs_and_kinds(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    with LocalTracker(path, run_id="keys") as tracker:
        tracker.log(
            {"train": {"loss": 1.0, "acc": 0.5}, "eval": {"loss": 2.0}, "note": "hi", "w": np.arange(3.0)}, step=0
        )
    with RunStore(path) as store:
        assert store.keys("keys") == {
            "eval/loss": "scalar",
            "note": "text",
            "train/acc": "scalar",
            "train/loss": "scalar",
            "w": "histogram",
        }
        assert store.select_keys("keys", ["train/*"]) == ["train/acc", "train/loss"]
        assert store.select_keys("keys", ["*/loss"]) == ["eval/loss", "train/loss"]
        assert store.select_keys("keys", ["note", "train/loss", "train/*"]) == ["note", "train/loss", "train/acc"]
        assert store.select_keys("keys", ["*"], kind="scalar") == ["eval/loss", "train/acc", "train/loss"]
        assert store.select_keys("keys", ["[nw]*"]) == ["note", "w"]
        with pytest.raises(KeyError, match="did you mean 'train/loss'"):
            store.select_keys("keys", ["train/los"])
        with pytest.raises(KeyError, match="'test/\\*'"):
            store.select_keys("keys", ["test/*"])
        with pytest.raises(KeyError, match="no text key 'train/loss'"):
            store.select_keys("keys", ["train/loss"], kind="text")
        with pytest.raises(KeyError, match="no scalar key 'note'"):
            store.scalars("keys", "note")
        with pytest.raises(KeyError, match="no histogram key 'train/loss'"):
            store.histograms("keys", "train/loss")
        steps, histograms = store.histograms("keys", "w")
        assert steps.tolist() == [row["step"] for row in store.history("keys", keys=["w"])]
        assert all(isinstance(h, jt.Histogram) for h in histograms)


def test_logging_after_finish_is_a_runtime_error(tmp_path: Path) -> None:
    artifact = tmp_path / "a.txt"
    artifact.write_text("a")
    tracker = LocalTracker(tmp_path / "runs.db", run_id="done")
    tracker.log({"loss": 1.0}, step=0)
    tracker.finish()
    tracker.finish()  # harmless
    tracker.flush()  # harmless
    for call in (
        lambda: tracker.log({"loss": 2.0}, step=1),
        lambda: tracker.log_summary({"best": 1.0}),
        lambda: tracker.log_hyperparameters({"lr": 0.1}),
        lambda: tracker.log_artifact(artifact),
    ):
        with pytest.raises(RuntimeError, match="'done' is finished"):
            call()
    assert _history(tmp_path / "runs.db", "done") == [{"step": 0, "loss": 1.0}]


def test_missing_artifact_is_a_file_not_found_error(tmp_path: Path) -> None:
    with LocalTracker(tmp_path / "runs.db", run_id="art") as tracker:
        with pytest.raises(FileNotFoundError, match=r"missing\.bin"):
            tracker.log_artifact(tmp_path / "missing.bin")
    assert RunStore(tmp_path / "runs.db").artifacts("art") == []


# ---- 8. configuration ----------------------------------------------------------------------------


def test_local_config_from_yaml(tmp_path: Path) -> None:
    path = tmp_path / "yaml.db"
    config = jt.TrackerConfig.parse(f"type: local\npath: {path}\nname: from yaml\nproject: digits\nhistogram_bins: 8\n")
    assert config == LocalConfig(path=str(path), name="from yaml", project="digits", histogram_bins=8)
    with jt.init_tracker(f"type: local\npath: {path}\nproject: digits\nhistogram_bins: 8\n", run_id="y1") as tracker:
        assert isinstance(tracker, LocalTracker) and (tracker.path, tracker.histogram_bins) == (str(path), 8)
        jt.log({"w": np.arange(100.0)}, step=0)
    (row,) = _history(path, "y1")
    assert len(row["w"].bucket_counts) == 8 and row["w"].bucket_counts.sum() == 100
    assert [run.id for run in RunStore(path).runs(project="digits")] == ["y1"]


def test_local_config_misspelled_field_is_named(tmp_path: Path) -> None:
    with pytest.raises(TrackerConfigError, match=r"'paht'.*did you mean 'path'"):
        jt.TrackerConfig.parse(f"type: local\npaht: {tmp_path / 'x.db'}\n")
    assert not (tmp_path / "x.db").exists()


def test_local_config_without_path_uses_the_store_environment_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "env.db"
    monkeypatch.setenv("JAXTRACK_STORE", str(path))
    with jt.init_tracker(run_id="env-run") as tracker:  # no spec: the default local store
        assert isinstance(tracker, LocalTracker) and tracker.path == str(path)
        jt.log({"loss": 1.0}, step=0)
    assert _history(path, "env-run") == [{"step": 0, "loss": 1.0}]
    with RunStore() as store:  # the reader's default too
        assert [run.id for run in store.runs()] == ["env-run"]


# ---- 9. names from users: keys, run ids, artifact names ------------------------------------------


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


@pytest.mark.parametrize("run_id", ["../..", "../up", "a/b", "with space", ".hidden", ""])
def test_run_ids_that_are_not_safe_are_refused(tmp_path: Path, run_id: str) -> None:
    with pytest.raises(ValueError, match="run_id"):
        LocalTracker(tmp_path / "runs.db", run_id=run_id)
    assert not (tmp_path / "runs.db").exists()


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
