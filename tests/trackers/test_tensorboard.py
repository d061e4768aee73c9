"""TensorboardTracker, checked by reading its event files back with TensorBoard's own readers.

Everything written here is read back the way TensorBoard's server reads it:
``plugin_event_accumulator.EventAccumulator`` (which also applies TensorBoard's
purge rules for restarted runs), ``tensor_util.make_ndarray``, and, at the
end, a real ``tensorboard`` server over HTTP, with the Python loader
(``--load_fast=false``) and the Rust data server (``--load_fast=true``).
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image as PILImage
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

import jaxtrack
from jaxtrack.trackers.tensorboard import TensorboardTracker
from support.backends import (
    HPARAMS_TAG,
    tb_accumulator,
    tb_plain_hparams,
    tb_plugin,
    tb_scalars,
    tb_session_start_info,
    tb_tensors,
)
from support.links import artifact_with_links, assert_copied_without_following_links, secret_files

# ---- reading event files back --------------------------------------------------------------------


def _event_files(logdir: str | os.PathLike[str]) -> list[Path]:
    return sorted(Path(logdir).glob("events.out.tfevents.*"))


def _raw_events(logdir: str | os.PathLike[str]) -> list[Any]:
    """Every event of every event file in ``logdir``, in TensorBoard's file order, with no purge applied."""
    return [event for path in _event_files(logdir) for event in EventFileLoader(os.fspath(path)).Load()]


def _decode_png(data: bytes) -> np.ndarray:
    with PILImage.open(io.BytesIO(data)) as image:
        return np.asarray(image)


def _new_session(logdir: Path) -> TensorboardTracker:
    """A fresh tracker on ``logdir`` whose event file TensorBoard reads after the existing ones.

    TensorBoard reads a run's files in name order, and event files are named
    ``<seconds>.<host>.<pid>.<counter>`` with an unpadded per-process counter,
    so two files made in one second can sort out of order (``.10`` before
    ``.9``). A real resume (another process, a later second) never meets
    that; here it is avoided by waiting for the next second.
    """
    existing = set(_event_files(logdir))
    for _ in range(3):
        tracker = TensorboardTracker(logdir)
        (new_file,) = set(_event_files(logdir)) - existing
        if all(new_file.name > old.name for old in existing):
            return tracker
        tracker.finish()
        new_file.unlink()
        second = int(time.time())
        while int(time.time()) == second:
            time.sleep(0.05)
    raise AssertionError(f"could not make an event file that sorts after {sorted(existing)}")


def _write_resumed_run(logdir: Path) -> None:
    """Steps 0..9, then a second tracker session that goes back to step 5 and logs 5..7 anew."""
    with TensorboardTracker(logdir) as first:
        for step in range(10):
            first.log({"loss": float(step), "note": f"first {step}"}, step=step)
    with _new_session(logdir) as second:
        for step in range(5, 8):
            second.log({"loss": 100.0 + step, "note": f"second {step}"}, step=step)


RESUMED_TIMELINE = [(s, float(s)) for s in range(5)] + [(s, 100.0 + s) for s in range(5, 8)]
RESUMED_NOTES = [(s, f"first {s}") for s in range(5)] + [(s, f"second {s}") for s in range(5, 8)]


# ---- 1. scalars ----------------------------------------------------------------------------------


def test_scalars_of_every_kind_read_back_with_their_steps(tmp_path: Path) -> None:
    with TensorboardTracker(tmp_path) as tb:
        tb.log(
            {
                "py_float": 0.25,
                "py_int": 7,
                "py_bool": True,
                "np_float32": np.float32(0.1),
                "np_int64": np.int64(-3),
                "np_0d": np.array(2.5),
                "jax_float32": jnp.float32(0.375),
                "jax_int32": jnp.int32(11),
                "train": {"loss": 1.5, "metrics": {"acc": 0.875}},
            },
            step=3,
        )
    acc = tb_accumulator(tmp_path)

    expected = {
        "py_float": 0.25,
        "py_int": 7.0,
        "py_bool": 1.0,
        "np_float32": float(np.float32(0.1)),
        "np_int64": -3.0,
        "np_0d": 2.5,
        "jax_float32": 0.375,
        "jax_int32": 11.0,
        "train/loss": 1.5,
        "train/metrics/acc": 0.875,
    }
    assert set(expected) <= set(acc.Tags()["tensors"])
    assert "train" not in acc.Tags()["tensors"]
    for tag, value in expected.items():
        assert tb_scalars(acc, tag) == [(3, value)], tag
        assert tb_plugin(acc, tag) == "scalars", tag


