"""TensorBoard event files, written with the ``tensorboard`` package alone (no TensorFlow, no PyTorch).

Scalars go to the Scalars dashboard (as ``simple_value``, TensorBoard's
float32 scalar that both of its loaders read; steps are int64), strings to
Text, arrays (one or more dimensions) and [`Histogram`][jaxtrack.Histogram]
values to Histograms/Distributions,
[`Image`][jaxtrack.Image] values to Images, and hyperparameters to the HParams
dashboard. Needs ``pip install 'jaxtrack[tensorboard]'``.

Events are framed by TensorBoard's own ``RecordWriter`` into a file named and
headed exactly as its ``EventFileWriter`` does, but written on the tracker's
own lane thread: ``EventFileWriter`` hands each event to a writer thread of
its own, and on top of the lane's thread that hand-off cost more than the
write itself (about 110 against 45 microseconds per report of four scalars,
measured on a 2-core machine). Buffered events reach the disk with the
first write ``flush_secs`` after the last flush, on ``flush``/``finish``, and
once the dispatcher has been idle for two seconds
(``jaxtrack.pipeline.dispatcher.IDLE_FLUSH_SECS``).
"""

from __future__ import annotations

import dataclasses
import functools
import io
import itertools
import logging
import math
import os
import shutil
import socket
import threading
import time
import types
from collections.abc import Mapping
from typing import Any, cast

import numpy as np

from jaxtrack._artifacts import copy_artifact, own_folder
from jaxtrack._optional import import_optional
from jaxtrack._paths import safe_file_name
from jaxtrack.ids import validate_run_id
from jaxtrack.multihost import per_process, writes
from jaxtrack.trackers.base import Tracker
from jaxtrack.trackers.config import TrackerConfig
from jaxtrack.values import DEFAULT_NUM_BINS, HOST_SCALAR_TYPES, Histogram, HostValue, Image, to_plain

logger = logging.getLogger(__name__)

_FLOAT32_MAX = float(np.finfo(np.float32).max)


