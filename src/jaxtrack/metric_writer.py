"""A jaxtrack tracker as a CLU ``MetricWriter``: [`as_metric_writer`][jaxtrack.metric_writer.as_metric_writer].

Code written for CLU (Flax examples, ``clu.periodic_actions``,
``AsyncMultiWriter``) then writes to any jaxtrack tracker. Each ``write_*``
is a call to the tracker's own methods, so it goes through the same front door
as ``jaxtrack.log``: checked on the calling thread (a value the tracker
refuses is an error there), queued in order with everything else, fetched and
written off the training thread. A CLU loop writing every step therefore waits
for neither the device nor the disk.

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

The writer class, ``TrackerMetricWriter``, subclasses CLU's ``MetricWriter``,
so it exists (as an attribute of this module) only once CLU is imported.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from jaxtrack.clu_writers import load_metric_writers, warn_once
from jaxtrack.trackers.base import Tracker
from jaxtrack.values import DEFAULT_NUM_BINS, Histogram, Image, check_step

if TYPE_CHECKING:
    from clu.metric_writers.interface import MetricWriter


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
            warn_once(
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
            warn_once(
                self,
                "audios",
                "as_metric_writer(%r): write_audios is skipped: jaxtrack has no audio value (got %s)",
                self.tracker,
                sorted(audios),
            )

        def write_hparams(self, hparams: Mapping[str, Any]) -> None:
            self.tracker.log_hyperparameters(hparams)  # the front door redacts credentials

        def flush(self) -> None:
            # Returns once everything written so far has reached the tracker and been written out.
            self.tracker.flush()

        def close(self) -> None:
            with self._lock:
                if self._closed:
                    return
                self._closed = True
            self.tracker.finish()  # the run ends, and the tracker is no longer current if it was

        def _log(self, step: int, values: dict[str, Any]) -> None:
            # The tracker's front door: checked on this thread, queued in order with every other
            # call, fetched and written off the training thread.
            if values:
                self.tracker.log(values, step=check_step(step))

        def __repr__(self) -> str:
            return f"as_metric_writer({self.tracker!r})"

    TrackerMetricWriter.__module__ = __name__
    TrackerMetricWriter.__qualname__ = "TrackerMetricWriter"
    return TrackerMetricWriter


def as_metric_writer(tracker: Tracker, *, num_bins: int = DEFAULT_NUM_BINS) -> MetricWriter:
    """A CLU ``MetricWriter`` that writes to ``tracker``, e.g. inside CLU's ``AsyncMultiWriter``.

    ``num_bins`` is the number of buckets of a histogram when ``write_histograms``
    gives none. The [module docstring][jaxtrack.metric_writer] lists how each ``write_*`` call maps.
    Writes go through the tracker's front door: checked where they are made,
    then delivered off the calling thread; ``flush`` waits for them, ``close``
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


__all__ = ["as_metric_writer"]
