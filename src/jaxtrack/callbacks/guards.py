"""Guards that stop training from reported values: ``TerminateOnNaN`` and ``EarlyStopping``.

They read what jaxtrack's dispatcher already fetched for the trackers
(``jaxtrack.pipeline.taps.ReportedValues``), so they cost no device sync and
need no wiring: put them in the same hooks list as ``ReportMetrics``. A value
is seen once the dispatcher has handed it to the backends, so a NaN may be
noticed a few steps after it was reported; ``on_end`` flushes
(``jaxtrack.flush``) and looks once more, so it is never missed.

In a multi-process (``jax.distributed``) run every host must stop at the same
step, or the others would wait in a collective forever; but each host's
dispatcher delivers at its own pace. So process 0 decides, and its decision is
shared with every host every ``MULTIHOST_CHECK_EVERY`` (10) steps (a small
collective on the training thread, where all hosts make it at the same step).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from typing import Any, Literal

import numpy as np

from jaxtrack import api, multihost, pipeline
from jaxtrack.callbacks.base import Callback
from jaxtrack.errors import StopTraining
from jaxtrack.pipeline.taps import NonFinite

logger = logging.getLogger(__name__)

MULTIHOST_CHECK_EVERY = 10
"""In a multi-process run, how often (in steps) process 0's decision to stop is shared with every host."""


class _ReportedValuesReader(Callback):
    """Reads the values reported since the last look, every one of them, in order."""

    def __init__(self) -> None:
        self._reported = pipeline.reported().reader()
        self._reason: str | None = None  # why to stop, decided and not acted on yet

    def _fresh(self) -> list[tuple[str, int | None, Any]]:
        return self._reported.read()

    def _decide(self, reason: str | None, step: int) -> None:
        """Stops now if ``reason`` (or an earlier one) says so, on every host at the same step."""
        self._reason = self._reason or reason
        if multihost.process_count() > 1:
            if step % MULTIHOST_CHECK_EVERY:
                return
            from jax.experimental import multihost_utils

            stop = multihost_utils.broadcast_one_to_all(np.int32(self._reason is not None))
            if not int(stop):
                return
            self._reason = self._reason or "process 0 stopped training"
        if self._reason is not None:
            # Mark the run, so the reason is recorded with it, then stop the loop.
            api.log_summary({"stopped_early": self._reason, "stopped_at_step": step})
            raise StopTraining(self._reason, step=step)


class TerminateOnNaN(_ReportedValuesReader):
    """Stops training (raises [`StopTraining`][jaxtrack.callbacks.StopTraining]) once a reported metric is NaN or infinite.

    ``keys`` limits the check to those metrics (default: every numeric one).
    The run's summary records why it stopped (``stopped_early``,
    ``stopped_at_step``); a non-finite value seen only as training ends is
    logged as a warning and recorded in the summary (``nonfinite_metric``).

    Examples:
        >>> import jaxtrack as jt
        >>> from jaxtrack.callbacks import StopTraining, TerminateOnNaN
        >>> guard = TerminateOnNaN(keys=["train/loss"])
        >>> with jt.current_tracker(jt.NoopTracker()):
        ...     try:
        ...         for step, loss in enumerate([0.5, 0.25, float("nan"), 0.125], start=1):
        ...             jt.log({"train/loss": loss}, step=step)
        ...             _ = jt.flush()  # only to make the example exact: the guard sees values once delivered
        ...             guard(step)
        ...     except StopTraining as stop:
        ...         print(stop.reason)
        train/loss is nan at step 3
    """

    def __init__(self, *, keys: Iterable[str] | None = None) -> None:
        super().__init__()
        self.keys = None if keys is None else set(keys)

    def on_step(self, step: int, **context: Any) -> None:
        reason = None
        for key, at, value in self._fresh():
            if (self.keys is None or key in self.keys) and not _finite(value):
                reason = f"{key} is {_describe(value)} at step {at}"
                break
        self._decide(reason, step)

    def on_end(self, step: int, **context: Any) -> None:
        api.flush()
        for key, at, value in self._fresh():
            if (self.keys is None or key in self.keys) and not _finite(value):
                logger.warning("jaxtrack: %s is %s at step %s (seen as training ended)", key, _describe(value), at)
                api.log_summary({"nonfinite_metric": key, "nonfinite_at_step": at})


class EarlyStopping(_ReportedValuesReader):
    """Stops training when ``monitor`` has not improved for ``patience`` reports.

    ``mode`` is ``"min"`` (a loss) or ``"max"`` (an accuracy); a report
    improves on the best so far only by more than ``min_delta``. The best
    value and its step are in ``best`` and ``best_step``.

    Examples:
        >>> import jaxtrack as jt
        >>> from jaxtrack.callbacks import EarlyStopping, StopTraining
        >>> stopper = EarlyStopping("eval/loss", mode="min", patience=2)
        >>> with jt.current_tracker(jt.NoopTracker()):
        ...     try:
        ...         for step, loss in enumerate([1.0, 0.5, 0.6, 0.7, 0.8], start=1):
        ...             jt.log({"eval/loss": loss}, step=step)
        ...             _ = jt.flush()  # only to make the example exact: the guard sees values once delivered
        ...             stopper(step)
        ...     except StopTraining as stop:
        ...         print(stop.reason)
        eval/loss did not improve on 0.5 (step 2) for 2 reports
        >>> stopper.best, stopper.best_step
        (0.5, 2)
    """

    def __init__(
        self, monitor: str, *, mode: Literal["min", "max"] = "min", patience: int = 5, min_delta: float = 0.0
    ) -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"EarlyStopping mode must be 'min' or 'max', got {mode!r}")
        if patience < 1:
            raise ValueError(f"EarlyStopping patience must be at least 1, got {patience!r}")
        if min_delta < 0:
            raise ValueError(f"EarlyStopping min_delta must be >= 0, got {min_delta!r}")
        super().__init__()
        self.monitor = monitor
        self.mode = mode
        self.patience = patience
        self.min_delta = min_delta
        self.best: float | None = None
        self.best_step: int | None = None
        self.waited = 0

    def on_step(self, step: int, **context: Any) -> None:
        reason = None
        if self._consume() and self.waited >= self.patience:
            reason = (
                f"{self.monitor} did not improve on {self.best:.6g} (step {self.best_step}) for {self.patience} reports"
            )
        self._decide(reason, step)

    def on_end(self, step: int, **context: Any) -> None:
        # Takes in the last reports, so best and best_step describe the whole run.
        api.flush()
        self._consume()

    def _consume(self) -> bool:
        """Folds in the monitored values reported since the last look; whether patience ran out."""
        for key, at, value in self._fresh():
            if key != self.monitor or isinstance(value, NonFinite):
                continue
            current = float(value)
            if self.best is None or self._improves(current):
                self.best, self.best_step, self.waited = current, at, 0
            else:
                self.waited += 1
                if self.waited >= self.patience:
                    return True
        return False

    def _improves(self, current: float) -> bool:
        assert self.best is not None
        if math.isnan(current):
            return False
        if self.mode == "min":
            return current < self.best - self.min_delta
        return current > self.best + self.min_delta


def _finite(value: Any) -> bool:
    if isinstance(value, NonFinite):
        return False
    return not isinstance(value, float) or math.isfinite(value)


def _describe(value: Any) -> str:
    if isinstance(value, NonFinite):
        return f"an array with {value.count} non-finite element(s)"
    return str(value)


__all__ = [
    "MULTIHOST_CHECK_EVERY",
    "EarlyStopping",
    "TerminateOnNaN",
]