def test_scalars_are_float32_as_tensorboard_reads_them_and_steps_are_int64(tmp_path: Path) -> None:
    # float32 is what tf.summary.scalar writes and the only scalar dtype the Rust data server reads.
    big_step = 2**40 + 3
    with TensorboardTracker(tmp_path) as tb:
        tb.log({"precise": 1.0 + 1e-9, "third": 1 / 3, "inf": float("inf")}, step=0)
        tb.log({"precise": 2.5}, step=big_step)
        with pytest.raises(ValueError, match=r"'huge'.*float32"):
            tb.log({"huge": 1e300}, step=1)
    acc = tb_accumulator(tmp_path)
    assert tb_scalars(acc, "precise") == [(0, 1.0), (big_step, 2.5)]
    assert tb_scalars(acc, "third") == [(0, float(np.float32(1 / 3)))]
    assert tb_scalars(acc, "inf") == [(0, float("inf"))]
    assert "huge" not in acc.Tags()["tensors"]


def test_step_none_follows_the_step_counter_rule(tmp_path: Path) -> None:
    with TensorboardTracker(tmp_path) as tb:
        tb.log({"a": 1.0})  # 0
        tb.log({"a": 2.0})  # 1
        tb.log({"a": 3.0}, commit=False)  # 2, kept open
        tb.log({"b": 4.0})  # 2 again
        tb.log({"a": 5.0})  # 3
        tb.log({"a": 6.0}, step=10)
        tb.log({"a": 7.0})  # 11
    acc = tb_accumulator(tmp_path)
    assert tb_scalars(acc, "a") == [(0, 1.0), (1, 2.0), (2, 3.0), (3, 5.0), (10, 6.0), (11, 7.0)]
    assert tb_scalars(acc, "b") == [(2, 4.0)]


# ---- 2. histograms -------------------------------------------------------------------------------


