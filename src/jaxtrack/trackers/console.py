"""The console: one line per report through Python's ``logging``.

Lines go to the logger named ``DEFAULT_LOGGER`` (``"jaxtrack.console"``) unless
another is given.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from collections.abc import Mapping
from typing import Any

from jaxtrack.trackers.base import Tracker
from jaxtrack.trackers.config import TrackerConfig
from jaxtrack.values import Histogram, HostValue, Image

DEFAULT_LOGGER = "jaxtrack.console"


class ConsoleTracker(Tracker):
    """Writes each report as one line to a ``logging`` logger, e.g. ``step 100 | loss 0.231 | acc 0.93``.

    If logging is not configured at all (no handler on the logger or its
    parents), the logger gets a handler to stderr so the lines are seen.

    Args:
        logger: a logger or a logger's name.
        level: the level of the lines.
        precision: significant digits of floats.

    Examples:
        >>> import logging, sys
        >>> from jaxtrack.trackers.console import ConsoleTracker
        >>> console = ConsoleTracker(logger="doc.console")
        >>> handler = logging.StreamHandler(sys.stdout)
        >>> console.logger.addHandler(handler)
        >>> console.log({"loss": 0.25, "train": {"acc": 0.875}}, step=100)
        >>> console.flush()  # the line is written on the console's own thread; flush waits for it
        step 100 | loss 0.25 | train/acc 0.875
    """

    name = "console"

    def __init__(
        self, *, logger: logging.Logger | str = DEFAULT_LOGGER, level: int | str = logging.INFO, precision: int = 6
    ) -> None:
        self.logger = logger if isinstance(logger, logging.Logger) else logging.getLogger(logger)
        self.level = logging.getLevelName(level) if isinstance(level, str) else level
        if not isinstance(self.level, int):
            raise ValueError(f"unknown logging level {level!r}")
        self.precision = precision
        if not self.logger.hasHandlers():
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
            self.logger.addHandler(handler)
        if self.logger.getEffectiveLevel() > self.level:
            self.logger.setLevel(self.level)

    def log(self, metrics: Mapping[str, Any], *, step: int | None = None, commit: bool | None = None) -> None:
        self._emit(f"step {step}", metrics)

    def log_summary(self, metrics: Mapping[str, Any]) -> None:
        self._emit("summary", metrics)

    def log_hyperparameters(self, hparams: Mapping[str, Any]) -> None:
        if self.logger.isEnabledFor(self.level):
            items = (f"{key} {value!r}" for key, value in hparams.items())
            self.logger.log(self.level, " | ".join(["hyperparameters", *items]))

    def log_artifact(
        self, artifact_path: str | os.PathLike[str], *, name: str | None = None, type: str | None = None
    ) -> None:
        self.logger.log(
            self.level,
            "artifact %s (%s): %s",
            name or os.path.basename(artifact_path),
            type or "unspecified",
            os.fspath(artifact_path),
        )

    def finish(self) -> None:
        for handler in self.logger.handlers:
            handler.flush()

    def _emit(self, head: str, metrics: Mapping[str, Any]) -> None:
        if not self.logger.isEnabledFor(self.level):
            return
        parts = [head]
        for key, value in metrics.items():
            parts.append(f"{key} {self._format(value)}")
        self.logger.log(self.level, " | ".join(parts))

    def _format(self, value: HostValue) -> str:
        if isinstance(value, float):
            return f"{value:.{self.precision}g}"
        if isinstance(value, Histogram):
            return f"histogram(n={value.num}, mean={value.mean:.{self.precision}g}, min={value.min:.{self.precision}g}, max={value.max:.{self.precision}g})"
        if isinstance(value, Image):
            return f"image{list(value.to_uint8().shape)}"
        return str(value)


@TrackerConfig.register("console")
@dataclasses.dataclass(frozen=True)
class ConsoleConfig(TrackerConfig):
    """``type: console``: a [`ConsoleTracker`][jaxtrack.trackers.console.ConsoleTracker].

    The fields are ``ConsoleTracker``'s arguments (``logger`` by name).

    Examples:
        >>> ConsoleConfig(level="DEBUG").init(None).level
        10
    """

    logger: str = DEFAULT_LOGGER
    level: str = "INFO"
    precision: int = 6

    def init(self, run_id: str | None) -> ConsoleTracker:
        return ConsoleTracker(logger=self.logger, level=self.level, precision=self.precision)


__all__ = [
    "DEFAULT_LOGGER",
    "ConsoleConfig",
    "ConsoleTracker",
]
