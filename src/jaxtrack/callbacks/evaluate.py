"""``Evaluate``: periodic evaluation (on a held-out set, say) whose metrics are logged without a device sync.

At due steps the callback calls your ``eval_fn(step, **context)``, which
returns a dict of metrics (JAX arrays welcome: it may be a jitted function),
and logs them, prefixed, through the tracker's front door. The pipeline fetches
the arrays off the training thread, so the loop goes on dispatching steps
while the evaluation runs on the device. Guards such as
[`EarlyStopping`][jaxtrack.callbacks.EarlyStopping] see the values once delivered.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from jaxtrack import api
from jaxtrack.callbacks.base import PeriodicCallback
from jaxtrack.trackers.base import Tracker


class Evaluate(PeriodicCallback):
    """Calls ``eval_fn(step, **context)`` at due steps and logs the metrics it returns as ``{prefix}{name}``.

    The metrics go to ``tracker`` (default: the current tracker) at that
    step. With ``at_end=True`` training's end is evaluated too, unless its
    last step just was. The context is what the loop passes to its hooks
    (``params=...``, ``state=...``).

    Examples:
        >>> import jax, jax.numpy as jnp, jaxtrack as jt
        >>> from jaxtrack.callbacks.evaluate import Evaluate
        >>> x_eval = jnp.arange(4.0)
        >>> @jax.jit
        ... def eval_loss(w):
        ...     return jnp.mean((w * x_eval - 2 * x_eval) ** 2)
        >>> evaluate = Evaluate(lambda step, w, **_: {"loss": eval_loss(w)}, every_steps=2)
        >>> with jt.current_tracker(jt.NoopTracker()):
        ...     for step in range(1, 4):
        ...         evaluate(step, w=jnp.float32(step))
        ...     evaluate.on_end(3, w=jnp.float32(3))
        >>> evaluate.evaluated_steps
        [2, 3]
    """

    def __init__(
        self,
        eval_fn: Callable[..., Mapping[str, Any]],
        *,
        every_steps: int | None = None,
        every_secs: float | None = None,
        on_steps: Iterable[int] | None = None,
        prefix: str = "eval/",
        tracker: Tracker | None = None,
        at_end: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not callable(eval_fn):
            raise TypeError(f"Evaluate takes a function eval_fn(step, **context) -> dict of metrics, got {eval_fn!r}")
        super().__init__(every_steps=every_steps, every_secs=every_secs, on_steps=on_steps, clock=clock)
        self.eval_fn = eval_fn
        self.prefix = prefix
        self.tracker = tracker
        self.at_end = at_end
        self.evaluated_steps: list[int] = []

    def run(self, step: int, **context: Any) -> None:
        self.evaluate(step, **context)

    def on_end(self, step: int, **context: Any) -> None:
        if self.at_end and (not self.evaluated_steps or self.evaluated_steps[-1] != step):
            self.evaluate(step, **context)

    def evaluate(self, step: int, **context: Any) -> None:
        """Evaluates now, whatever the schedule, and queues the metrics at ``step``."""
        metrics = self.eval_fn(step, **context)
        if not isinstance(metrics, Mapping):
            raise TypeError(
                f"Evaluate's eval_fn must return a dict of metrics, got {type(metrics).__name__} at step {step}"
            )
        prefixed = {f"{self.prefix}{name}": value for name, value in metrics.items()}
        # The tracker's front door: checked on this thread, fetched and written off it.
        (self.tracker or api.current_tracker()).log(prefixed, step=step)
        self.evaluated_steps.append(step)


__all__ = [
    "Evaluate",
]
