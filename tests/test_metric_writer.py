"""A tracker as a CLU ``MetricWriter`` (``jaxtrack.as_metric_writer``), checked against CLU's own writers and periodic actions.

TensorFlow is not installed here; CLU's TF-free parts are loaded by ``jaxtrack.clu_writers``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator
from tensorboard.util import tensor_util

import jaxtrack
import jaxtrack as jt
from jaxtrack.clu_writers import load_metric_writers
from jaxtrack.metric_writer import as_metric_writer
from jaxtrack.trackers.clu import from_metric_writer
from support.clu import absl_lines, clu_warnings, same_histogram
from support.recording import RecordingTracker

NO_TENSORFLOW = importlib.util.find_spec("tensorflow") is None

metric_writers = load_metric_writers()
from clu import periodic_actions  # noqa: E402 - importable without TensorFlow only once CLU's writers are loaded
from clu.metric_writers.async_writer import AsyncMultiWriter, AsyncWriter, ensure_flushes  # noqa: E402
from clu.metric_writers.interface import MetricWriter  # noqa: E402
from clu.metric_writers.logging_writer import LoggingWriter  # noqa: E402


def test_as_metric_writer_is_a_clu_metric_writer():
    writer = as_metric_writer(RecordingTracker())
    assert isinstance(writer, MetricWriter) and isinstance(writer, metric_writers.MetricWriter)
    assert type(writer).__name__ == "TrackerMetricWriter"
    from jaxtrack import metric_writer as module

    assert type(writer) is module.TrackerMetricWriter
    with pytest.raises(TypeError, match="jaxtrack Tracker"):
        as_metric_writer(LoggingWriter())
    with pytest.raises(TypeError, match="MetricWriter"):
        from_metric_writer(RecordingTracker())
    with pytest.raises(ValueError, match="num_bins"):
        from_metric_writer(LoggingWriter(), num_bins=0)


# ---- a tracker as a CLU MetricWriter ----------------------------------------------------------------


def test_as_metric_writer_maps_every_write(caplog):
    caplog.set_level(logging.WARNING, logger="jaxtrack.clu_writers")
    recording = RecordingTracker()
    writer = as_metric_writer(recording, num_bins=8)
    weights = np.linspace(-1.0, 1.0, 100)
    image = np.random.default_rng(0).random((2, 4, 5, 3)).astype(np.float32)
    video = np.zeros((2, 3, 4, 4, 1), np.uint8)
    video[1, 2] = 255

    writer.write_hparams({"lr": 0.1, "layers": 2})
    writer.write_scalars(np.int64(3), {"loss": 0.5, "acc": jnp.float32(0.75), "ok": True})
    writer.write_texts(3, {"note": "warmup"})
    writer.write_histograms(4, {"w": weights, "b": jnp.arange(10.0)}, num_buckets={"w": 5})
    writer.write_histograms(4, {"c": weights})
    writer.write_images(5, {"img": image, "one": image[0]})
    writer.write_videos(6, {"clip": video, "single": video[1]})
    writer.write_audios(7, {"speech": np.zeros((1, 16, 1))}, sample_rate=16000)
    writer.write_audios(8, {"speech": np.zeros((1, 16, 1))}, sample_rate=16000)
    writer.write_summaries(9, {"raw": np.zeros(3)})
    writer.flush()
    writer.close()
    writer.close()

    assert recording.hparams == [{"lr": 0.1, "layers": 2}]
    steps = [step for step, _, _ in recording.logs]
    assert steps == [3, 3, 4, 4, 5, 6] and all(type(s) is int for s in steps)
    (_, scalars, _), (_, texts, _), (_, hists, _), (_, default_hist, _), (_, images, _), (_, frames, _) = recording.logs
    assert float(scalars["loss"]) == 0.5 and float(scalars["acc"]) == 0.75 and scalars["ok"] is True
    assert texts == {"note": "warmup"}
    assert same_histogram(hists["w"], jt.Histogram.from_array(weights, num_bins=5))
    assert same_histogram(hists["b"], jt.Histogram.from_array(np.arange(10.0), num_bins=8))
    assert len(default_hist["c"].bucket_counts) == 8
    np.testing.assert_array_equal(images["img"].to_uint8(), jt.Image(image).to_uint8())
    assert images["img"].num_images == 2 and images["one"].num_images == 1
    assert sorted(frames) == ["clip/0", "clip/1", "single"]
    assert frames["clip/1"].num_images == 3
    np.testing.assert_array_equal(frames["clip/1"].to_uint8(), video[1])
    np.testing.assert_array_equal(frames["single"].to_uint8(), video[1])
    # Audio and raw summaries are skipped, with one warning each.
    warnings = clu_warnings(caplog)
    assert len(warnings) == 2
    assert "write_audios is skipped" in warnings[0] and "speech" in warnings[0]
    assert "write_summaries is skipped" in warnings[1]
    assert recording.flushed >= 1 and recording.finished == 1


class _ThreadRecordingTracker(RecordingTracker):
    """Records the thread each call runs on, and refuses keys starting with ``bad``."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: list[str] = []

    def log(self, metrics, *, step=None, commit=None):
        self.threads.append(threading.current_thread().name)
        super().log(metrics, step=step, commit=commit)

    def validate(self, metrics):
        for key in metrics:
            if key.startswith("bad"):
                raise ValueError(f"refuses {key!r}")


