"""CLU interop: a jaxtrack tracker as a CLU ``MetricWriter``, and a CLU ``MetricWriter`` as a tracker.

[`as_metric_writer`][jaxtrack.trackers.clu.as_metric_writer] lets code written for CLU (Flax examples,
``clu.periodic_actions``, ``AsyncMultiWriter``) write to any jaxtrack tracker;
[`from_metric_writer`][jaxtrack.trackers.clu.from_metric_writer] lets jaxtrack write to any CLU writer.

Neither needs TensorFlow. ``clu/metric_writers/__init__.py`` imports CLU's
``SummaryWriter``, which needs TensorFlow, so ``from clu import metric_writers``
fails without it although the interface, logging, multi and async writers do
not use it; [`load_metric_writers`][jaxtrack.trackers.clu.load_metric_writers] then makes those importable under their
usual names (see there). CLU is imported only when one of these functions is
called, never when ``jaxtrack`` is. The writer class ``as_metric_writer``
returns, ``TrackerMetricWriter``, subclasses CLU's ``MetricWriter``, so it
exists (as an attribute of this module) only once CLU is imported.

How values map, writer to tracker ([`as_metric_writer`][jaxtrack.trackers.clu.as_metric_writer]):

| writer call | tracker call |
|---|---|
| ``write_scalars`` | ``tracker.log(scalars, step=step)`` |
| ``write_texts`` | ``tracker.log(texts, step=step)`` (``str`` values) |
| ``write_histograms`` | a [`jaxtrack.Histogram`][jaxtrack.Histogram] of each array, with the writer's ``num_buckets`` (else ``num_bins``) buckets |
| ``write_images`` | a [`jaxtrack.Image`][jaxtrack.Image] of each ``[N,]H,W,C`` array |
| ``write_videos`` | each ``[N,]T,H,W,C`` video as an image sequence: a [`jaxtrack.Image`][jaxtrack.Image] of its ``T`` frames, under ``key`` (one video) or ``key/i`` (video ``i`` of a batch of ``N``) |
| ``write_audios`` | skipped, with a warning the first time: jaxtrack has no audio value |
| ``write_summaries`` | skipped, with a warning the first time: raw tensors for TensorBoard plugins have no jaxtrack equivalent |
| ``write_hparams`` | ``tracker.log_hyperparameters`` |
| ``flush`` / ``close`` | ``tracker.flush()`` (waits until everything written reached it) / ``tracker.finish()`` (and unsets it if current) |

The tracker is called as by ``jaxtrack.log``: the writer checks the values on
the calling thread (a value the tracker refuses is an error there), then queues
the call for the background reporter, which copies device arrays to the host and
calls the tracker off the training thread. A CLU loop writing every step
therefore waits for neither the device nor the disk.

Tracker to writer ([`from_metric_writer`][jaxtrack.trackers.clu.from_metric_writer]): each ``log`` is split by value
kind into ``write_scalars`` (numbers, bools, 0-d arrays), ``write_texts``
(strings), ``write_histograms`` (arrays and [`jaxtrack.Histogram`][jaxtrack.Histogram]) and
``write_images`` ([`jaxtrack.Image`][jaxtrack.Image]); see [`MetricWriterTracker`][jaxtrack.trackers.clu.MetricWriterTracker].
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import logging
import os
import sys
import threading
from collections.abc import Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from jaxtrack import reporter, tracking
from jaxtrack._optional import import_optional
from jaxtrack.redaction import redact
from jaxtrack.trackers.base import StepCounter, Tracker, check_step
from jaxtrack.values import (
    DEFAULT_NUM_BINS,
    Histogram,
    Image,
    check_value,
    check_values,
    flatten,
    normalize,
    to_host,
    to_plain,
)

if TYPE_CHECKING:
    from clu.metric_writers.interface import MetricWriter

logger = logging.getLogger(__name__)

_TF_FREE_SUBMODULES = ("interface", "logging_writer", "multi_writer", "async_writer")
_TF_FREE_NAMES = {
    "MetricWriter": "interface",
    "LoggingWriter": "logging_writer",
    "MultiWriter": "multi_writer",
    "AsyncWriter": "async_writer",
    "AsyncMultiWriter": "async_writer",
    "ensure_flushes": "async_writer",
}
_load_lock = threading.Lock()


def load_metric_writers() -> ModuleType:
    """``clu.metric_writers``, importable with or without TensorFlow.

    With TensorFlow installed this is the package as ``import`` gives it.
    Without, the package's ``__init__`` fails on its import of
    ``SummaryWriter``; then the package is registered in ``sys.modules``
    without running its ``__init__``, and CLU's own TF-free submodules
    (``interface``, ``logging_writer``, ``multi_writer``, ``async_writer``)
    are imported under their real names, with ``MetricWriter``,
    ``LoggingWriter``, ``MultiWriter``, ``AsyncWriter``, ``AsyncMultiWriter``
    and ``ensure_flushes`` set on it as ``__init__`` would. From then on
    ``from clu.metric_writers import AsyncMultiWriter``, ``import
    clu.metric_writers.logging_writer`` and ``clu.periodic_actions`` work as
    usual; asking the package for anything else (``SummaryWriter``,
    ``create_default_writer``) raises an ``AttributeError`` saying it needs
    TensorFlow.

    Examples:
        >>> load_metric_writers().AsyncMultiWriter.__module__
        'clu.metric_writers.async_writer'
    """
    with _load_lock:
        clu = import_optional("clu", extra="clu", purpose="CLU interop")
        try:
            return importlib.import_module("clu.metric_writers")
        except ImportError as error:
            reason = error
        spec = importlib.util.find_spec("clu.metric_writers")
        if spec is None:  # pragma: no cover - clu without metric_writers
            raise reason
        package = importlib.util.module_from_spec(spec)  # has __path__; __init__ is not run
        sys.modules[spec.name] = package
        try:
            for submodule in _TF_FREE_SUBMODULES:
                importlib.import_module(f"{spec.name}.{submodule}")
        except ImportError:
            del sys.modules[spec.name]
            raise
        for name, submodule in _TF_FREE_NAMES.items():
            setattr(package, name, getattr(sys.modules[f"{spec.name}.{submodule}"], name))

        def missing(name: str) -> Any:
            raise AttributeError(
                f"clu.metric_writers.{name} is not available: the package's __init__ failed "
                f"({type(reason).__name__}: {reason}); jaxtrack loaded only its parts that need no TensorFlow"
            )

        package.__getattr__ = missing  # type: ignore[method-assign]
        clu.metric_writers = package  # type: ignore[attr-defined]  # as a finished import would set it
        return package


def _warn_once(owner: Any, what: str, message: str, *args: Any) -> None:
    warned: set[str] = owner._warned
    if what not in warned:
        warned.add(what)
        logger.warning(message, *args)


# --- a CLU MetricWriter as a jaxtrack Tracker ---------------------------------------------------------------


class MetricWriterTracker(Tracker):
    """A tracker that writes to a CLU ``MetricWriter`` (from [`from_metric_writer`][jaxtrack.trackers.clu.from_metric_writer]).

    ``log`` resolves ``step=None`` with [`StepCounter`][jaxtrack.trackers.StepCounter]
    (``commit=False`` only keeps the next step the same: CLU writes each call
    at once) and splits the values by kind: numbers, bools and 0-d arrays go to
    ``write_scalars``, strings to ``write_texts``, [`jaxtrack.Image`][jaxtrack.Image] to
    ``write_images`` (``uint8`` ``NHWC``; the caption is dropped), arrays to
    ``write_histograms`` (their finite elements, flattened, bucketed by the
    writer into ``num_bins`` buckets) and [`jaxtrack.Histogram`][jaxtrack.Histogram] to
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

    def __init__(self, writer: MetricWriter, *, num_bins: int = DEFAULT_NUM_BINS) -> None:
        metric_writer = load_metric_writers().MetricWriter
        if not isinstance(writer, metric_writer):
            raise TypeError(f"from_metric_writer takes a clu.metric_writers.MetricWriter, got {writer!r}")
        if num_bins < 1:
            raise ValueError(f"num_bins must be at least 1, got {num_bins}")
        self.writer = writer
        self.num_bins = num_bins
        self._steps = StepCounter()
        self._lock = threading.Lock()
        self._closed = False
        self._warned: set[str] = set()

    def log(self, metrics: Mapping[str, Any], *, step: int | None = None, commit: bool | None = None) -> None:
        flat = flatten(metrics)
        with self._lock:
            self._check_open()
            self._write(self._steps.resolve(step, commit), flat)

    def log_summary(self, metrics: Mapping[str, Any]) -> None:
        # CLU has no run summary: the values are written at the latest step.
        flat = flatten(metrics)
        with self._lock:
            self._check_open()
            self._write(self._latest_step(), flat)

    def log_hyperparameters(self, hparams: Mapping[str, Any]) -> None:
        values = {key: to_plain(value) for key, value in redact(to_host(flatten(hparams))).items()}
        with self._lock:
            self._check_open()
            self.writer.write_hparams(values)

    def log_artifact(
        self, artifact_path: str | os.PathLike[str], *, name: str | None = None, type: str | None = None
    ) -> None:
        path = os.fspath(artifact_path)
        label = name or os.path.basename(os.path.normpath(path))
        with self._lock:
            self._check_open()
            _warn_once(
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

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"{self!r} is finished; make a new tracker to log again")

    def _latest_step(self) -> int:
        return 0 if self._steps.last_step is None else self._steps.last_step

    def _write(self, step: int, flat: Mapping[str, Any]) -> None:
        scalars: dict[str, Any] = {}
        texts: dict[str, str] = {}
        arrays: dict[str, np.ndarray] = {}
        buckets: dict[str, int] = {}
        images: dict[str, np.ndarray] = {}
        for key, raw in to_host(flat).items():
            check_value(key, raw)
            if isinstance(raw, (np.ndarray, list, tuple)) and np.ndim(raw) >= 1:
                # A raw array goes to the writer as is, to be bucketed there.
                samples = np.asarray(raw, dtype=np.float64).reshape(-1)
                arrays[key], buckets[key] = samples[np.isfinite(samples)], self.num_bins
                continue
            value = normalize(key, raw, num_bins=self.num_bins)
            if value is None:
                continue
            if isinstance(value, str):
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
        >>> from jaxtrack.trackers.clu import load_metric_writers
        >>> writer = load_metric_writers().LoggingWriter()  # any CLU MetricWriter
        >>> with jt.init_tracker(jt.from_metric_writer(writer)):  # finishes (closes the writer) on exit
        ...     jt.log({"loss": 0.5}, step=1)
    """
    return MetricWriterTracker(writer, num_bins=num_bins)


# --- a jaxtrack Tracker as a CLU MetricWriter ---------------------------------------------------------------


@functools.cache
def _tracker_metric_writer_class() -> type:
    """``TrackerMetricWriter``, built on first use because its base class comes from CLU."""
    interface = load_metric_writers().MetricWriter

    class TrackerMetricWriter(interface):  # type: ignore[misc, valid-type]
        """A CLU ``MetricWriter`` that writes to a jaxtrack tracker (from ``as_metric_writer``)."""

        def __init__(self, tracker: Tracker, *, num_bins: int = DEFAULT_NUM_BINS) -> None:
            super().__init__()
            if not isinstance(tracker, Tracker):
                raise TypeError(f"as_metric_writer takes a jaxtrack Tracker, got {tracker!r}")
            if num_bins < 1:
                raise ValueError(f"num_bins must be at least 1, got {num_bins}")
            self.tracker = tracker
            self.num_bins = num_bins
            self._warned: set[str] = set()
            self._closed = False
            self._lock = threading.Lock()

        def write_summaries(
            self, step: int, values: Mapping[str, Any], metadata: Mapping[str, Any] | None = None
        ) -> None:
            _warn_once(
                self,
                "summaries",
                "as_metric_writer(%r): write_summaries is skipped: raw tensor summaries for TensorBoard plugins "
                "have no jaxtrack equivalent (got %s)",
                self.tracker,
                sorted(values),
            )

        def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
            self._log(step, dict(scalars))

        def write_texts(self, step: int, texts: Mapping[str, str]) -> None:
            self._log(step, {key: str(text) for key, text in texts.items()})

        def write_histograms(
            self, step: int, arrays: Mapping[str, Any], num_buckets: Mapping[str, int] | None = None
        ) -> None:
            num_buckets = num_buckets or {}
            self._log(
                step,
                {
                    key: Histogram.from_array(np.asarray(array), num_bins=num_buckets.get(key) or self.num_bins)
                    for key, array in arrays.items()
                },
            )

        def write_images(self, step: int, images: Mapping[str, Any]) -> None:
            self._log(step, {key: Image(np.asarray(pixels)) for key, pixels in images.items()})

        def write_videos(self, step: int, videos: Mapping[str, Any]) -> None:
            # jaxtrack has no video value: each video becomes the sequence of its frames.
            frames: dict[str, Image] = {}
            for key, video in videos.items():
                array = np.asarray(video)
                if array.ndim == 4:
                    frames[key] = Image(array)
                elif array.ndim == 5:
                    frames.update((f"{key}/{i}", Image(clip)) for i, clip in enumerate(array))
                else:
                    raise ValueError(f"video {key!r} must be [N,]T,H,W,C, got shape {array.shape}")
            self._log(step, frames)

        def write_audios(self, step: int, audios: Mapping[str, Any], *, sample_rate: int) -> None:
            _warn_once(
                self,
                "audios",
                "as_metric_writer(%r): write_audios is skipped: jaxtrack has no audio value (got %s)",
                self.tracker,
                sorted(audios),
            )

        def write_hparams(self, hparams: Mapping[str, Any]) -> None:
            # Redacted here too: the tracker behind the writer may be one a user wrote.
            reporter.call_soon(self.tracker, "log_hyperparameters", redact(hparams))

        def flush(self) -> None:
            # Returns once everything written so far has reached the tracker and been written out.
            reporter.call_soon(self.tracker, "flush", wait=True, timeout=tracking.FINISH_TIMEOUT_SECS)

        def close(self) -> None:
            with self._lock:
                if self._closed:
                    return
                self._closed = True
            tracking.release(self.tracker)  # finished, and no longer current if it was

        def _log(self, step: int, values: dict[str, Any]) -> None:
            # As jaxtrack.log: checked on the caller's thread, then queued for the background
            # reporter, which fetches device arrays and calls the tracker off the training thread.
            if values:
                self.tracker.validate(check_values(values))
                reporter.call_soon(self.tracker, "log", values, step=check_step(step))

        def __repr__(self) -> str:
            return f"as_metric_writer({self.tracker!r})"

    TrackerMetricWriter.__module__ = __name__
    TrackerMetricWriter.__qualname__ = "TrackerMetricWriter"
    return TrackerMetricWriter


def as_metric_writer(tracker: Tracker, *, num_bins: int = DEFAULT_NUM_BINS) -> MetricWriter:
    """A CLU ``MetricWriter`` that writes to ``tracker``, e.g. inside CLU's ``AsyncMultiWriter``.

    ``num_bins`` is the number of buckets of a histogram when ``write_histograms``
    gives none. The [module docstring][jaxtrack.trackers.clu] lists how each ``write_*`` call maps.
    Writes are checked where they are made, then delivered off the calling
    thread by the background reporter; ``flush`` waits for them, ``close``
    finishes the tracker.

    Examples:
        >>> from jaxtrack.trackers.base import NoopTracker
        >>> writer = as_metric_writer(NoopTracker())
        >>> writer.write_scalars(0, {"loss": 0.5})
        >>> type(writer).__name__, isinstance(writer, load_metric_writers().MetricWriter)
        ('TrackerMetricWriter', True)
    """
    writer: MetricWriter = _tracker_metric_writer_class()(tracker, num_bins=num_bins)
    return writer


def __getattr__(name: str) -> Any:
    # TrackerMetricWriter subclasses CLU's MetricWriter, so it exists only once CLU is imported.
    if name == "TrackerMetricWriter":
        return _tracker_metric_writer_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "MetricWriterTracker",
    "as_metric_writer",
    "from_metric_writer",
    "load_metric_writers",
]