class TensorboardTracker(Tracker):
    """Writes a run as TensorBoard event files under ``logdir``.

    Steps that go back (a run resumed from an older checkpoint) are handled as
    TensorBoard expects: each tracker session, and each step that goes back,
    starts with a ``SessionLog.START`` event, on which TensorBoard discards
    the earlier session's values at that step and later, so the resumed
    values replace them instead of zig-zagging. In a multi-process JAX run
    only process 0 writes.

    TensorBoard has no run summary: ``log_summary`` writes its values at the
    latest step, where the HParams dashboard also picks them up as metrics.
    TensorBoard cannot show files: ``log_artifact`` copies the file or
    directory to ``logdir/artifacts/`` and writes a text note about it. No
    link inside a directory artifact is followed: one that stays inside it is
    kept as a link, others are left out with an
    [`ArtifactWarning`][jaxtrack.errors.ArtifactWarning] naming them.

    Args:
        logdir: the run's directory (one run per directory, as TensorBoard expects),
            made absolute when the tracker starts.
        flush_secs: how often buffered events reach the disk.
        filename_suffix: appended to the event file's name.
        histogram_bins: buckets of the histogram made from an array value.
        all_processes: in a multi-process run, every process writes (process
            ``i`` into ``<logdir>-process<i>``), not only process 0.

    Examples:
        >>> import tempfile, jaxtrack as jt
        >>> from jaxtrack.trackers.tensorboard import TensorboardTracker
        >>> with TensorboardTracker(tempfile.mkdtemp()) as tb:
        ...     tb.log({"train": {"loss": 0.5}, "note": "warm-up"}, step=1)
        ...     tb.log_hyperparameters({"lr": 1e-3, "model": {"width": 256}})
    """

    name = "tensorboard"

    def __init__(
        self,
        logdir: str | os.PathLike[str],
        *,
        flush_secs: float = 10.0,
        filename_suffix: str = "",
        histogram_bins: int = DEFAULT_NUM_BINS,
        all_processes: bool = False,
    ) -> None:
        import_optional("tensorboard", extra="tensorboard", purpose="TensorboardTracker")

        # Absolute when the run starts: artifacts logged after an os.chdir (Hydra makes one) still go here.
        self.logdir = os.path.abspath(logdir)
        if all_processes:
            self.logdir = per_process(os.path.normpath(self.logdir))  # a sibling run per process
        self.histogram_bins = histogram_bins
        self._lock = threading.RLock()
        self._session_started = False  # this session's START event is written
        self._last_step = -1
        self._hparams: dict[str, bool | int | float | str] = {}
        self._hparams_due = False
        self._hparams_written = False
        self._start_time = time.time()
        self._finished = False
        self._described: set[str] = set()
        self._artifact_names: dict[
            str, str
        ] = {}  # file name under artifacts/ -> the artifact's name  # tags whose plugin metadata is in this event file
        self._writer = (
            _EventFile(self.logdir, flush_secs=flush_secs, suffix=filename_suffix) if writes(all_processes) else None
        )

    def log(self, metrics: Mapping[str, Any], *, step: int | None = None, commit: bool | None = None) -> None:
        with self._lock:
            self._check_open()
            if self._writer is None:  # a process that does not write: no summaries to build
                return
            self._write(self._summary_values(metrics), cast(int, step))  # the front door gives every call its step

    def validate(self, metrics: Mapping[str, Any]) -> None:
        # Numbers on the host are checked at the call; a JAX array's value is known only once fetched.
        for key, value in metrics.items():
            if isinstance(value, (bool, np.bool_)):
                continue
            if type(value) in HOST_SCALAR_TYPES or (
                isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "iuf"
            ):
                _float32_scalar(key, value)

    def log_summary(self, metrics: Mapping[str, Any]) -> None:
        # TensorBoard has no run summary: the values are written at the latest
        # step, where the HParams dashboard also picks them up as metrics.
        with self._lock:
            self._check_open()
            self._write(self._summary_values(metrics), max(self._last_step, 0))

    def log_hyperparameters(self, hparams: Mapping[str, Any]) -> None:
        with self._lock:
            self._check_open()
            for key, value in hparams.items():
                self._hparams[key] = _hparam_value(value)
            if self._hparams_written:
                logger.warning(
                    "TensorboardTracker(%r): hyperparameters logged after the run's first values are written, "
                    "but TensorBoard's HParams dashboard shows the first ones a run wrote",
                    self.logdir,
                )
            self._hparams_due = True

    def _write_hparams(self) -> None:
        # TensorBoard keeps the first session-start record of a run, so it is
        # written once, with every hyperparameter logged before the first values.
        if not self._hparams_due:
            return
        self._hparams_due = False
        self._hparams_written = True
        summary = _tb().hparams_summary.hparams_pb(
            self._hparams, trial_id=os.path.basename(os.path.normpath(self.logdir)), start_time_secs=self._start_time
        )
        self._add(summary=summary, step=0)

    def log_artifact(
        self, artifact_path: str | os.PathLike[str], *, name: str | None = None, type: str | None = None
    ) -> None:
        # TensorBoard cannot show files, so the artifact is kept beside the run's event files.
        with self._lock:
            self._check_open()
            source = os.fspath(artifact_path)
            source_name = os.path.basename(os.path.normpath(source))
            # A name without a suffix keeps the file's: "config" from config.yaml stays a .yaml file.
            suffix = os.path.splitext(source_name)[1] if name and os.path.isfile(source) else ""
            target_name = self._artifact_file_name(name or source_name, suffix)
            if self._writer is None:
                return
            os.makedirs(self.logdir, exist_ok=True)
            folder = own_folder(os.path.join(self.logdir, "artifacts"), owner="the TensorBoard run")
            target = os.path.join(folder, target_name)
            if os.path.isdir(target) and not os.path.islink(target):
                shutil.rmtree(target)
            elif os.path.lexists(target):
                os.remove(target)
            copy_artifact(source, target, name=name or source_name)
            # The source's name, not its path: it may be a temporary file, and paths name the machine.
            note = f"artifact of type {type or 'unspecified'} from {source_name}, stored at artifacts/{target_name}"
            self._write(self._summary_values({f"artifacts/{target_name}": note}), max(self._last_step, 0))

    def _artifact_file_name(self, name: str, suffix: str = "") -> str:
        """A safe file name for artifact ``name``: the same name again replaces it, another never does."""
        base = safe_file_name(name)
        if suffix and not os.path.splitext(base)[1]:
            base += suffix
        stem, extension = os.path.splitext(base)
        candidate, number = base, 1
        while self._artifact_names.setdefault(candidate, name) != name:
            number += 1
            candidate = f"{stem}-{number}{extension}"  # model_v1-2.txt, still opened as a .txt
        return candidate

    def flush(self) -> None:
        with self._lock:
            if self._writer is not None and not self._finished:
                self._write_hparams()
                self._writer.flush()

    def finish(self) -> None:
        with self._lock:
            if self._finished:
                return
            self._finished = True
            if self._writer is not None:
                self._write_hparams()
                self._writer.close()

    def _check_open(self) -> None:
        if self._finished:
            raise RuntimeError(f"TensorboardTracker for {self.logdir!r} is finished; start a new tracker to log more")

    def _summary_values(self, metrics: Mapping[str, HostValue]) -> list[Any]:
        values = []
        for key, value in metrics.items():
            summary = _summary_value(key, value, key not in self._described)
            if summary is not None:
                values.append(summary)
        return values

    def _write(self, values: list[Any], step: int) -> None:
        if self._writer is None:
            return
        self._write_hparams()
        if not self._session_started or step < self._last_step:
            # TensorBoard drops what earlier sessions wrote at this step and later.
            self._add_session_start(step)
            self._session_started = True
            self._last_step = step
        self._last_step = max(self._last_step, step)
        if values:
            self._add(summary=_tb().summary_pb2.Summary(value=values), step=step)
            self._described.update(value.tag for value in values)

    def _add_session_start(self, step: int) -> None:
        event_pb2 = _tb().event_pb2
        self._add(session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START), step=step)

    def _add(self, *, step: int, **fields: Any) -> None:
        if self._writer is not None:
            self._writer.write(_tb().event_pb2.Event(wall_time=time.time(), step=step, **fields))

    def __repr__(self) -> str:
        return f"TensorboardTracker(logdir={self.logdir!r})"


