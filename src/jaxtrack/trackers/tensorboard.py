"""TensorBoard event files, written with the ``tensorboard`` package alone (no TensorFlow, no PyTorch).

Scalars go to the Scalars dashboard (as float64, so large steps and tiny
differences survive), strings to Text, arrays (one or more dimensions) and
:class:`~jaxtrack.Histogram` values to Histograms/Distributions,
:class:`~jaxtrack.Image` values to Images, and hyperparameters to the HParams
dashboard. Needs ``pip install 'jaxtrack[tensorboard]'``.
"""

from __future__ import annotations

import dataclasses
import io
import os
import shutil
import threading
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxtrack._optional import import_optional
from jaxtrack._paths import safe_file_name
from jaxtrack.multihost import is_primary_process
from jaxtrack.trackers.base import StepCounter, Tracker
from jaxtrack.trackers.config import TrackerConfig
from jaxtrack.values import DEFAULT_NUM_BINS, Histogram, HostValue, Image, flatten, normalize, to_host


class TensorboardTracker(Tracker):
    """Writes a run as TensorBoard event files under ``logdir``.

    Steps that go back (a run resumed from an older checkpoint) are handled as
    TensorBoard expects: each tracker session, and each step that goes back,
    starts with a ``SessionLog.START`` event, on which TensorBoard discards
    the earlier session's values at that step and later, so the resumed
    values replace them instead of zig-zagging. In a multi-process JAX run
    only process 0 writes.

    >>> import tempfile, jaxtrack as jt
    >>> from jaxtrack.trackers.tensorboard import TensorboardTracker
    >>> with TensorboardTracker(tempfile.mkdtemp()) as tb:
    ...     tb.log({"train": {"loss": 0.5}, "note": "warm-up"}, step=1)
    ...     tb.log_hyperparameters({"lr": 1e-3, "model": {"width": 256}})

    Args:
      logdir: the run's directory (one run per directory, as TensorBoard expects).
      flush_secs: how often buffered events reach the disk.
      max_queue: events buffered before a write is forced.
      filename_suffix: appended to the event file's name.
      histogram_bins: buckets of the histogram made from an array value.
    """

    name = "tensorboard"

    def __init__(
        self,
        logdir: str | os.PathLike[str],
        *,
        flush_secs: float = 10.0,
        max_queue: int = 100,
        filename_suffix: str = "",
        histogram_bins: int = DEFAULT_NUM_BINS,
    ) -> None:
        import_optional("tensorboard", extra="tensorboard", purpose="TensorboardTracker")
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self.logdir = os.fspath(logdir)
        self.histogram_bins = histogram_bins
        self._lock = threading.RLock()
        self._steps = StepCounter()
        self._restart_at: int | None = 0  # a START event is due before the next value
        self._last_step = -1
        self._hparams: dict[str, bool | int | float | str] = {}
        self._start_time = time.time()
        self._finished = False
        self._writer = (
            EventFileWriter(
                self.logdir, max_queue_size=max_queue, flush_secs=flush_secs, filename_suffix=filename_suffix
            )
            if is_primary_process()
            else None
        )

    def log(self, metrics: Mapping[str, Any], *, step: int | None = None, commit: bool | None = None) -> None:
        with self._lock:
            self._check_open()
            values = self._summary_values(metrics)
            self._write(values, self._steps.resolve(step, commit))

    def log_summary(self, metrics: Mapping[str, Any]) -> None:
        # TensorBoard has no run summary: the values are written at the latest
        # step, where the HParams dashboard also picks them up as metrics.
        with self._lock:
            self._check_open()
            self._write(self._summary_values(metrics), max(self._last_step, 0))

    def log_hyperparameters(self, hparams: Mapping[str, Any]) -> None:
        from tensorboard.plugins.hparams import summary_v2 as hparams_summary

        with self._lock:
            self._check_open()
            for key, value in flatten(hparams).items():
                self._hparams[key] = _hparam_value(value)
            # The newest session-start record wins, so each call writes them all.
            summary = hparams_summary.hparams_pb(
                self._hparams,
                trial_id=os.path.basename(os.path.normpath(self.logdir)),
                start_time_secs=self._start_time,
            )
            self._add(summary=summary, step=0)

    def log_artifact(
        self, artifact_path: str | os.PathLike[str], *, name: str | None = None, type: str | None = None
    ) -> None:
        # TensorBoard cannot show files, so the artifact is kept beside the run's event files.
        with self._lock:
            self._check_open()
            source = os.fspath(artifact_path)
            target_name = safe_file_name(name or os.path.basename(os.path.normpath(source)))
            if self._writer is None:
                return
            target = os.path.join(self.logdir, "artifacts", target_name)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            if os.path.isdir(target):
                shutil.rmtree(target)
            if os.path.isdir(source):
                shutil.copytree(source, target)
            else:
                shutil.copyfile(source, target)
            note = f"artifact of type {type or 'unspecified'} from {source}, stored at artifacts/{target_name}"
            self._write(self._summary_values({f"artifacts/{target_name}": note}), max(self._last_step, 0))

    def flush(self) -> None:
        with self._lock:
            if self._writer is not None and not self._finished:
                self._writer.flush()

    def finish(self) -> None:
        with self._lock:
            if self._finished:
                return
            self._finished = True
            if self._writer is not None:
                self._writer.flush()
                self._writer.close()

    def _check_open(self) -> None:
        if self._finished:
            raise RuntimeError(f"TensorboardTracker for {self.logdir!r} is finished; start a new tracker to log more")

    def _summary_values(self, metrics: Mapping[str, Any]) -> list[Any]:
        flat = flatten(metrics)
        values = []
        for key, raw in to_host(flat).items():
            values.extend(_summary_values(key, normalize(key, raw, num_bins=self.histogram_bins)))
        return values

    def _write(self, values: list[Any], step: int) -> None:
        from tensorboard.compat.proto import summary_pb2

        if self._writer is None:
            return
        if step < self._last_step:
            self._restart_at = step
        if self._restart_at is not None:
            self._add_session_start(self._restart_at)
            self._restart_at = None
            self._last_step = step  # TensorBoard drops the old timeline from here on
        self._last_step = max(self._last_step, step)
        if values:
            self._add(summary=summary_pb2.Summary(value=values), step=step)

    def _add_session_start(self, step: int) -> None:
        from tensorboard.compat.proto import event_pb2

        self._add(session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START), step=step)

    def _add(self, *, step: int, **fields: Any) -> None:
        from tensorboard.compat.proto import event_pb2

        if self._writer is not None:
            self._writer.add_event(event_pb2.Event(wall_time=time.time(), step=step, **fields))

    def __repr__(self) -> str:
        return f"TensorboardTracker(logdir={self.logdir!r})"