def test_arrays_become_histograms_over_their_finite_elements(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    matrix = rng.normal(size=(8, 16))
    matrix[0, 0], matrix[1, 1], matrix[2, 2] = np.nan, np.inf, -np.inf
    vector = np.arange(10.0)
    with TensorboardTracker(tmp_path, histogram_bins=8) as tb:
        tb.log({"weights": {"vector": vector, "matrix": matrix}, "device": jnp.arange(6.0).reshape(2, 3)}, step=4)
    acc = tb_accumulator(tmp_path)

    for tag, source in [("weights/vector", vector), ("weights/matrix", matrix), ("device", np.arange(6.0))]:
        assert tb_plugin(acc, tag) == "histograms", tag
        ((step, buckets),) = tb_tensors(acc, tag)
        assert step == 4
        assert buckets.shape == (8, 3), tag
        left, right, counts = buckets.T
        finite = source[np.isfinite(source)]
        assert counts.sum() == finite.size, tag
        assert left[0] == finite.min() and right[-1] == finite.max(), tag
        np.testing.assert_array_equal(left[1:], right[:-1])
        assert np.all(right > left), tag
    assert tb_tensors(acc, "weights/matrix")[0][1][:, 2].sum() == 8 * 16 - 3


def test_explicit_histogram_is_written_as_given(tmp_path: Path) -> None:
    histogram = jaxtrack.Histogram(
        bucket_limits=np.array([-1.0, 0.0, 2.5, 4.0]),
        bucket_counts=np.array([3, 0, 9]),
        min=-1.0,
        max=4.0,
        num=12,
        sum=20.0,
        sum_squares=60.0,
    )
    with TensorboardTracker(tmp_path) as tb:
        tb.log({"dist": histogram}, step=2)
    acc = tb_accumulator(tmp_path)
    assert tb_plugin(acc, "dist") == "histograms"
    ((step, buckets),) = tb_tensors(acc, "dist")
    assert step == 2
    np.testing.assert_array_equal(buckets, [[-1.0, 0.0, 3.0], [0.0, 2.5, 0.0], [2.5, 4.0, 9.0]])


# ---- 3. text -------------------------------------------------------------------------------------


def test_strings_go_to_the_text_plugin(tmp_path: Path) -> None:
    note = "warm-up done: loss < 0.5 ✓\nsecond line"
    with TensorboardTracker(tmp_path) as tb:
        tb.log({"notes": {"phase": note}}, step=1)
    acc = tb_accumulator(tmp_path)
    assert tb_plugin(acc, "notes/phase") == "text"
    ((step, text),) = tb_tensors(acc, "notes/phase")
    assert step == 1
    assert text.item().decode("utf-8") == note


# ---- 4. images -----------------------------------------------------------------------------------


def test_images_are_pngs_with_the_logged_pixels(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, size=(4, 5, 3), dtype=np.uint8)
    grey = rng.random((3, 7))
    batch = rng.integers(0, 256, size=(2, 6, 2, 4), dtype=np.uint8)  # two RGBA images, 6 high, 2 wide
    with TensorboardTracker(tmp_path) as tb:
        tb.log(
            {
                "rgb": jaxtrack.Image(rgb, caption="an RGB picture"),
                "grey": jaxtrack.Image(grey),
                "batch": jaxtrack.Image(jnp.asarray(batch)),
            },
            step=5,
        )
    acc = tb_accumulator(tmp_path)

    def images(tag: str) -> tuple[int, int, list[np.ndarray]]:
        assert tb_plugin(acc, tag) == "images"
        ((step, tensor),) = tb_tensors(acc, tag)
        assert step == 5
        assert tensor.ndim == 1
        width, height = int(tensor[0]), int(tensor[1])
        return width, height, [_decode_png(png) for png in tensor[2:]]

    width, height, pictures = images("rgb")
    assert (width, height) == (5, 4)
    assert len(pictures) == 1
    np.testing.assert_array_equal(pictures[0], rgb)
    assert acc.SummaryMetadata("rgb").summary_description == "an RGB picture"

    width, height, pictures = images("grey")
    assert (width, height) == (7, 3)
    assert len(pictures) == 1
    np.testing.assert_array_equal(pictures[0], np.round(grey * 255).astype(np.uint8))

    width, height, pictures = images("batch")
    assert (width, height) == (2, 6)
    assert len(pictures) == 2
    for picture, expected in zip(pictures, batch, strict=True):
        np.testing.assert_array_equal(picture, expected)


# ---- 5. hyperparameters --------------------------------------------------------------------------


def test_hyperparameters_reach_the_hparams_plugin_with_their_types(tmp_path: Path) -> None:
    logdir = tmp_path / "trial-7"
    with TensorboardTracker(logdir) as tb:
        tb.log_hyperparameters(
            {
                "lr": 1e-3,
                "batch_size": 32,
                "optimizer": {"name": "adam", "nesterov": True, "decay": np.float32(0.5)},
                "layers": [64, 64],
                "warmup": jnp.int32(100),
                "huge": 2**60,
            }
        )
        tb.log({"loss": 1.0}, step=0)
    info = tb_session_start_info(logdir)
    assert tb_plain_hparams(info) == {
        "lr": ("number_value", 1e-3),
        "batch_size": ("number_value", 32.0),
        "optimizer/name": ("string_value", "adam"),
        "optimizer/nesterov": ("bool_value", True),
        "optimizer/decay": ("number_value", 0.5),
        "layers": ("string_value", "[64, 64]"),
        "warmup": ("number_value", 100.0),
        "huge": ("string_value", str(2**60)),
    }
    assert info.group_name == "trial-7"


def test_second_hyperparameters_call_merges_with_the_first(tmp_path: Path) -> None:
    with TensorboardTracker(tmp_path) as tb:
        tb.log_hyperparameters({"lr": 0.1, "model": {"width": 128}})
        tb.log_hyperparameters({"seed": 7, "model": {"width": 256}})
    assert tb_plain_hparams(tb_session_start_info(tmp_path)) == {
        "lr": ("number_value", 0.1),
        "model/width": ("number_value", 256.0),
        "seed": ("number_value", 7.0),
    }


# ---- 6. resumed runs and steps that go back ------------------------------------------------------


def test_resumed_run_replaces_the_old_timeline_from_the_resume_step(tmp_path: Path) -> None:
    _write_resumed_run(tmp_path)
    assert len(_event_files(tmp_path)) == 2
    acc = tb_accumulator(tmp_path)
    assert tb_scalars(acc, "loss") == RESUMED_TIMELINE
    assert [(step, text.item().decode()) for step, text in tb_tensors(acc, "note")] == RESUMED_NOTES


def test_step_going_back_in_one_tracker_drops_the_later_steps(tmp_path: Path) -> None:
    with TensorboardTracker(tmp_path) as tb:
        for step in range(5):
            tb.log({"loss": float(step), "other": -float(step)}, step=step)
        tb.log({"loss": 50.0}, step=2)
        tb.log({"loss": 60.0})  # continues at 3
    acc = tb_accumulator(tmp_path)
    assert tb_scalars(acc, "loss") == [(0, 0.0), (1, 1.0), (2, 50.0), (3, 60.0)]
    # The restart drops every series from step 2 on, not only the one logged again.
    assert tb_scalars(acc, "other") == [(0, -0.0), (1, -1.0)]


# ---- 7. summaries and artifacts ------------------------------------------------------------------


def test_log_summary_writes_at_the_latest_step(tmp_path: Path) -> None:
    with TensorboardTracker(tmp_path) as tb:
        tb.log_summary({"before_any_step": 1.0})
        for step in range(4):
            tb.log({"loss": float(step)}, step=step)
        tb.log_summary({"best": {"loss": 0.125}})
    acc = tb_accumulator(tmp_path)
    assert tb_scalars(acc, "best/loss") == [(3, 0.125)]
    assert tb_scalars(acc, "before_any_step") == [(0, 1.0)]
    assert tb_scalars(acc, "loss") == [(s, float(s)) for s in range(4)]


def test_log_artifact_copies_files_and_directories_into_the_run(tmp_path: Path) -> None:
    sources = tmp_path / "sources"
    (sources / "ckpt" / "nested").mkdir(parents=True)
    (sources / "ckpt" / "params.bin").write_bytes(b"\x00\x01weights")
    (sources / "ckpt" / "nested" / "opt.txt").write_text("optimizer state")
    (sources / "notes.txt").write_text("hello")
    logdir = tmp_path / "runs" / "r"

    with TensorboardTracker(logdir) as tb:
        tb.log({"loss": 1.0}, step=6)
        tb.log_artifact(sources / "notes.txt")
        tb.log_artifact(sources / "ckpt", name="model checkpoint", type="model")
        tb.log_artifact(sources / "notes.txt", name="../../evil")

    artifacts = logdir / "artifacts"
    assert (artifacts / "notes.txt").read_text() == "hello"
    assert (artifacts / "model_checkpoint" / "params.bin").read_bytes() == b"\x00\x01weights"
    assert (artifacts / "model_checkpoint" / "nested" / "opt.txt").read_text() == "optimizer state"
    assert (artifacts / "evil.txt").read_text() == "hello"  # a name without a suffix keeps the file's
    # Nothing escaped the run directory.
    outside = {p for p in tmp_path.rglob("*") if p.is_file()} - set(sources.rglob("*"))
    assert all(logdir in p.parents for p in outside), sorted(outside)
    assert not (tmp_path / "evil").exists() and not (tmp_path / "runs" / "evil").exists()

    acc = tb_accumulator(logdir)
    ((step, note),) = tb_tensors(acc, "artifacts/model_checkpoint")
    assert step == 6
    assert "model" in note.item().decode() and "artifacts/model_checkpoint" in note.item().decode()
    assert str(tmp_path) not in note.item().decode()  # the source's name, not a path of this machine


def test_log_configuration_keeps_a_yaml_file_with_the_run(tmp_path: Path) -> None:
    with jaxtrack.init_tracker({"type": "tensorboard", "logdir": str(tmp_path)}, run_id="cfg") as tracker:
        jaxtrack.log_configuration({"lr": 0.1, "layers": [2, 3]})
        logdir = tracker.logdir
    assert (Path(logdir) / "artifacts" / "config.yaml").read_text() == "lr: 0.1\nlayers:\n- 2\n- 3\n"
    ((_, note),) = tb_tensors(tb_accumulator(Path(logdir)), "artifacts/config.yaml")
    assert "jaxtrack-config-" not in note.item().decode()  # the temporary file it was written to is gone


def test_log_artifact_replaces_an_earlier_directory_of_the_same_name(tmp_path: Path) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir()
    new.mkdir()
    (old / "stale.txt").write_text("stale")
    (new / "fresh.txt").write_text("fresh")
    logdir = tmp_path / "run"
    with TensorboardTracker(logdir) as tb:
        tb.log_artifact(old, name="data")
        tb.log_artifact(new, name="data")
    assert sorted(p.name for p in (logdir / "artifacts" / "data").iterdir()) == ["fresh.txt"]


def test_log_artifact_follows_no_link_out_of_a_directory_and_finds_loops_at_once(tmp_path: Path) -> None:
    artifact = artifact_with_links(tmp_path / "sources", loops=True)
    logdir = tmp_path / "runs" / "r"
    with pytest.warns(jaxtrack.ArtifactWarning) as caught, TensorboardTracker(logdir) as tb:
        tb.log_artifact(artifact.root, name="checkpoint")
    messages = " ".join(str(w.message) for w in caught)
    assert all(repr(relative) in messages for relative in artifact.refused), messages
    assert_copied_without_following_links(logdir / "artifacts" / "checkpoint", artifact)
    assert secret_files(logdir) == []


def test_a_planted_artifacts_link_in_the_logdir_is_refused(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    logdir, elsewhere = tmp_path / "r", tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "notes.txt").write_text("notes")
    with pytest.warns(jaxtrack.DataLossWarning, match=r"tensorboard\.log_artifact failed x1"):
        with TensorboardTracker(logdir) as tb:
            (logdir / "artifacts").symlink_to(elsewhere, target_is_directory=True)
            tb.log_artifact(tmp_path / "notes.txt")  # the failure is counted; training would go on
    assert list(elsewhere.iterdir()) == []
    assert "UnsafePathError" in caplog.text and f"{logdir / 'artifacts'}' is a link to" in caplog.text


def test_a_relative_logdir_stays_where_the_run_started_after_a_chdir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    start, moved = tmp_path / "start", tmp_path / "moved"
    start.mkdir()
    moved.mkdir()
    (moved / "notes.txt").write_text("notes")
    monkeypatch.chdir(start)
    tracker = jaxtrack.init_tracker({"type": "tensorboard", "logdir": "tblogs"}, run_id="rel")
    try:
        jaxtrack.log({"loss": 1.0}, step=0)
        os.chdir(moved)  # as Hydra does once the run has started
        jaxtrack.log_artifact("notes.txt", name="notes")
        jaxtrack.log({"loss": 0.5}, step=1)
    finally:
        jaxtrack.finish()
    assert tracker.logdir == str(start / "tblogs" / "rel")
    assert (start / "tblogs" / "rel" / "artifacts" / "notes.txt").read_text() == "notes"
    assert sorted(p.name for p in moved.iterdir()) == ["notes.txt"]
    assert tb_scalars(tb_accumulator(start / "tblogs" / "rel"), "loss") == [(0, 1.0), (1, 0.5)]


# ---- 8. finishing --------------------------------------------------------------------------------


def test_flush_makes_values_readable_while_the_tracker_is_open(tmp_path: Path) -> None:
    tb = TensorboardTracker(tmp_path, flush_secs=3600)
    try:
        tb.log({"loss": 0.5}, step=1)
        tb.flush()
        assert tb_scalars(tb_accumulator(tmp_path), "loss") == [(1, 0.5)]
    finally:
        tb.finish()


def test_finish_flushes_is_idempotent_and_closes_the_tracker(tmp_path: Path) -> None:
    artifact = tmp_path / "artifact.txt"
    artifact.write_text("x")
    logdir = tmp_path / "run"
    tb = TensorboardTracker(logdir, flush_secs=3600)
    for step in range(3):
        tb.log({"loss": float(step)}, step=step)
    tb.finish()
    # Readable at once: finish() wrote everything out.
    assert tb_scalars(tb_accumulator(logdir), "loss") == [(0, 0.0), (1, 1.0), (2, 2.0)]
    tb.finish()
    tb.flush()  # harmless after finish

    calls: list[Callable[[], None]] = [
        lambda: tb.log({"loss": 9.0}, step=9),
        lambda: tb.log_summary({"best": 0.0}),
        lambda: tb.log_hyperparameters({"lr": 0.1}),
        lambda: tb.log_artifact(artifact),
    ]
    for call in calls:
        with pytest.raises(RuntimeError, match="finished") as raised:
            call()
        assert str(logdir) in str(raised.value)
    assert not (logdir / "artifacts").exists()
    assert tb_scalars(tb_accumulator(logdir), "loss") == [(0, 0.0), (1, 1.0), (2, 2.0)]


def test_with_block_finishes_the_tracker_even_on_error(tmp_path: Path) -> None:
    with TensorboardTracker(tmp_path, flush_secs=3600) as tb:
        tb.log({"loss": 0.25}, step=0)
    assert tb_scalars(tb_accumulator(tmp_path), "loss") == [(0, 0.25)]
    with pytest.raises(RuntimeError, match="finished"):
        tb.log({"loss": 1.0}, step=1)

    other = tmp_path / "other"
    with pytest.raises(KeyError, match="boom"), TensorboardTracker(other, flush_secs=3600) as tb2:
        tb2.log({"loss": 0.75}, step=0)
        raise KeyError("boom")
    assert tb_scalars(tb_accumulator(other), "loss") == [(0, 0.75)]
    with pytest.raises(RuntimeError, match="finished"):
        tb2.log({"loss": 1.0}, step=1)


# ---- 9. bad values -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad_value", "message"),
    [
        (object(), "cannot log a value of type object"),
        (np.array([1 + 2j, 3j]), "complex"),
        (complex(1, 2), "cannot log a value of type complex"),
    ],
    ids=["object", "complex-array", "complex-scalar"],
)
def test_bad_value_raises_type_error_naming_the_key_and_writes_nothing(
    tmp_path: Path, bad_value: Any, message: str
) -> None:
    with TensorboardTracker(tmp_path) as tb:
        for step in range(3):
            tb.log({"loss": float(step)}, step=step)
        with pytest.raises(TypeError, match=message) as raised:
            tb.log({"fine": 1.0, "group": {"bad": bad_value}, "also_fine": "text"}, step=7)
        assert "'group/bad'" in str(raised.value)
        # A bad value at an earlier step must not write a restart either.
        with pytest.raises(TypeError, match="'bad'"):
            tb.log({"fine": 1.0, "bad": bad_value}, step=1)
        tb.log({"loss": 3.0}, step=3)

    events = _raw_events(tmp_path)
    assert not [e for e in events if e.step == 7]
    assert 1 not in [e.step for e in events if e.HasField("session_log")]  # no restart at the failed step
    tags = {value.tag for e in events if e.HasField("summary") for value in e.summary.value}
    assert tags == {"loss"}
    assert tb_scalars(tb_accumulator(tmp_path), "loss") == [(s, float(s)) for s in range(4)]


