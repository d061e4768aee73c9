"""A CLU ``MetricWriter`` as a backend (``from_metric_writer``), checked against CLU's own writers.

TensorFlow is not installed here; CLU's TF-free parts are loaded by ``jaxtrack.clu_writers``.
"""

from __future__ import annotations

import importlib.util
import logging

import jax.numpy as jnp
import numpy as np
import pytest

import jaxtrack as jt
from jaxtrack.clu_writers import load_metric_writers
from jaxtrack.metric_writer import as_metric_writer
from jaxtrack.trackers.clu import MetricWriterTracker, from_metric_writer
from support.clu import absl_lines, clu_warnings, same_histogram
from support.recording import RecordingTracker

NO_TENSORFLOW = importlib.util.find_spec("tensorflow") is None

metric_writers = load_metric_writers()
from clu.metric_writers.async_writer import AsyncWriter  # noqa: E402
from clu.metric_writers.logging_writer import LoggingWriter  # noqa: E402
from clu.metric_writers.multi_writer import MultiWriter  # noqa: E402


def test_from_metric_writer_on_logging_writer(caplog, tmp_path):
    caplog.set_level(logging.INFO)
    tracker = from_metric_writer(LoggingWriter(collection="eval"), num_bins=4)
    assert isinstance(tracker, MetricWriterTracker) and tracker.name == "clu"
    tracker.log_hyperparameters({"opt": {"lr": np.float32(0.5)}, "layers": [64, 64]})
    tracker.log({"loss": jnp.float32(0.25), "train": {"acc": 1}, "note": "ok", "skip": None}, step=10)
    tracker.log({"w": np.array([0.0, 1.0, 2.0, 3.0]), "img": jt.Image(np.zeros((2, 4, 4, 3)))})
    tracker.log({"h": jt.Histogram.from_array([0.0, 1.0, 1.0, 3.0], num_bins=3)}, commit=False)
    tracker.log_summary({"best": 0.125})
    (tmp_path / "model.bin").write_bytes(b"x")
    tracker.log_artifact(tmp_path / "model.bin", type="model")
    tracker.log_artifact(tmp_path / "model.bin", name="again")
    tracker.flush()
    tracker.finish()
    tracker.finish()
    with pytest.raises(RuntimeError, match="finished"):
        tracker.log({"loss": 1.0})

    lines = absl_lines(caplog)
    assert lines[0] == "[Hyperparameters] collection=eval {'opt/lr': 0.5, 'layers': [64, 64]}"
    assert lines[1] == "[10] collection=eval loss=0.25, train/acc=1"
    assert lines[2] == "[10] collection=eval Got texts: {'note': 'ok'}."
    assert (
        lines[3]
        == "[11] collection=eval Histogram for 'w' = {[0, 0.75): 1, [0.75, 1.5): 1, [1.5, 2.25): 1, [2.25, 3]: 1}"
    )
    assert lines[4] == "[11] collection=eval Got images: {'img': (2, 4, 4, 3)}."
    # A Histogram goes as its bucket centres: the counts survive, the edges move in by half a bucket.
    assert lines[5] == "[12] collection=eval Histogram for 'h' = {[0.5, 1.17): 1, [1.17, 1.83): 2, [1.83, 2.5]: 1}"
    assert lines[6] == "[12] collection=eval best=0.125"  # the summary, at the latest step
    assert lines[7].startswith("[12] collection=eval Got texts: {'artifact/model.bin': ")
    assert lines[7].endswith("model.bin (model)'}.")
    assert lines[8].startswith("[12] collection=eval Got texts: {'artifact/again': ")
    assert len([w for w in clu_warnings(caplog) if "store no files" in w]) == 1


def test_from_metric_writer_with_jaxtrack_functions_and_multi_writer():
    first, second = RecordingTracker("first"), RecordingTracker("second")
    tracker = from_metric_writer(MultiWriter([as_metric_writer(first), as_metric_writer(second)]))
    with jt.current_tracker(tracker):
        jt.log({"loss": 1.0})
        jt.log({"loss": 0.5})
        jt.log_hyperparameters({"seed": 0})
    jt.flush()
    tracker.finish()
    for recording in (first, second):
        assert [(s, m) for s, m, _ in recording.logs] == [(0, {"loss": 1.0}), (1, {"loss": 0.5})]
        assert recording.hparams == [{"seed": 0}] and recording.finished == 1


def test_every_value_kind_round_trips():
    """jaxtrack -> CLU writer -> jaxtrack keeps every kind of value."""
    recording = RecordingTracker()
    tracker = from_metric_writer(AsyncWriter(as_metric_writer(recording)))
    weights = np.array([0.5, 1.5, np.nan, 2.5, 4.0])
    histogram = jt.Histogram.from_array(np.arange(100.0) ** 0.5, num_bins=7)
    pixels = np.random.default_rng(1).integers(0, 256, (3, 5, 6, 3), dtype=np.uint8)
    values = {
        "loss": 0.25,
        "steps": 7,
        "flag": False,
        "jax_scalar": jnp.float32(0.5),
        "text": "hello",
        "weights": weights,
        "jax_weights": jnp.arange(12.0).reshape(3, 4),
        "histogram": histogram,
        "image": jt.Image(pixels, caption="dropped"),
        "grey": jt.Image(np.ones((5, 6))),
    }
    tracker.log(values, step=4)
    tracker.log_summary({"best": 0.125, "final": "converged"})
    tracker.log_hyperparameters({"model": {"width": 32}, "lr": 1e-3})
    tracker.finish()

    logged: dict[str, object] = {}
    for step, metrics, _ in recording.logs:
        assert step == 4
        logged.update(metrics)
    assert logged["loss"] == 0.25 and logged["steps"] == 7 and logged["flag"] is False
    assert logged["jax_scalar"] == 0.5 and logged["text"] == "hello"
    assert same_histogram(logged["weights"], jt.Histogram.from_array(weights))  # type: ignore[arg-type]
    assert same_histogram(logged["jax_weights"], jt.Histogram.from_array(np.arange(12.0)))  # type: ignore[arg-type]
    got = logged["histogram"]
    assert isinstance(got, jt.Histogram)
    assert got.bucket_counts.tolist() == histogram.bucket_counts.tolist()  # counts kept, edges approximate
    assert got.num == histogram.num
    image = logged["image"]
    assert isinstance(image, jt.Image)
    np.testing.assert_array_equal(image.to_uint8(), pixels)
    grey = logged["grey"]
    assert isinstance(grey, jt.Image)
    np.testing.assert_array_equal(grey.to_uint8(), np.full((1, 5, 6, 1), 255, np.uint8))
    assert logged["best"] == 0.125 and logged["final"] == "converged"
    assert recording.hparams == [{"model/width": 32, "lr": 1e-3}]
    assert recording.finished == 1
