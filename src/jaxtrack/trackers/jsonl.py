"""JSON lines: one JSON object a report, appended to a file or logged to a Python logger.

``type: json_logger`` (Levanter's name for it). Every record is one line and
carries a ``"type"``: ``"log"`` (with ``"step"``, ``"time"`` and the report's
values as top-level keys, so ``pandas.read_json(path, lines=True)`` makes one
column a metric), ``"summary"``, ``"hyperparameters"``, ``"artifact"`` and
``"finish"`` (with the run's ``"status"``). ``RESERVED_KEYS`` are the keys
every ``log`` record has, which no metric may take; the lines go to the logger
``DEFAULT_LOGGER`` (``"jaxtrack.json_logger"``) unless a file or another logger
is given.

Values are written so that any JSON reader takes them: integers exact, bools as
``true``/``false``, text as strings, NaN and infinities as the strings
``"NaN"``, ``"Infinity"`` and ``"-Infinity"`` (``float()`` turns them back; bare
``NaN`` is not JSON), a histogram as an object of its statistics and buckets
(``min``, ``max``, ``num``, ``sum``, ``sum_squares``, ``bucket_limits``,
``bucket_counts``, as Levanter writes one), an image as a description
(``{"image": {"shape": [...], "caption": ...}}``), never its pixels.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import math
import os
import sys
import time
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxtrack.errors import DataLossWarning
from jaxtrack.multihost import per_process, writes
from jaxtrack.store.writer import SYNC_SECS
from jaxtrack.trackers.base import Tracker
from jaxtrack.trackers.config import TrackerConfig
from jaxtrack.values import DEFAULT_NUM_BINS, Histogram, Image

DEFAULT_LOGGER = "jaxtrack.json_logger"
RESERVED_KEYS = ("type", "step", "time")
"""Keys every ``log`` record has; a metric may not take one of these names."""


class JsonLinesTracker(Tracker):
    """Writes each report as one JSON object a line, to a file (append-only) or a ``logging`` logger.

    To a file, each record is appended with one ``write`` of the whole line
    (``O_APPEND``), so a process killed at any moment (even by ``SIGKILL``)
    leaves only whole lines; the file is synced to disk at most every
    ``SYNC_SECS`` seconds while the run writes, at ``flush`` and at ``finish``.
    A file that ends in part of a line (a kill in the middle of a long write,
    which Linux may cut short) has that part cut off, with a
    [`DataLossWarning`][jaxtrack.DataLossWarning], when a tracker opens it again.
    A line the disk has no room for fails its report (counted, and reported
    at the end like any backend failure) and leaves no part of it in the file.
    A relative ``path`` is made absolute when the tracker starts. In a
    multi-process JAX run only process 0 writes, unless ``all_processes``.

    Args:
        path: the file the lines are appended to (created with its directory if missing).
        logger: a logger or a logger's name to log the lines to instead of a
            file; the default when no ``path`` is given (``"jaxtrack.json_logger"``).
        level: the level of the logged lines.
        histogram_bins: buckets of the histogram made from an array value.
        all_processes: in a multi-process run, every process writes, process
            ``i`` to ``<path stem>-process<i><suffix>``, not only process 0.

    Examples:
        >>> import json, os, tempfile
        >>> from jaxtrack.trackers.jsonl import JsonLinesTracker
        >>> path = os.path.join(tempfile.mkdtemp(), "run.jsonl")
        >>> with JsonLinesTracker(path) as tracker:
        ...     tracker.log({"train": {"loss": 0.5}, "tokens": 2**40}, step=1)
        >>> [json.loads(line) for line in open(path)][0]["train/loss"]
        0.5
        >>> [json.loads(line)["type"] for line in open(path)]
        ['log', 'finish']
    """

    name = "json_logger"
    histogram_bins: int

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        logger: logging.Logger | str | None = None,
        level: int | str = logging.INFO,
        histogram_bins: int = DEFAULT_NUM_BINS,
        all_processes: bool = False,
    ) -> None:
        if path is not None and logger is not None:
            raise ValueError("json_logger writes to a file (path) or a logger, not both: give one of them")
        self.histogram_bins = histogram_bins
        self.path: str | None = None
        self.logger: logging.Logger | None = None
        self.level = logging.getLevelName(level) if isinstance(level, str) else level
        if not isinstance(self.level, int):
            raise ValueError(f"json_logger: unknown logging level {level!r}")
        self._status = "finished"
        self._fd: int | None = None  # the open file; None when logging, or in a process that does not write
        self._synced_at = time.monotonic()
        if path is not None:
            # Absolute at start: lines logged after an os.chdir (Hydra makes one) still go to the same file.
            self.path = os.path.abspath(path)
            if all_processes:
                stem, suffix = os.path.splitext(self.path)
                self.path = per_process(stem) + suffix
        if not writes(all_processes):
            return
        if self.path is not None:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
            _cut_torn_tail(self._fd, self.path)
            return
        self.logger = logger if isinstance(logger, logging.Logger) else logging.getLogger(logger or DEFAULT_LOGGER)
        if not self.logger.hasHandlers():
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("%(message)s"))  # the line stays one JSON object
            self.logger.addHandler(handler)
        if self.logger.getEffectiveLevel() > self.level:
            self.logger.setLevel(self.level)

    # jaxtrack calls these on the tracker's own thread, one at a time, with flat values already
    # normalised and every log's step resolved (see jaxtrack.Tracker).

    def log(self, metrics: Mapping[str, Any], *, step: int | None = None, commit: bool | None = None) -> None:
        self._write({"type": "log", "step": step, "time": time.time(), **_values(metrics)})

    def validate(self, metrics: Mapping[str, Any]) -> None:
        for key in RESERVED_KEYS:
            if key in metrics:
                raise ValueError(f"metric name {key!r} is reserved by json_logger (a key of every record)")

    def log_summary(self, metrics: Mapping[str, Any]) -> None:
        self._write({"type": "summary", "time": time.time(), "summary": _values(metrics)})

    def log_hyperparameters(self, hparams: Mapping[str, Any]) -> None:
        self._write({"type": "hyperparameters", "time": time.time(), "hyperparameters": _values(hparams)})

    def log_artifact(
        self, artifact_path: str | os.PathLike[str], *, name: str | None = None, type: str | None = None
    ) -> None:
        path = os.path.abspath(artifact_path)
        record = {"type": "artifact", "time": time.time(), "path": path, "name": name or os.path.basename(path)}
        self._write({**record, "artifact_type": type})

    def set_status(self, status: str) -> None:
        self._status = status

    def flush(self) -> None:
        if self._fd is not None:
            os.fsync(self._fd)
            self._synced_at = time.monotonic()
        elif self.logger is not None:
            for handler in self.logger.handlers:
                handler.flush()

    def finish(self) -> None:
        try:
            self._write({"type": "finish", "time": time.time(), "status": self._status})
            self.flush()
        finally:  # a finish record the disk has no room for still closes the file
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def _write(self, record: Mapping[str, Any]) -> None:
        line = json.dumps(record, ensure_ascii=False, allow_nan=False)
        if self._fd is not None:
            data = (line + "\n").encode("utf-8")
            # One write of the whole line: O_APPEND puts it at the end in one piece, so a kill leaves
            # whole lines. A short write (the disk filled up part-way) is cut off again, so the next
            # line does not run on from half of this one, and fails the report (counted as lost).
            written = os.write(self._fd, data)
            if written != len(data):
                os.ftruncate(self._fd, os.lseek(self._fd, 0, os.SEEK_END) - written)
                raise OSError(
                    errno.ENOSPC, f"json_logger wrote {written} of {len(data)} bytes of a line (taken back)", self.path
                )
            if time.monotonic() - self._synced_at >= SYNC_SECS:
                os.fsync(self._fd)
                self._synced_at = time.monotonic()
        elif self.logger is not None:
            self.logger.log(self.level, line)

    def __repr__(self) -> str:
        target = f"path={self.path!r}" if self.path is not None else f"logger={getattr(self.logger, 'name', None)!r}"
        return f"JsonLinesTracker({target})"


def _cut_torn_tail(fd: int, path: str) -> None:
    """Cuts off a last line without its newline: what a kill during a write left (Linux may stop a
    large write part-way for ``SIGKILL``), so the lines appended now do not run on from it."""
    end = os.fstat(fd).st_size
    if end == 0 or os.pread(fd, 1, end - 1) == b"\n":
        return
    start = end
    while start > 0:
        size = min(start, 1 << 16)
        block = os.pread(fd, size, start - size)
        newline = block.rfind(b"\n")
        if newline >= 0:
            start = start - size + newline + 1
            break
        start -= size
    os.ftruncate(fd, start)
    warnings.warn(
        f"json_logger: {path} ended in {end - start} bytes of a line cut short (a process killed while it wrote); "
        "they are removed and the lines before them kept",
        DataLossWarning,
        stacklevel=3,
    )


def _values(metrics: Mapping[str, Any]) -> dict[str, Any]:
    return {str(key): _jsonable(value) for key, value in metrics.items()}


def _jsonable(value: Any) -> Any:
    """A value as JSON takes it: see the module's description.

    Examples:
        >>> _jsonable(float("inf")), _jsonable(2**70), _jsonable(np.float32(0.5))
        ('Infinity', 1180591620717411303424, 0.5)
    """
    if isinstance(value, bool | str | None):
        return value
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        number = float(value)
        if math.isnan(number):
            return "NaN"
        if math.isinf(number):
            return "Infinity" if number > 0 else "-Infinity"
        return number
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, Histogram):
        fields = ("min", "max", "num", "sum", "sum_squares", "bucket_limits", "bucket_counts")
        return {field: _jsonable(getattr(value, field)) for field in fields}
    if isinstance(value, Image):
        return {"image": {"shape": list(value.to_uint8().shape), "caption": value.caption}}
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, Mapping):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    return str(value)  # a hyperparameter of another kind (a path, a dtype): its text


@TrackerConfig.register("json_logger")
@dataclasses.dataclass(frozen=True)
class JsonLinesConfig(TrackerConfig):
    """``type: json_logger``: a [`JsonLinesTracker`][jaxtrack.trackers.jsonl.JsonLinesTracker].

    Give ``path`` to append the lines to a file, else they go to the logger
    named ``logger``. The fields are ``JsonLinesTracker``'s arguments.

    Examples:
        >>> JsonLinesConfig(path="runs/run.jsonl").to_dict()
        {'type': 'json_logger', 'path': 'runs/run.jsonl', 'logger': None, 'level': 'INFO', 'histogram_bins': 64, 'all_processes': False}
    """

    path: str | None = None
    logger: str | None = None
    level: str = "INFO"
    histogram_bins: int = DEFAULT_NUM_BINS
    all_processes: bool = False

    def init(self, run_id: str | None) -> JsonLinesTracker:
        return JsonLinesTracker(
            self.path,
            logger=self.logger,
            level=self.level,
            histogram_bins=self.histogram_bins,
            all_processes=self.all_processes,
        )


__all__ = ["DEFAULT_LOGGER", "RESERVED_KEYS", "JsonLinesConfig", "JsonLinesTracker"]