def test_failed_log_does_not_consume_a_step(tmp_path: Path) -> None:
    with TensorboardTracker(tmp_path) as tb:
        tb.log({"loss": 0.0})  # step 0
        with pytest.raises(TypeError, match="'bad'"):
            tb.log({"bad": object()})  # nothing logged
        tb.log({"loss": 1.0})  # the next step after the last one logged: 1
    assert tb_scalars(tb_accumulator(tmp_path), "loss") == [(0, 0.0), (1, 1.0)]


# ---- 10. config ----------------------------------------------------------------------------------


def test_init_tracker_from_config_writes_under_logdir_run_id(tmp_path: Path) -> None:
    tracker = jaxtrack.init_tracker({"type": "tensorboard", "logdir": str(tmp_path)}, run_id="r1")
    try:
        assert isinstance(tracker, TensorboardTracker)
        assert jaxtrack.current_tracker() is tracker
        assert Path(tracker.logdir) == tmp_path / "r1"
        jaxtrack.log({"train": {"loss": 0.5}}, step=2)
        jaxtrack.log_hyperparameters({"lr": 0.01})
    finally:
        jaxtrack.finish()
    assert _event_files(tmp_path / "r1")
    assert not _event_files(tmp_path)
    acc = tb_accumulator(tmp_path / "r1")
    assert tb_scalars(acc, "train/loss") == [(2, 0.5)]
    assert tb_plain_hparams(tb_session_start_info(tmp_path / "r1")) == {"lr": ("number_value", 0.01)}
    with pytest.raises(RuntimeError, match="finished"):
        tracker.log({"loss": 1.0})