def _summary_values(key: str, value: HostValue) -> list[Any]:
    from tensorboard.compat.proto import summary_pb2
    from tensorboard.plugins.histogram import metadata as histogram_metadata
    from tensorboard.plugins.image import metadata as image_metadata
    from tensorboard.plugins.scalar import metadata as scalar_metadata
    from tensorboard.plugins.text import summary_v2 as text_summary
    from tensorboard.util import tensor_util

    if value is None:
        return []
    if isinstance(value, str):
        return list(text_summary.text_pb(key, value).value)
    if isinstance(value, Histogram):
        limits = np.asarray(value.bucket_limits, dtype=np.float64)
        buckets = np.stack([limits[:-1], limits[1:], np.asarray(value.bucket_counts, dtype=np.float64)], axis=1)
        return [
            summary_pb2.Summary.Value(
                tag=key,
                metadata=histogram_metadata.create_summary_metadata(display_name=key, description=""),
                tensor=tensor_util.make_tensor_proto(buckets),
            )
        ]
    if isinstance(value, Image):
        pixels = value.to_uint8()
        encoded = [str(pixels.shape[2]).encode(), str(pixels.shape[1]).encode()]
        encoded.extend(_png(image) for image in pixels)
        return [
            summary_pb2.Summary.Value(
                tag=key,
                metadata=image_metadata.create_summary_metadata(display_name=key, description=value.caption or ""),
                tensor=tensor_util.make_tensor_proto(np.array(encoded, dtype=object)),
            )
        ]
    try:
        number = np.float64(value)
    except OverflowError:
        raise ValueError(f"metric {key!r}: {value!r} is too large for TensorBoard's float64 scalars") from None
    return [
        summary_pb2.Summary.Value(
            tag=key,
            metadata=scalar_metadata.create_summary_metadata(display_name=key, description=""),
            tensor=tensor_util.make_tensor_proto(number),
        )
    ]


def _png(image: np.ndarray) -> bytes:
    pil = import_optional("PIL.Image", extra="tensorboard", purpose="Logging images to TensorBoard")
    buffer = io.BytesIO()
    pil.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buffer, format="PNG")
    return buffer.getvalue()


def _hparam_value(value: Any) -> bool | int | float | str:
    """A hyperparameter as one of the types the HParams plugin stores (others become their text)."""
    value = to_host({"v": value})["v"]
    if isinstance(value, np.generic) and value.ndim == 0:
        value = value.item()
    if isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float)):
        return value if abs(value) < 2**53 or isinstance(value, float) else str(value)
    return str(value.tolist() if isinstance(value, np.ndarray) else value)


@TrackerConfig.register("tensorboard")
@dataclasses.dataclass(frozen=True)
class TensorboardConfig(TrackerConfig):
    """``type: tensorboard``: a :class:`TensorboardTracker` writing to ``logdir/<run_id>``.

    >>> TensorboardConfig(logdir="logs").logdir
    'logs'
    """

    logdir: str = "tblogs"
    flush_secs: float = 10.0
    max_queue: int = 100
    filename_suffix: str = ""
    histogram_bins: int = DEFAULT_NUM_BINS

    def init(self, run_id: str | None) -> TensorboardTracker:
        logdir = os.path.join(self.logdir, run_id) if run_id else self.logdir
        return TensorboardTracker(
            logdir,
            flush_secs=self.flush_secs,
            max_queue=self.max_queue,
            filename_suffix=self.filename_suffix,
            histogram_bins=self.histogram_bins,
        )