class _EventFile:
    """One event file, named and headed as TensorBoard's ``EventFileWriter`` does."""

    _counter = itertools.count()

    def __init__(self, logdir: str, *, flush_secs: float, suffix: str) -> None:
        os.makedirs(logdir, exist_ok=True)
        name = f"events.out.tfevents.{time.time():010.0f}.{socket.gethostname()}.{os.getpid()}.{next(self._counter):06d}{suffix}"
        self.path = os.path.join(logdir, name)
        self._file = open(self.path, "wb")
        self._records = _tb().RecordWriter(self._file)
        self._flush_secs = flush_secs
        self._flushed_at = time.monotonic()
        self.write(_tb().event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))
        self.flush()

    def write(self, event: Any) -> None:
        self._records.write(event.SerializeToString())
        if time.monotonic() - self._flushed_at >= self._flush_secs:
            self.flush()

    def flush(self) -> None:
        self._file.flush()
        self._flushed_at = time.monotonic()

    def close(self) -> None:
        self.flush()
        self._file.close()


@functools.cache
def _tb() -> types.SimpleNamespace:
    """TensorBoard's modules, imported once the first tracker needs them (not at ``import jaxtrack``)."""
    from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2
    from tensorboard.plugins.histogram import metadata as histogram_metadata
    from tensorboard.plugins.hparams import summary_v2 as hparams_summary
    from tensorboard.plugins.image import metadata as image_metadata
    from tensorboard.plugins.text import metadata as text_metadata
    from tensorboard.summary.writer.record_writer import RecordWriter
    from tensorboard.util import tensor_util

    return types.SimpleNamespace(
        event_pb2=event_pb2,
        summary_pb2=summary_pb2,
        tensor_pb2=tensor_pb2,
        tensor_shape_pb2=tensor_shape_pb2,
        types_pb2=types_pb2,
        histogram_metadata=histogram_metadata,
        hparams_summary=hparams_summary,
        image_metadata=image_metadata,
        text_metadata=text_metadata,
        RecordWriter=RecordWriter,
        tensor_util=tensor_util,
    )