# ---- 11. no TensorFlow, no PyTorch ---------------------------------------------------------------


def test_writing_imports_neither_tensorflow_nor_torch(tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        import json, sys
        import numpy as np
        import jaxtrack
        from jaxtrack.trackers.tensorboard import TensorboardTracker

        with TensorboardTracker(sys.argv[1]) as tb:
            tb.log_hyperparameters({"lr": 0.1, "name": "x"})
            tb.log({"loss": 0.5, "note": "hi", "w": np.arange(5.0),
                    "img": jaxtrack.Image(np.zeros((2, 2, 3), np.uint8))}, step=1)
            tb.log({"loss": 0.25}, step=0)
            tb.log_summary({"best": 0.25})
        print(json.dumps(sorted(m for m in ("tensorflow", "torch", "tensorboardX") if m in sys.modules)))
        """
    )
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120, env=env, check=False
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
    acc = tb_accumulator(tmp_path)
    assert {"loss", "note", "w", "img", "best", HPARAMS_TAG} <= set(acc.Tags()["tensors"])


# ---- 12. the real TensorBoard server -------------------------------------------------------------

SERVER_HPARAMS = {"lr": 0.001, "optimizer": {"name": "adam"}, "use_bias": True, "layers": [64, 64]}
SERVER_LOSSES = [1.0 / (step + 1) for step in range(5)]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _Server:
    def __init__(self, base: str, mode: str) -> None:
        self.base, self.mode = base, mode

    def get(self, path: str, **query: str) -> Any:
        url = f"{self.base}{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.load(response)

    def post(self, path: str, body: Any) -> Any:
        request = urllib.request.Request(
            f"{self.base}{path}",
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)

    def text(self, run: str, tag: str) -> list[tuple[int, str]]:
        try:
            entries = self.get("/data/plugin/text/text", run=run, tag=tag)
        except urllib.error.HTTPError:
            return []
        return [(entry["step"], entry["text"]) for entry in entries]

    def scalars(self, run: str, tag: str, *, expected_points: int, wait_s: float = 3.0) -> list[tuple[int, float]]:
        """The scalar series, polled briefly (bounded) in case the server is mid-reload."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                points = [
                    (step, value) for _, step, value in self.get("/data/plugin/scalars/scalars", run=run, tag=tag)
                ]
            except urllib.error.HTTPError:
                points = []
            if len(points) >= expected_points or time.monotonic() > deadline:
                return points
            time.sleep(0.2)


