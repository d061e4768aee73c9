"""LocalTracker against a real SQLite store: what the tracker adds to the store's writer.

Flattening and normalizing values, the steps of ``log`` calls (``commit=False``,
``step=None``, a refused report), how a run ends through ``set_status`` and
``jaxtrack.finish``, multi-process runs, ``type: local`` configs and run ids.
Everything is read back through :class:`~jaxtrack.store.RunStore`: no mocks.
The store's own behaviour (resuming, rewinding, durability, concurrent
writers, artifacts) is tested in ``tests/store``.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import socket
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxtrack
import jaxtrack as jt
from jaxtrack.store import RunStore
from jaxtrack.trackers.config import TrackerConfigError
from jaxtrack.trackers.local import LocalConfig, LocalTracker
from support.store import query, read_history, read_run

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

    history = read_history(path, "ingraph")
    assert [row["step"] for row in history] == [3, 5]
    assert history[0] == {"step": 3, "loss": 2.0, "train/sq": pytest.approx(14 / 3, rel=1e-6)}
    assert history[1] == {"step": 5, "loss": 4.5, "train/sq": 20.5, "lr": 0.5}
    assert read_run(path, "ingraph").status == "finished"


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
    assert read_history(path, "steps") == [
        {"step": 0, "a": 1.0, "b": 2.0},
        {"step": 1, "c": 3.0},
        {"step": 10, "d": 40.0, "e": 5.0},
        {"step": 11, "f": 6.0},
    ]
    assert query(path, "SELECT count(*) FROM superseded_scalars") == [(0,)]  # same step: nothing superseded


def test_a_metric_named_step_is_refused_so_it_cannot_hide_the_row_step(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    with LocalTracker(path, run_id="step-key") as tracker:
        with pytest.raises(ValueError, match="'step' is reserved"):
            tracker.log({"step": 999.0, "loss": 1.0}, step=5)
        tracker.log({"loss": 1.0}, step=5)
    assert read_history(path, "step-key") == [{"step": 5, "loss": 1.0}]


def test_refused_report_does_not_consume_a_step(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    with LocalTracker(path, run_id="refused") as tracker:
        tracker.log({"loss": 0.0})  # step 0
        with pytest.raises(TypeError, match="'bad'"):
            tracker.log({"bad": object()})
        tracker.log({"loss": 1.0})  # the step after the last one logged: 1
    assert [row["step"] for row in read_history(path, "refused")] == [0, 1]


def test_refused_report_writes_nothing_and_does_not_rewind(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    with LocalTracker(path, run_id="refused-early") as tracker:
        for step in range(3):
            tracker.log({"loss": float(step)}, step=step)
        with pytest.raises(TypeError, match="'group/bad'"):
            tracker.log({"fine": 1.0, "group": {"bad": object()}}, step=1)  # an earlier step, refused
    assert read_history(path, "refused-early") == [{"step": s, "loss": float(s)} for s in range(3)]
    assert query(path, "SELECT count(*) FROM superseded_scalars") == [(0,)]


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

    run = read_run(path, "composite")
    assert (run.status, run.sessions, run.last_step) == ("finished", 2, 6)
    steps, values = RunStore(path).scalars("composite", "loss")
    assert steps.tolist() == list(range(7))
    assert values.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 50.0, 60.0]


# ---- 3. how a run ends ---------------------------------------------------------------------------


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
    assert read_run(tmp_path / "runs.db", "status").status == "finished"


def test_finish_with_an_invalid_status_is_a_value_error(tmp_path: Path) -> None:
    tracker = jt.init_tracker({"type": "local", "path": str(tmp_path / "runs.db")}, run_id="bad-finish")
    with pytest.raises(ValueError, match="'crashed'"):
        jt.finish(status="crashed")
    assert jt.current_tracker() is tracker  # still current, still open
    jt.finish()
    assert read_run(tmp_path / "runs.db", "bad-finish").status == "finished"


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
        with pytest.raises(RuntimeError, match=r"run_id='done'\) is finished"):
            call()
    assert read_history(tmp_path / "runs.db", "done") == [{"step": 0, "loss": 1.0}]


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
    assert jaxtrack.run.current() is None

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
    assert jaxtrack.run.current() is None
    run = read_run(path, "latest")
    assert run.status == status
    assert run.summary == {"status": summary, "last_step": 3}
    assert [row["step"] for row in read_history(path, run.id)] == [1, 2, 3]


# ---- 4. multi-process JAX runs -------------------------------------------------------------------


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


# ---- 5. configuration and run ids ----------------------------------------------------------------


def test_local_config_from_yaml(tmp_path: Path) -> None:
    path = tmp_path / "yaml.db"
    config = jt.TrackerConfig.parse(f"type: local\npath: {path}\nname: from yaml\nproject: digits\nhistogram_bins: 8\n")
    assert config == LocalConfig(path=str(path), name="from yaml", project="digits", histogram_bins=8)
    with jt.init_tracker(f"type: local\npath: {path}\nproject: digits\nhistogram_bins: 8\n", run_id="y1") as tracker:
        assert isinstance(tracker, LocalTracker) and (tracker.path, tracker.histogram_bins) == (str(path), 8)
        jt.log({"w": np.arange(100.0)}, step=0)
    (row,) = read_history(path, "y1")
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
    assert read_history(path, "env-run") == [{"step": 0, "loss": 1.0}]
    with RunStore() as store:  # the reader's default too
        assert [run.id for run in store.runs()] == ["env-run"]


@pytest.mark.parametrize("where", ["path", "environment", "default"])
def test_a_relative_store_path_stays_where_the_run_started_after_a_chdir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    start, moved = tmp_path / "start", tmp_path / "moved"
    start.mkdir()
    moved.mkdir()
    (moved / "notes.txt").write_text("notes")
    monkeypatch.chdir(start)
    monkeypatch.delenv("JAXTRACK_STORE", raising=False)
    spec: dict[str, object] = {"type": "local"}
    if where == "path":
        spec["path"] = os.path.join("stores", "runs.db")
    elif where == "environment":
        monkeypatch.setenv("JAXTRACK_STORE", os.path.join("stores", "runs.db"))
    expected = start / ("runs/jaxtrack.db" if where == "default" else "stores/runs.db")
    tracker = jt.init_tracker(spec, run_id="rel")
    try:
        jt.log({"loss": 1.0}, step=0)
        os.chdir(moved)  # as Hydra does once the run has started
        jt.log_artifact("notes.txt", name="notes")
        jt.log({"loss": 0.5}, step=1)
    finally:
        jt.finish()
    assert isinstance(tracker, LocalTracker) and tracker.path == str(expected)
    assert sorted(p.name for p in moved.iterdir()) == ["notes.txt"]  # nothing landed in the new directory
    with RunStore(expected) as store:
        (artifact,) = store.artifacts("rel")
        assert store.history("rel") == [{"step": 0, "loss": 1.0}, {"step": 1, "loss": 0.5}]
    assert Path(artifact["path"]).is_relative_to(start) and Path(artifact["path"]).read_text() == "notes"


@pytest.mark.parametrize("run_id", ["../..", "../up", "a/b", "with space", ".hidden", ""])
def test_run_ids_that_are_not_safe_are_refused(tmp_path: Path, run_id: str) -> None:
    with pytest.raises(ValueError, match="run_id"):
        LocalTracker(tmp_path / "runs.db", run_id=run_id)
    assert not (tmp_path / "runs.db").exists()
