"""A CLU ``MetricWriter`` as a jaxtrack backend: [`from_metric_writer`][jaxtrack.trackers.clu.from_metric_writer].

Any CLU writer (a ``LoggingWriter``, an ``AsyncMultiWriter`` of several, a
``SummaryWriter`` where TensorFlow is installed) then records a run like the
built-in backends do. Each ``log`` is split by value kind into
``write_scalars`` (numbers and bools), ``write_texts`` (strings),
``write_histograms`` (arrays and [`jaxtrack.Histogram`][jaxtrack.Histogram]) and
``write_images`` ([`jaxtrack.Image`][jaxtrack.Image]); see
[`MetricWriterTracker`][jaxtrack.trackers.clu.MetricWriterTracker]. The other
direction, a tracker as a CLU writer, is ``jaxtrack.as_metric_writer``
(``jaxtrack.metric_writer``). Needs ``pip install 'jaxtrack[clu]'``; no TensorFlow.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from jaxtrack.clu_writers import load_metric_writers, warn_once
from jaxtrack.trackers.base import Tracker
from jaxtrack.values import DEFAULT_NUM_BINS, Histogram, HostValue, Image

if TYPE_CHECKING:
    from clu.metric_writers.interface import MetricWriter


class MetricWriterTracker(Tracker):
    """A tracker that writes to a CLU ``MetricWriter`` (from [`from_metric_writer`][jaxtrack.trackers.clu.from_metric_writer]).

    ``log`` splits the values by kind (``commit=False`` makes no difference:
    CLU writes each call at once): numbers and bools go to
    ``write_scalars``, strings to ``write_texts``, [`jaxtrack.Image`][jaxtrack.Image] to
    ``write_images`` (``uint8`` ``NHWC``; the caption is dropped), arrays to
    ``write_histograms`` (their finite elements, flattened, bucketed by the
    writer into ``num_bins`` buckets: this backend's ``histogram_bins`` is
    ``None``, so it receives arrays, not histograms) and [`jaxtrack.Histogram`][jaxtrack.Histogram] to
    ``write_histograms`` as the centres of its buckets repeated by their
    counts, with as many buckets, which keeps the counts but not exactly the
    edges. ``None`` values are skipped.

    CLU has no run summary and no artifacts: ``log_summary`` writes its values
    like ``log`` at the latest step (0 before any), as the TensorBoard tracker
    does; ``log_artifact`` writes the path as the text ``artifact/<name>`` at
    the latest step and warns, the first time, that the file itself is not
    stored. ``log_hyperparameters`` calls ``write_hparams`` with the flattened
    hyperparameters, ``flush`` calls ``writer.flush()`` and ``finish`` calls
    ``writer.close()`` once.

    Examples:
        >>> writers = load_metric_writers()  # clu.metric_writers, with or without TensorFlow
        >>> tracker = from_metric_writer(writers.LoggingWriter())
        >>> tracker.log({"loss": 0.5, "note": "warmup done"}, step=10)
        >>> tracker.finish()
    """

    name = "clu"
    histogram_bins = None  # arrays arrive as they are, for the writer to bucket

    def __init__(self, writer: MetricWriter, *, num_bins: int = DEFAULT_NUM_BINS) -> None:
        metric_writer = load_metric_writers().MetricWriter
        if not isinstance(writer, metric_writer):
            raise TypeError(f"from_metric_writer takes a clu.metric_writers.MetricWriter, got {writer!r}")
        if num_bins < 1:
            raise ValueError(f"num_bins must be at least 1, got {num_bins}")
        self.writer = writer
        self.num_bins = num_bins
        self._last_step: int | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._warned: set[str] = set()

    def log(self, metrics: Mapping[str, Any], *, step: int | None = None, commit: bool | None = None) -> None:
        with self._lock:
            self._last_step = cast(int, step)  # the front door gives every call its step
            self._write(self._last_step, metrics)

    def log_summary(self, metrics: Mapping[str, Any]) -> None:
        # CLU has no run summary: the values are written at the latest step.
        with self._lock:
            self._write(self._latest_step(), metrics)

    def log_hyperparameters(self, hparams: Mapping[str, Any]) -> None:
        with self._lock:
            self.writer.write_hparams(dict(hparams))

    def log_artifact(
        self, artifact_path: str | os.PathLike[str], *, name: str | None = None, type: str | None = None
    ) -> None:
        path = os.fspath(artifact_path)
        label = name or os.path.basename(os.path.normpath(path))
        with self._lock:
            warn_once(
                self,
                "artifact",
                "from_metric_writer(%r): CLU writers store no files; log_artifact writes only the path, "
                "as the text 'artifact/<name>'",
                self.writer,
            )
            text = path if type is None else f"{path} ({type})"
            self.writer.write_texts(self._latest_step(), {f"artifact/{label}": text})

    def flush(self) -> None:
        with self._lock:
            if not self._closed:
                self.writer.flush()

    def finish(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self.writer.close()

    def _latest_step(self) -> int:
        return 0 if self._last_step is None else self._last_step

    def _write(self, step: int, values: Mapping[str, HostValue | np.ndarray]) -> None:
        scalars: dict[str, Any] = {}
        texts: dict[str, str] = {}
        arrays: dict[str, np.ndarray] = {}
        buckets: dict[str, int] = {}
        images: dict[str, np.ndarray] = {}
        for key, value in values.items():
            if isinstance(value, np.ndarray):  # an array: its finite elements, for the writer to bucket
                samples = np.asarray(value, dtype=np.float64).reshape(-1)
                arrays[key], buckets[key] = samples[np.isfinite(samples)], self.num_bins
            elif isinstance(value, str):
                texts[key] = value
            elif isinstance(value, Image):
                images[key] = value.to_uint8()
            elif isinstance(value, Histogram):
                arrays[key], buckets[key] = _bucket_samples(value)
            else:
                scalars[key] = value
        if scalars:
            self.writer.write_scalars(step, scalars)
        if texts:
            self.writer.write_texts(step, texts)
        if arrays:
            self.writer.write_histograms(step, arrays, num_buckets=buckets)
        if images:
            self.writer.write_images(step, images)

    def __repr__(self) -> str:
        return f"MetricWriterTracker({self.writer!r})"


def _bucket_samples(histogram: Histogram) -> tuple[np.ndarray, int]:
    """Samples that a writer buckets back into ``histogram``'s counts: each bucket's centre, ``count`` times.

    Equal-width re-bucketing of the centres into as many buckets puts each
    centre back in its own bucket, so the counts survive; the edges shrink by
    half a bucket at each end.
    """
    limits = np.asarray(histogram.bucket_limits, dtype=np.float64)
    counts = np.asarray(histogram.bucket_counts).astype(np.int64)
    centres = (limits[:-1] + limits[1:]) / 2
    return np.repeat(centres, counts), int(counts.size)


def from_metric_writer(writer: MetricWriter, *, num_bins: int = DEFAULT_NUM_BINS) -> MetricWriterTracker:
    """A jaxtrack tracker that writes to the CLU ``MetricWriter`` ``writer``.

    ``num_bins`` is the number of buckets asked of the writer for a histogram
    of a logged array. See [`MetricWriterTracker`][jaxtrack.trackers.clu.MetricWriterTracker] for how each kind of
    value is written.

    Examples:
        >>> import jaxtrack as jt
        >>> from jaxtrack.clu_writers import load_metric_writers
        >>> writer = load_metric_writers().LoggingWriter()  # any CLU MetricWriter
        >>> with jt.init_tracker(jt.from_metric_writer(writer)):  # finishes (closes the writer) on exit
        ...     jt.log({"loss": 0.5}, step=1)
    """
    return MetricWriterTracker(writer, num_bins=num_bins)


__all__ = ["MetricWriterTracker", "from_metric_writer"]