def _rust_server_available() -> bool:
    try:
        import tensorboard_data_server
    except ImportError:
        return False
    binary = tensorboard_data_server.server_binary()
    return binary is not None and os.access(binary, os.X_OK)


@pytest.fixture(
    scope="module",
    params=[
        "false",
        pytest.param(
            "true",
            marks=pytest.mark.skipif(not _rust_server_available(), reason="tensorboard_data_server not installed"),
        ),
    ],
    ids=["python-loader", "rust-data-server"],
)
def tensorboard_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Server]:
    mode = request.param
    root = tmp_path_factory.mktemp(f"tb-load-fast-{mode}")
    logdir = root / "logs"
    with TensorboardTracker(logdir / "hp") as tb:
        tb.log_hyperparameters(SERVER_HPARAMS)
        for step, loss in enumerate(SERVER_LOSSES):
            tb.log({"train": {"loss": loss}, "note": f"hp {step}"}, step=step)
    _write_resumed_run(logdir / "resume")

    port = _free_port()
    server_log = root / "server.log"
    command = [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1"]
    command += ["--port", str(port), "--load_fast", mode, "--reload_interval", "1"]
    with open(server_log, "wb") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    server = _Server(f"http://127.0.0.1:{port}", mode)
    try:
        # Ready when both runs are listed and the last events of each are loaded
        # (text works with both loaders, so it is the signal).
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, f"tensorboard exited: {server_log.read_text(errors='replace')[-3000:]}"
            try:
                runs = server.get("/data/runs")
                if {"hp", "resume"} <= set(runs) and (
                    server.text("hp", "note")[-1:] == [(4, "<p>hp 4</p>")]
                    and server.text("resume", "note")[-1:] == [(7, "<p>second 7</p>")]
                ):
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"tensorboard --load_fast={mode} not ready in 60 s: {server_log.read_text(errors='replace')[-3000:]}"
                )
            time.sleep(0.25)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def test_server_shows_the_scalars_and_hparams_metrics(tensorboard_server: _Server) -> None:
    points = tensorboard_server.scalars("hp", "train/loss", expected_points=len(SERVER_LOSSES))
    assert [step for step, _ in points] == list(range(len(SERVER_LOSSES))), (
        f"--load_fast={tensorboard_server.mode}: scalars of run 'hp' are {points}"
    )
    assert [value for _, value in points] == pytest.approx(SERVER_LOSSES, rel=1e-6)

    tags = tensorboard_server.get("/data/plugin/scalars/tags")
    assert "train/loss" in tags["hp"]

    groups = tensorboard_server.post("/data/plugin/hparams/session_groups", _session_groups_request())
    (group,) = [g for g in groups["sessionGroups"] if g["name"] == "hp"]
    metrics = {m["name"]["tag"]: m for m in group["metricValues"]}
    assert metrics["train/loss"]["trainingStep"] == len(SERVER_LOSSES) - 1
    assert metrics["train/loss"]["value"] == pytest.approx(SERVER_LOSSES[-1], rel=1e-6)


