"""``Profile``: records a profiler trace of a few training steps, for TensorBoard's profile plugin.

A trace is the timeline of what the host and the devices did (compiled
computations, transfers, Python) over an interval, recorded by
``jax.profiler``. Tracing slows training, so only a few steps are traced,
once warm-up and compilation are over.
"""

from __future__ import annotations

import os
from typing import Any

import jax

from jaxtrack.callbacks.base import Callback


class Profile(Callback):
    """Traces ``num_steps`` steps, starting once the step reaches ``first_step``.

    Hooks run after a step, so the trace starts in the hook of the first step
    at or past ``first_step`` (a skipped ``first_step`` is no error) and
    covers the ``num_steps`` steps after it; it is stopped in the hook of the
    last one, or in ``on_end`` if training ends first. The trace goes to
    ``logdir/plugins/profile/<run>/``, where TensorBoard's profile plugin
    reads it: use the TensorBoard log directory of the run as ``logdir``.

    Examples:
        >>> import tempfile, jax, jax.numpy as jnp
        >>> from jaxtrack.callbacks.profile import Profile
        >>> logdir = tempfile.mkdtemp()
        >>> profile = Profile(logdir, first_step=2, num_steps=2)
        >>> double = jax.jit(lambda x: 2 * x)
        >>> x = jnp.ones(4)
        >>> for step in range(1, 6):
        ...     x = double(x)
        ...     profile(step, state=x)
        >>> profile.traced_steps
        (3, 4)
        >>> profile.on_end(5)
    """

    def __init__(self, logdir: str | os.PathLike[str], *, first_step: int, num_steps: int = 5) -> None:
        if not isinstance(logdir, str | os.PathLike) or not os.fspath(logdir):
            raise TypeError(f"Profile logdir must be a non-empty path, got {logdir!r}")
        if isinstance(first_step, bool) or not isinstance(first_step, int) or first_step < 0:
            raise ValueError(f"first_step must be a non-negative integer, got {first_step!r}")
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
            raise ValueError(f"num_steps must be a positive integer, got {num_steps!r}")
        self.logdir = os.fspath(logdir)
        self.first_step = first_step
        self.num_steps = num_steps
        self.started_at: int | None = None  # the step whose hook started the trace
        self.stopped_at: int | None = None
        self.tracing = False

    @property
    def traced_steps(self) -> tuple[int, int] | None:
        """The first and last step the trace covers (once it has stopped), or ``None``."""
        if self.started_at is None or self.stopped_at is None:
            return None
        return self.started_at + 1, self.stopped_at

    def on_step(self, step: int, **context: Any) -> None:
        if self.tracing:
            if self.started_at is not None and step >= self.started_at + self.num_steps:
                self._stop(step, context)
        elif self.started_at is None and step >= self.first_step:
            self._start(step)

    def on_end(self, step: int, **context: Any) -> None:
        if self.tracing:
            self._stop(step, context)

    def _start(self, step: int) -> None:
        try:
            jax.profiler.start_trace(self.logdir)
        except RuntimeError as error:
            # Only one trace may run at a time in a process.
            error.add_note(f"{self!r} could not start its trace at step {step}")
            raise
        self.started_at = step
        self.tracing = True

    def _stop(self, step: int, context: dict[str, Any]) -> None:
        # With asynchronous dispatch the device may still be running the last
        # traced steps: wait for what the loop passed (the state, say), so
        # their device work lands inside the trace.
        jax.block_until_ready(list(context.values()))
        self.tracing = False
        self.stopped_at = step
        jax.profiler.stop_trace()

    def __repr__(self) -> str:
        return f"Profile({self.logdir!r}, first_step={self.first_step}, num_steps={self.num_steps})"


__all__ = [
    "Profile",
]