def _summary_value(key: str, value: HostValue, with_metadata: bool) -> Any:
    """One ``Summary.Value``; the plugin metadata is needed only on a tag's first write (as ``tf.summary`` does)."""
    tb = _tb()
    if type(value) is float:  # the common case first
        return _scalar_value(tb, key, value)
    if value is None:
        return None
    if isinstance(value, str):
        tensor = tb.tensor_util.make_tensor_proto(value)
        metadata = tb.text_metadata.create_summary_metadata(display_name=None, description=None)
    elif isinstance(value, Histogram):
        limits = np.asarray(value.bucket_limits, dtype=np.float64)
        buckets = np.stack([limits[:-1], limits[1:], np.asarray(value.bucket_counts, dtype=np.float64)], axis=1)
        tensor = tb.tensor_util.make_tensor_proto(buckets)
        metadata = tb.histogram_metadata.create_summary_metadata(display_name=key, description="")
    elif isinstance(value, Image):
        pixels = value.to_uint8()
        encoded = [str(pixels.shape[2]).encode(), str(pixels.shape[1]).encode()]
        encoded.extend(_png(image) for image in pixels)
        tensor = tb.tensor_util.make_tensor_proto(np.array(encoded, dtype=object))
        metadata = tb.image_metadata.create_summary_metadata(display_name=key, description=value.caption or "")
    else:
        return _scalar_value(tb, key, value)
    return tb.summary_pb2.Summary.Value(tag=key, tensor=tensor, metadata=metadata if with_metadata else None)


def _scalar_value(tb: types.SimpleNamespace, key: str, number: Any) -> Any:
    # Summary.Value.simple_value: TensorBoard's classic float32 scalar, read by both
    # of its loaders, and a third of the bytes (to checksum) of a tensor-plugin scalar.
    return tb.summary_pb2.Summary.Value(tag=key, simple_value=_float32_scalar(key, number))


def _float32_scalar(key: str, value: Any) -> float:
    """``value`` as the float TensorBoard stores, or a ``ValueError`` naming ``key`` if it is beyond float32."""
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    else:
        if not math.isfinite(number) or abs(number) <= _FLOAT32_MAX:
            return number
    raise ValueError(f"metric {key!r}: {value!r} is too large for a TensorBoard scalar (float32)")


def _png(image: np.ndarray) -> bytes:
    pil = import_optional("PIL.Image", extra="tensorboard", purpose="Logging images to TensorBoard")
    buffer = io.BytesIO()
    pil.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buffer, format="PNG")
    return buffer.getvalue()


def _hparam_value(value: Any) -> bool | int | float | str:
    """A host hyperparameter as one of the types the HParams plugin stores (others become their text)."""
    value = to_plain(value)
    if isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float)):
        # Stored as a double: an int too large for one exactly is kept as its text.
        return value if abs(value) < 2**53 or isinstance(value, float) else str(value)
    return str(value)


@TrackerConfig.register("tensorboard")
@dataclasses.dataclass(frozen=True)
class TensorboardConfig(TrackerConfig):
    """``type: tensorboard``: a [`TensorboardTracker`][jaxtrack.trackers.tensorboard.TensorboardTracker] writing to ``logdir/<run_id>``.

    The other fields are ``TensorboardTracker``'s arguments.

    Examples:
        >>> TensorboardConfig(logdir="logs").to_dict()
        {'type': 'tensorboard', 'logdir': 'logs', 'flush_secs': 10.0, 'filename_suffix': '', 'histogram_bins': 64, 'all_processes': False}
    """

    logdir: str = "tblogs"
    flush_secs: float = 10.0
    filename_suffix: str = ""
    histogram_bins: int = DEFAULT_NUM_BINS
    all_processes: bool = False

    def init(self, run_id: str | None) -> TensorboardTracker:
        logdir = os.path.join(self.logdir, validate_run_id(run_id)) if run_id else self.logdir
        return TensorboardTracker(
            logdir,
            flush_secs=self.flush_secs,
            filename_suffix=self.filename_suffix,
            histogram_bins=self.histogram_bins,
            all_processes=self.all_processes,
        )


__all__ = [
    "TensorboardConfig",
    "TensorboardTracker",
]
