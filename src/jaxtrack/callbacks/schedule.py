"""When a periodic callback is due: CLU's ``every_steps``, ``every_secs`` and ``on_steps``."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable


class Schedule:
    """Decides, step by step, whether a periodic action is due.

    ``every_steps=N`` is due at multiples of ``N``; ``on_steps`` at each of
    the given steps; ``every_secs=S`` once ``S`` seconds have passed since the
    schedule started or last fired. They combine: the schedule is due when any
    of them is. Unlike CLU, a step that is never seen is no error: the action
    fires at the first step at or past the point it was due, once.

    ``clock`` (seconds, monotonic) can be replaced, e.g. in tests.

    Examples:
        >>> schedule = Schedule(every_steps=10, on_steps=[3])
        >>> [step for step in (1, 3, 4, 9, 12, 15, 20, 21) if schedule.due(step)]
        [3, 12, 20]
    """

    def __init__(
        self,
        *,
        every_steps: int | None = None,
        every_secs: float | None = None,
        on_steps: Iterable[int] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if every_steps is not None and (
            isinstance(every_steps, bool) or not isinstance(every_steps, int) or every_steps < 1
        ):
            raise ValueError(f"every_steps must be a positive integer, got {every_steps!r}")
        if every_secs is not None and not every_secs > 0:
            raise ValueError(f"every_secs must be a positive number of seconds, got {every_secs!r}")
        self.every_steps = every_steps
        self.every_secs = every_secs
        self.on_steps = sorted(set(on_steps or ()))
        if any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in self.on_steps):
            raise ValueError(f"on_steps must be non-negative integers, got {self.on_steps!r}")
        if every_steps is None and every_secs is None and not self.on_steps:
            raise ValueError("a schedule needs at least one of every_steps, every_secs, on_steps")
        self._clock = clock
        self._last_fired_at = clock()
        self._next_step: int | None = every_steps
        self._pending = list(self.on_steps)

    def skip_before(self, step: int) -> None:
        """Counts every due point before ``step`` as done: the run starts (or resumes) at ``step``.

        Examples:
            >>> schedule = Schedule(every_steps=5)
            >>> schedule.skip_before(6)  # resumed after step 5: not late for step 5
            >>> [step for step in range(6, 12) if schedule.due(step)]
            [10]
        """
        if self.every_steps is not None:
            self._next_step = -(-step // self.every_steps) * self.every_steps  # the first multiple >= step
        while self._pending and self._pending[0] < step:
            self._pending.pop(0)
        self._last_fired_at = self._clock()

    def due(self, step: int) -> bool:
        """Whether the action is due at ``step``; if so, the schedule counts it as done."""
        fire = False
        if self._next_step is not None and step >= self._next_step:
            fire = True
        if self._pending and step >= self._pending[0]:
            fire = True
        now = self._clock()
        if self.every_secs is not None and now - self._last_fired_at >= self.every_secs:
            fire = True
        if fire:
            if self.every_steps is not None:
                self._next_step = (step // self.every_steps + 1) * self.every_steps
            while self._pending and self._pending[0] <= step:
                self._pending.pop(0)
            self._last_fired_at = now
        return fire

    def __repr__(self) -> str:
        parts = [
            f"{name}={value!r}"
            for name, value in (
                ("every_steps", self.every_steps),
                ("every_secs", self.every_secs),
                ("on_steps", self.on_steps),
            )
            if value
        ]
        return f"Schedule({', '.join(parts)})"


__all__ = [
    "Schedule",
]
