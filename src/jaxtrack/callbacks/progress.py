"""``ReportProgress``: a progress bar for the training loop that never waits for the device.

The bar (``tqdm.auto``, so a widget in a notebook and text in a terminal)
moves at its schedule by the number of steps the loop has dispatched, and
shows steps per second, the time left, and the latest metrics. Those metrics
are read from what jaxtrack's dispatcher has already fetched for the
trackers (``jaxtrack.pipeline.taps.ReportedValues``), so drawing the bar costs
no device sync: it shows the values reported so far, a little behind the
loop when the device is. With ``write_to_tracker=True`` the measured speed is
logged as ``STEPS_PER_SEC`` (``"steps_per_sec"``).

Needs ``pip install 'jaxtrack[progress]'`` (tqdm).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import IO, Any

from jaxtrack import api, pipeline
from jaxtrack._optional import import_optional
from jaxtrack.callbacks.base import PeriodicCallback
from jaxtrack.pipeline.taps import NonFinite

STEPS_PER_SEC = "steps_per_sec"


class ReportProgress(PeriodicCallback):
    """Shows a progress bar with steps/s, the time left and the latest reported metrics.

    ``num_train_steps`` gives the bar its total, hence the time left. The bar
    is redrawn when the schedule is due (by default once a second); steps/s
    is measured with ``clock`` between two redraws (not counting the first
    step, whose time is mostly compilation), and with
    ``write_to_tracker=True`` is also logged as ``steps_per_sec`` at that
    step. ``metrics`` limits the metrics shown to those keys (default: all
    reported ones). ``file`` is where a text bar is written (default: stderr).

    A step counts as done when the loop calls the callback with it:
    ``on_begin`` at step ``s`` means ``s - 1`` steps are done. In a loop
    without ``on_begin`` the bar starts at the first step it is called with.

    Examples:
        >>> import io, jaxtrack as jt
        >>> from jaxtrack.callbacks import CallbackList
        >>> from jaxtrack.callbacks.progress import ReportProgress
        >>> hooks = CallbackList([ReportProgress(4, every_steps=2, file=io.StringIO())])
        >>> with jt.current_tracker(jt.NoopTracker()):
        ...     hooks.on_begin(1)
        ...     for step in range(1, 5):
        ...         hooks(step)
        ...     hooks.on_end(4)
    """

    def __init__(
        self,
        num_train_steps: int | None = None,
        *,
        every_steps: int | None = None,
        every_secs: float | None = 1.0,
        on_steps: Iterable[int] | None = None,
        write_to_tracker: bool = True,
        metrics: Iterable[str] | None = None,
        file: IO[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if num_train_steps is not None and (
            isinstance(num_train_steps, bool) or not isinstance(num_train_steps, int) or num_train_steps < 0
        ):
            raise ValueError(f"num_train_steps must be a non-negative integer or None, got {num_train_steps!r}")
        super().__init__(every_steps=every_steps, every_secs=every_secs, on_steps=on_steps, clock=clock)
        self.num_train_steps = num_train_steps
        self.write_to_tracker = write_to_tracker
        self.metrics = None if metrics is None else list(metrics)
        self.file = file
        self._clock = clock
        self.bar: Any = None
        self.steps_per_sec: float | None = None
        self._last: tuple[int, float] | None = None  # step and time of the last redraw (or the start)
        self._latest: dict[str, Any] = {}  # the last reported value of each metric
        self._reported = pipeline.reported().reader()
        _bar_class()  # a missing tqdm is an error here, before training starts
        self._shown = 0  # the steps the bar counts
        self._time_from_next_step = False

    def on_begin(self, step: int, **context: Any) -> None:
        super().on_begin(step, **context)
        self._open(step - 1)
        self._time_from_next_step = True

    def on_step(self, step: int, **context: Any) -> None:
        if self.bar is None:
            # No on_begin in a hand-written loop: the bar starts at the first step seen.
            self._open(step)
            return
        if self._time_from_next_step:
            # Steps/s is timed from the end of the first step, whose time is mostly compilation.
            self._last = (step, self._clock())
            self._time_from_next_step = False
        super().on_step(step, **context)

    def run(self, step: int, **context: Any) -> None:
        assert self._last is not None
        last_step, last_time = self._last
        now = self._clock()
        if step > last_step and now > last_time:
            self.steps_per_sec = (step - last_step) / (now - last_time)
            if self.write_to_tracker:
                # A host float, queued: the tracker gets it with the step's other values.
                api.log({STEPS_PER_SEC: self.steps_per_sec}, step=step)
        self._last = (step, now)
        self._redraw(step)

    def on_end(self, step: int, **context: Any) -> None:
        if self.bar is None:
            return
        assert self._last is not None
        # Count the steps run since the last redraw, without measuring a partial
        # interval; closing draws the bar a last time.
        self._redraw(max(step, self._last[0]), draw=False)
        self.bar.close()
        self.bar = None

    def _open(self, done: int) -> None:
        if self.bar is not None:
            self.bar.close()  # a second run with the same callback starts a new bar
        done = max(done, 0)
        self._reported = pipeline.reported().reader()  # older values belong to another run
        self._latest = {}
        self.steps_per_sec = None
        self._last = (done, self._clock())
        self._time_from_next_step = False
        self._shown = done
        self.bar = _bar_class()(
            total=self.num_train_steps,
            initial=done,
            file=self.file,
            unit="steps",
            dynamic_ncols=True,
            # The schedule decides when to redraw: every update draws, and tqdm
            # measures nothing itself (the rate and elapsed time come from clock).
            mininterval=0,
            miniters=1,
            progress=self,
        )

    def _redraw(self, step: int, *, draw: bool = True) -> None:
        for key, _, value in self._reported.read():
            if (self.metrics is None and key != STEPS_PER_SEC) or (self.metrics is not None and key in self.metrics):
                self._latest[key] = value
        shown = (
            self._latest if self.metrics is None else {k: self._latest[k] for k in self.metrics if k in self._latest}
        )
        self.bar.set_postfix({key: _show(value) for key, value in shown.items()}, refresh=False)
        if step > self._shown:
            self.bar.update(step - self._shown)
            self._shown = step
        elif draw:
            self.bar.refresh()


def _show(value: Any) -> Any:
    if isinstance(value, NonFinite):
        return f"{value.count} non-finite"
    return value


_BAR_CLASS: type | None = None


def _bar_class() -> type:
    """``tqdm.auto.tqdm`` whose rate and elapsed time come from the callback's clock, not tqdm's own timer."""
    global _BAR_CLASS
    if _BAR_CLASS is None:
        # Imported here: tqdm (and, in a notebook, ipywidgets) only when a bar is shown.
        tqdm: Any = import_optional("tqdm.auto", extra="progress", purpose="ReportProgress").tqdm

        class _Bar(tqdm):
            def __init__(self, *args: Any, progress: ReportProgress, **kwargs: Any) -> None:
                self._progress = progress
                self._started_at = progress._clock()
                super().__init__(*args, **kwargs)

            @property
            def format_dict(self) -> dict[str, Any]:
                # tqdm's documented way to change what it shows: ETA = (total - n) / rate.
                shown = dict(super().format_dict)
                shown["rate"] = self._progress.steps_per_sec
                shown["elapsed"] = self._progress._clock() - self._started_at
                return shown

        _BAR_CLASS = _Bar
    return _BAR_CLASS


__all__ = [
    "STEPS_PER_SEC",
    "ReportProgress",
]
