"""A small training loop for users who do not write their own: ``jaxtrack.train`` and ``Loop``."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from jaxtrack import api, run
from jaxtrack.callbacks.base import Callback, CallbackList, PeriodicCallback
from jaxtrack.errors import StopTraining

logger = logging.getLogger(__name__)

DEFAULT_MAX_STEPS_AHEAD = 4
"""How far the loop may dispatch steps ahead of the device, by default (it waits at most every this many steps).

Small: a few queued steps keep an accelerator busy, and XLA's CPU client
blocks a dispatch once a device has 32 computations in flight, which
deadlocks a step whose collective other devices already entered.
"""


class Loop:
    """Runs ``state = step_fn(state, batch)`` for a number of steps, calling callbacks after each.

    Callbacks get the step and ``state=`` by keyword. A callback with a
    ``restore(state) -> (state, step)`` method (``Checkpoint``) is asked for
    the latest saved state first, and the loop resumes after that step.
    [`StopTraining`][jaxtrack.callbacks.StopTraining] ends the loop cleanly; any other exception or
    Ctrl-C still ends the callbacks, marks the run ``failed`` (``killed`` for
    Ctrl-C) in its summary and status, and finishes the current tracker
    before it propagates. With no tracker set, the run is recorded by the
    default one ([`jaxtrack.init_tracker`][jaxtrack.init_tracker] with no config: the local run
    store), which the loop finishes at the end.

    The loop dispatches steps without waiting for the device (JAX's
    asynchronous dispatch), but never more than twice ``max_steps_ahead``
    steps ahead of it: every ``max_steps_ahead`` steps it waits until the
    device has run the step that many steps back, which it nearly always
    has. Unbounded, the dispatched steps pile up (their batches hold memory),
    and once a CPU device has 32 computations in flight XLA blocks the next
    dispatch, which deadlocks a sharded step whose all-reduce the other
    devices already entered. ``None`` never waits.

    Examples:
        >>> import itertools, jaxtrack as jt
        >>> loop = jt.callbacks.Loop(lambda state, batch: state + batch, num_steps=4)
        >>> @loop.add_callback(every_steps=2)
        ... def show(step, state):
        ...     print(step, state)
        >>> with jt.current_tracker(jt.NoopTracker()):
        ...     loop.run(0, itertools.repeat(1))
        2 2
        4 4
        4
    """

    def __init__(
        self,
        step_fn: Callable[[Any, Any], Any],
        *,
        num_steps: int,
        callbacks: Sequence[Callback | Callable[..., Any]] = (),
        max_steps_ahead: int | None = DEFAULT_MAX_STEPS_AHEAD,
    ) -> None:
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 0:
            raise ValueError(f"num_steps must be a non-negative integer, got {num_steps!r}")
        if max_steps_ahead is not None and (
            isinstance(max_steps_ahead, bool) or not isinstance(max_steps_ahead, int) or max_steps_ahead < 1
        ):
            raise ValueError(f"max_steps_ahead must be a positive integer or None, got {max_steps_ahead!r}")
        self.step_fn = step_fn
        self.num_steps = num_steps
        self.callbacks = CallbackList(callbacks)
        self.max_steps_ahead = max_steps_ahead

    def add_callback(
        self,
        callback: Callback | Callable[..., Any] | None = None,
        *,
        every_steps: int | None = None,
        every_secs: float | None = None,
        on_steps: Iterable[int] | None = None,
    ) -> Any:
        """Adds a callback; with a schedule, a function ``fn(step, **context)`` runs when due.

        Usable as ``loop.add_callback(cb)``, ``@loop.add_callback`` and
        ``@loop.add_callback(every_steps=100)``; returns what it was given.
        """
        scheduled = every_steps is not None or every_secs is not None or on_steps is not None

        def add(fn: Callback | Callable[..., Any]) -> Callback | Callable[..., Any]:
            if scheduled:
                if isinstance(fn, Callback):
                    raise TypeError("a schedule is for a function; give a Callback its own schedule")
                self.callbacks.append(
                    PeriodicCallback(fn, every_steps=every_steps, every_secs=every_secs, on_steps=on_steps)
                )
            else:
                self.callbacks.append(fn)
            return fn

        return add if callback is None else add(callback)

    def run(self, state: Any, batches: Iterable[Any]) -> Any:
        """Trains from ``state`` on ``batches`` (one batch per step, until ``num_steps`` or they run out); returns the final state."""
        owned = self._default_tracker()
        state, start = self._restore(state)
        completed = start - 1  # the last step whose new state exists
        batch_iter = iter(batches)
        self.callbacks.on_begin(start, state=state)
        started = time.monotonic()
        marker = None  # a copy of a state leaf, max_steps_ahead steps back: the device has reached it once ready
        try:
            for step in range(start, self.num_steps + 1):
                try:
                    batch = next(batch_iter)
                except StopIteration:
                    logger.info("jaxtrack: the batches ran out after step %d of %d", completed, self.num_steps)
                    break
                state = self.step_fn(state, batch)
                completed = step
                if self.max_steps_ahead is not None and step % self.max_steps_ahead == 0:
                    marker = _hold_back(marker, state)
                self.callbacks(step, state=state)
        except StopTraining as stop:
            logger.info("jaxtrack: training stopped at step %d: %s", completed, stop.reason)
        except BaseException as error:  # also Ctrl-C: the data logged so far must reach the backends
            self._fail(error, completed, state)
            raise
        try:
            self._end(completed, state)
        except BaseException as error:  # a callback failed as training ended: so did the run
            self._fail(error, completed, state, callbacks_ended=True)
            raise
        logger.info("jaxtrack: %d steps in %.1f s", completed - start + 1, time.monotonic() - started)
        if owned is not None and run.current() is owned:
            api.finish()
        return state

    def _fail(self, error: BaseException, step: int, state: Any, *, callbacks_ended: bool = False) -> None:
        """Ends a run that ``error`` ends: the callbacks end, the run is marked and finished; ``error`` is kept.

        A failure while ending (a callback's ``on_end``, a backend in strict
        mode) is logged and noted on ``error``, never raised in its place.
        """
        status = "killed" if isinstance(error, KeyboardInterrupt) else "failed"
        if not callbacks_ended:
            try:
                self._end(step, state)
            except BaseException as end_error:
                logger.error("jaxtrack: a callback failed as training ended after an error", exc_info=end_error)
                error.add_note(f"jaxtrack: ending the callbacks failed too: {type(end_error).__name__}: {end_error}")
        tracker = run.current()
        if tracker is None:
            return
        reason = "interrupted" if status == "killed" else f"failed: {type(error).__name__}"
        try:
            tracker.log_summary({"status": reason, "last_step": step})
        finally:
            try:
                run.end(tracker, status=status)
            except BaseException as end_error:  # noqa: BLE001 - e.g. a strict-mode backend failure
                error.add_note(f"jaxtrack: ending the run: {type(end_error).__name__}: {end_error}")

    def _default_tracker(self) -> Any:
        """Starts the default tracker when none is set, so the run is recorded; returns it (else ``None``)."""
        if run.current() is not None:
            return None
        tracker = api.init_tracker()
        logger.warning(
            "jaxtrack: no tracker was set, so this run is recorded in the local store %s as run %s "
            "(see it with `jaxtrack show %s`)",
            getattr(tracker, "path", "?"),
            getattr(tracker, "run_id", "?"),
            getattr(tracker, "run_id", "?"),
        )
        return tracker

    def _end(self, step: int, state: Any) -> None:
        try:
            self.callbacks.on_end(step, state=state)
        finally:
            if not api.flush(timeout=run.FINISH_TIMEOUT_SECS):
                logger.warning(
                    "jaxtrack: a backend did not take everything within %.0f s; training ends without waiting more",
                    run.FINISH_TIMEOUT_SECS,
                )

    def _restore(self, state: Any) -> tuple[Any, int]:
        for callback in self.callbacks:
            restore = getattr(callback, "restore", None)
            if callable(restore):
                restored, step = restore(state)
                if step is not None:
                    logger.info("jaxtrack: resuming after step %d", step)
                    return restored, step + 1
        return state, 1


def _hold_back(marker: jax.Array | None, state: Any) -> jax.Array | None:
    """Waits for the previous marker, then marks where the device must get to next; returns the new marker.

    The marker is a copy of the state's smallest array: the state itself may be
    donated to the next step, and a donated array cannot be waited on.
    """
    if marker is not None:
        marker.block_until_ready()
    arrays = [leaf for leaf in jax.tree_util.tree_leaves(state) if isinstance(leaf, jax.Array)]
    return jnp.copy(min(arrays, key=lambda array: array.size)) if arrays else None


def train(
    step_fn: Callable[[Any, Any], Any],
    state: Any,
    batches: Iterable[Any],
    num_steps: int,
    *,
    callbacks: Sequence[Callback | Callable[..., Any]] = (),
    max_steps_ahead: int | None = DEFAULT_MAX_STEPS_AHEAD,
) -> Any:
    """Runs ``state = step_fn(state, batch)`` for steps 1..``num_steps``, with callbacks; returns the state.

    See [`Loop`][jaxtrack.callbacks.Loop] (which this builds and runs) for restoring from a
    checkpoint and how stopping and failures end the run.

    Examples:
        >>> import itertools, jaxtrack as jt
        >>> with jt.current_tracker(jt.NoopTracker()):
        ...     jt.train(lambda state, batch: state + batch, 0, itertools.repeat(2), 5)
        10
    """
    return Loop(step_fn, num_steps=num_steps, callbacks=callbacks, max_steps_ahead=max_steps_ahead).run(state, batches)


__all__ = ["Loop", "train"]
