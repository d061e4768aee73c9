"""``ReportMetrics``: hands a ``jaxtrack.jit`` step's in-graph metrics to the trackers, periodically."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from jaxtrack.callbacks.base import PeriodicCallback
from jaxtrack.ingraph.tracked import TrackedFunction
from jaxtrack.trackers.base import Tracker


class ReportMetrics(PeriodicCallback):
    """Reports the metrics a [`jaxtrack.jit`][jaxtrack.jit] step collected since the last report.

    At each due step the interval's values go to ``tracker`` (default: the
    current tracker) through jaxtrack's pipeline, which fetches and reduces
    them on its own thread: nothing on the training thread waits for the
    device. With ``timing=True`` the same report carries
    ``{prefix}steps_per_sec`` and ``{prefix}step_time_secs``, measured on the
    host clock between reports (no device sync; with asynchronous dispatch
    the host may run a few steps ahead, which averages out over an interval).
    The first step, whose time is mostly compilation, is left out of it.
    At the end of training the last, partial interval is reported too.

    Examples:
        >>> import jax.numpy as jnp, jaxtrack as jt
        >>> from jaxtrack.callbacks import ReportMetrics
        >>> @jt.jit
        ... def step(x):
        ...     jt.jit_log({"x": x})
        ...     return x + 1
        >>> hooks = [ReportMetrics(step, every_steps=2, prefix="train/")]
        >>> with jt.current_tracker(jt.NoopTracker()):
        ...     x = jnp.float32(0)
        ...     for i in range(1, 5):
        ...         x = step(x)
        ...         for hook in hooks:
        ...             hook(i)
    """

    def __init__(
        self,
        tracked_fn: TrackedFunction,
        *,
        every_steps: int | None = None,
        every_secs: float | None = None,
        on_steps: Iterable[int] | None = None,
        prefix: str = "",
        tracker: Tracker | None = None,
        timing: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not isinstance(tracked_fn, TrackedFunction):
            raise TypeError(f"ReportMetrics reports a jaxtrack.jit function, got {tracked_fn!r}")
        super().__init__(every_steps=every_steps, every_secs=every_secs, on_steps=on_steps, clock=clock)
        self.tracked_fn = tracked_fn
        self.prefix = prefix
        self.tracker = tracker
        self.timing = timing
        self._clock = clock
        self._last: tuple[int, float] | None = None  # step and time of the last report (or the start)
        self._last_step: int | None = None
        self._begun = False

    def on_begin(self, step: int, **context: Any) -> None:
        super().on_begin(step, **context)
        self._last = None
        self._begun = True

    def on_step(self, step: int, **context: Any) -> None:
        self._last_step = step
        if self._last is None:
            # Steps/s is timed from the end of the first step, whose time is mostly compilation.
            self._last = (step, self._clock())
            if not self._begun:
                return  # a hand-written loop without on_begin: the schedule starts after this step too
        super().on_step(step, **context)

    def run(self, step: int, **context: Any) -> None:
        self._report(step)

    def on_end(self, step: int, **context: Any) -> None:
        if self.tracked_fn.steps_since_take:
            self._report(self._last_step if self._last_step is not None else step)

    def _report(self, step: int) -> None:
        extra = {}
        now = self._clock()
        if self.timing and self._last is not None and step > self._last[0] and now > self._last[1]:
            steps, seconds = step - self._last[0], now - self._last[1]
            extra = {f"{self.prefix}steps_per_sec": steps / seconds, f"{self.prefix}step_time_secs": seconds / steps}
        self.tracked_fn.report(step, tracker=self.tracker, prefix=self.prefix, extra=extra)
        self._last = (step, now)


__all__ = [
    "ReportMetrics",
]