def _session_groups_request() -> dict[str, Any]:
    names = ["lr", "optimizer/name", "use_bias", "layers"]
    return {
        "experimentName": "",
        "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"],
        "colParams": [{"hparam": name, "order": "ORDER_UNSPECIFIED", "includeInResult": True} for name in names],
        "startIndex": 0,
        "sliceSize": 100,
    }


def test_server_hparams_plugin_lists_the_hyperparameters(tensorboard_server: _Server) -> None:
    experiment = tensorboard_server.post("/data/plugin/hparams/experiment", {"experimentName": ""})
    infos = {info["name"]: info["type"] for info in experiment["hparamInfos"]}
    assert infos == {
        "lr": "DATA_TYPE_FLOAT64",
        "optimizer/name": "DATA_TYPE_STRING",
        "use_bias": "DATA_TYPE_BOOL",
        "layers": "DATA_TYPE_STRING",
    }

    groups = tensorboard_server.post("/data/plugin/hparams/session_groups", _session_groups_request())
    (group,) = [g for g in groups["sessionGroups"] if g["name"] == "hp"]
    assert group["hparams"] == {"lr": 0.001, "optimizer/name": "adam", "use_bias": True, "layers": "[64, 64]"}
    assert [session["name"] for session in group["sessions"]] == ["hp"]


def test_server_shows_the_resumed_timeline(tensorboard_server: _Server) -> None:
    notes = tensorboard_server.text("resume", "note")
    points = tensorboard_server.scalars("resume", "loss", expected_points=len(RESUMED_TIMELINE))
    assert notes == [(step, f"<p>{text}</p>") for step, text in RESUMED_NOTES], (
        f"--load_fast={tensorboard_server.mode}: text timeline {notes}"
    )
    assert points == RESUMED_TIMELINE, f"--load_fast={tensorboard_server.mode}: scalar timeline {points}"