def test_writes_reach_the_tracker_off_the_calling_thread_as_host_values():
    """A CLU loop writing every step does not do the tracker's work (device fetch, disk writes) itself."""
    recording = _ThreadRecordingTracker()
    writer = as_metric_writer(recording)
    writer.write_scalars(1, {"loss": jnp.float32(0.5)})
    writer.write_hparams({"lr": 0.1})
    with pytest.raises(ValueError, match="refuses 'bad/key'"):
        writer.write_scalars(2, {"bad": {"key": 1.0}})  # refused where it is written, not lost later
    writer.flush()  # returns once delivered
    assert recording.logs == [(1, {"loss": 0.5}, None)] and type(recording.logs[0][1]["loss"]) is not jax.Array
    assert recording.threads and threading.current_thread().name not in recording.threads
    assert recording.hparams == [{"lr": 0.1}] and recording.flushed >= 1
    writer.close()
    assert recording.finished == 1


def test_closing_the_writer_of_the_current_tracker_unsets_it():
    """After close() the tracker is finished; jaxtrack.log then warns that no tracker is set, it does not fail."""
    tracker = jt.init_tracker({"type": "noop"})
    writer = as_metric_writer(tracker)
    writer.write_scalars(1, {"loss": 1.0})
    writer.close()
    assert jaxtrack.run.current() is None
    with pytest.warns(jt.NoTrackerWarning):
        jt.log({"loss": 2.0}, step=2)


def test_async_multi_writer_delivers_to_a_tracker_after_flush(caplog):
    caplog.set_level(logging.INFO)
    recording = RecordingTracker()
    writer = AsyncMultiWriter([as_metric_writer(recording), LoggingWriter(collection="train")])
    with ensure_flushes(writer):
        writer.write_hparams({"lr": 0.01})
        for step in range(20):
            writer.write_scalars(step, {"loss": 1.0 / (step + 1)})
        writer.write_texts(19, {"note": "done"})
        writer.write_histograms(19, {"w": np.arange(6.0)}, num_buckets={"w": 3})
    assert [step for step, _, _ in recording.logs] == [*range(20), 19, 19]
    assert [m["loss"] for _, m, _ in recording.logs[:20]] == [1.0 / (s + 1) for s in range(20)]
    assert recording.logs[20][1] == {"note": "done"}
    assert recording.logs[21][1]["w"].bucket_counts.tolist() == [2, 2, 2]
    assert recording.hparams == [{"lr": 0.01}] and recording.flushed >= 1
    lines = absl_lines(caplog)
    assert "[19] collection=train loss=0.05" in lines
    writer.close()
    assert recording.finished == 1


def test_as_metric_writer_on_the_tensorboard_tracker(tmp_path):
    """CLU writing TensorBoard files without TensorFlow: jaxtrack's TensorBoard tracker behind AsyncWriter."""
    writer = AsyncWriter(as_metric_writer(jt.TensorboardTracker(tmp_path)))
    for step in range(3):
        writer.write_scalars(step, {"loss": float(3 - step)})
    writer.write_images(2, {"img": np.full((1, 4, 4, 3), 0.5, np.float32)})
    writer.close()
    accumulator = EventAccumulator(os.fspath(tmp_path), size_guidance={"tensors": 0})
    accumulator.Reload()
    losses = [(e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in accumulator.Tensors("loss")]
    assert losses == [(0, 3.0), (1, 2.0), (2, 1.0)]
    assert [e.step for e in accumulator.Tensors("img")] == [2]


def test_flax_examples_style_loop_with_periodic_actions(caplog):
    """The train loop of the Flax examples: CLU hooks and writer, jaxtrack behind them."""
    caplog.set_level(logging.INFO)
    recording = RecordingTracker()
    console = jt.ConsoleTracker(logger="test.clu.loop")
    writer = metric_writers.AsyncMultiWriter([as_metric_writer(jt.CompositeTracker([recording, console]))])
    writer.write_hparams({"learning_rate": 0.1, "num_train_steps": 20})
    report_progress = periodic_actions.ReportProgress(num_train_steps=20, writer=writer, every_steps=5, every_secs=None)
    hooks = [report_progress]

    @jax.jit
    def train_step(w: jax.Array) -> tuple[jax.Array, jax.Array]:
        loss, grad = jax.value_and_grad(lambda v: jnp.sum(v**2))(w)
        return w - 0.1 * grad, loss

    w = jnp.ones(4)
    with metric_writers.ensure_flushes(writer):
        for step in range(1, 21):
            with report_progress.timed("train_step"):
                w, loss = train_step(w)
            for hook in hooks:
                hook(step)
            if step % 5 == 0:
                writer.write_scalars(step, {"train_loss": loss})
                writer.write_histograms(step, {"w": w})
    writer.close()

    by_key: dict[str, list[int]] = {}
    for step, metrics, _ in recording.logs:
        for key in metrics:
            by_key.setdefault(key, []).append(step)
    assert by_key["train_loss"] == [5, 10, 15, 20]
    assert by_key["w"] == [5, 10, 15, 20]
    assert by_key["steps_per_sec"] == by_key["uptime"] == [5, 10, 15, 20][-len(by_key["steps_per_sec"]) :]
    assert len(by_key["steps_per_sec"]) >= 3
    assert recording.hparams == [{"learning_rate": 0.1, "num_train_steps": 20}]
    assert recording.finished == 1
    console_lines = [r.getMessage() for r in caplog.records if r.name == "test.clu.loop"]
    assert any(line.startswith("step 20 | train_loss ") for line in console_lines)


# ---- a CLU MetricWriter as a tracker ----------------------------------------------------------------
