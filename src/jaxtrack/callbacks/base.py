"""Callbacks: callables ``cb(step, **context)`` for a CLU-style ``for hook in hooks: hook(step)`` loop."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from jaxtrack.callbacks.schedule import Schedule


class Callback:
    """Something to do as training runs: at its beginning, at each step, at its end.

    Calling a callback is ``on_step``, so it drops into a plain loop:

    ```python
    for step in range(num_steps):
        state = train_step(state, batch)
        for hook in hooks:
            hook(step)
    ```

    Override any of the three methods; all receive the step and whatever
    context the loop passes by keyword (``state=...``, say).

    Examples:
        >>> class Printer(Callback):
        ...     def on_step(self, step, **context):
        ...         print("step", step)
        >>> Printer()(3)
        step 3
    """

    def on_begin(self, step: int, **context: Any) -> None:
        """Called once before the first step (``step`` is the first step to run)."""

    def on_step(self, step: int, **context: Any) -> None:
        """Called after each step."""

    def on_end(self, step: int, **context: Any) -> None:
        """Called once after the last step, also when training stops early or fails."""

    def __call__(self, step: int, **context: Any) -> None:
        self.on_step(step, **context)


class PeriodicCallback(Callback):
    """Runs ``fn(step, **context)`` when its schedule is due (CLU's ``every_steps``, ``every_secs``, ``on_steps``).

    Subclasses override [`run`][jaxtrack.callbacks.PeriodicCallback.run] instead of passing ``fn``.
    The schedule is a [`Schedule`][jaxtrack.callbacks.Schedule]; ``on_begin`` counts the due
    points before the first step as done, so a resumed run does not fire at once.

    Examples:
        >>> seen = []
        >>> every_2 = PeriodicCallback(lambda step, **_: seen.append(step), every_steps=2)
        >>> for step in range(1, 6):
        ...     every_2(step)
        >>> seen
        [2, 4]
    """

    def __init__(
        self,
        fn: Callable[..., Any] | None = None,
        *,
        every_steps: int | None = None,
        every_secs: float | None = None,
        on_steps: Iterable[int] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fn = fn
        self.schedule = Schedule(every_steps=every_steps, every_secs=every_secs, on_steps=on_steps, clock=clock)

    def on_begin(self, step: int, **context: Any) -> None:
        # Due points before the first step are done (by an earlier run when
        # resuming), not missed: without this a schedule of every 5 steps
        # resumed at step 6 would fire at once.
        self.schedule.skip_before(step)

    def on_step(self, step: int, **context: Any) -> None:
        if self.schedule.due(step):
            self.run(step, **context)

    def run(self, step: int, **context: Any) -> None:
        """The periodic action."""
        if self.fn is None:
            raise NotImplementedError(f"{type(self).__name__} needs fn=... or a run() method")
        self.fn(step, **context)

    def __repr__(self) -> str:
        name = getattr(self.fn, "__qualname__", None) or type(self).__name__
        return f"{type(self).__name__}({name}, {self.schedule!r})"


class LambdaCallback(Callback):
    """A callback made of functions: ``LambdaCallback(on_step=..., on_begin=..., on_end=...)``.

    Examples:
        >>> LambdaCallback(on_step=lambda step, **_: print("at", step))(7)
        at 7
    """

    def __init__(
        self,
        *,
        on_begin: Callable[..., Any] | None = None,
        on_step: Callable[..., Any] | None = None,
        on_end: Callable[..., Any] | None = None,
    ) -> None:
        self._begin, self._step, self._end = on_begin, on_step, on_end

    def on_begin(self, step: int, **context: Any) -> None:
        if self._begin is not None:
            self._begin(step, **context)

    def on_step(self, step: int, **context: Any) -> None:
        if self._step is not None:
            self._step(step, **context)

    def on_end(self, step: int, **context: Any) -> None:
        if self._end is not None:
            self._end(step, **context)


class CallbackList(Callback):
    """Several callbacks called in order; plain functions ``fn(step, **context)`` are accepted too.

    An exception from one of them carries a note naming it (and the step),
    and keeps its type, so a [`StopTraining`][jaxtrack.callbacks.StopTraining] still stops the loop.

    Examples:
        >>> hooks = CallbackList([lambda step, **_: print("a", step), LambdaCallback(on_step=lambda s, **_: print("b", s))])
        >>> hooks(1)
        a 1
        b 1
    """

    def __init__(self, callbacks: Sequence[Callback | Callable[..., Any]] = ()) -> None:
        self.callbacks: list[Callback] = [_as_callback(cb) for cb in callbacks]

    def append(self, callback: Callback | Callable[..., Any]) -> None:
        """Adds ``callback`` (a [`Callback`][jaxtrack.callbacks.Callback] or a function ``fn(step, **context)``) at the end."""
        self.callbacks.append(_as_callback(callback))

    def on_begin(self, step: int, **context: Any) -> None:
        self._each("on_begin", step, context)

    def on_step(self, step: int, **context: Any) -> None:
        self._each("on_step", step, context)

    def on_end(self, step: int, **context: Any) -> None:
        self._each("on_end", step, context)

    def _each(self, method: str, step: int, context: dict[str, Any]) -> None:
        for callback in self.callbacks:
            try:
                getattr(callback, method)(step, **context)
            except Exception as error:
                error.add_note(f"in callback {callback!r} ({method} at step {step})")
                raise

    def __iter__(self) -> Any:
        return iter(self.callbacks)

    def __len__(self) -> int:
        return len(self.callbacks)


def _as_callback(callback: Callback | Callable[..., Any]) -> Callback:
    if isinstance(callback, Callback):
        return callback
    if callable(callback):
        return _FunctionCallback(callback)
    raise TypeError(f"a callback is a Callback or a function fn(step, **context), got {callback!r}")


class _FunctionCallback(Callback):
    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn

    def on_step(self, step: int, **context: Any) -> None:
        self.fn(step, **context)

    def __repr__(self) -> str:
        return getattr(self.fn, "__qualname__", repr(self.fn))


__all__ = [
    "Callback",
    "CallbackList",
    "LambdaCallback",
    "PeriodicCallback",
]
