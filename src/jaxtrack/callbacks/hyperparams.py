"""``LearningRateMonitor``: logs the hyperparameters an optax optimizer state carries (its learning rate, say).

``optax.inject_hyperparams(optax.adam)(learning_rate=schedule)`` keeps the
values its last update used in its state (``InjectHyperparamsState.hyperparams``),
as device arrays. The monitor finds those states anywhere in the optimizer
state (inside ``optax.chain``, ``multi_transform``, ...) and queues the arrays
as they are with ``jaxtrack.log``, whose dispatcher fetches them off the
training thread: logging a learning rate costs no device sync.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable
from typing import Any

import jax

from jaxtrack import api
from jaxtrack.callbacks.base import PeriodicCallback


@functools.cache
def _inject_states() -> tuple[type, ...]:
    # optax is imported when a monitor first looks, not with jaxtrack: it is not a dependency of the core.
    try:
        import optax
    except ImportError:
        return ()  # no optax, no injected hyperparameters to find
    names = ("InjectHyperparamsState", "InjectStatefulHyperparamsState")
    return tuple(cls for cls in (getattr(optax, name, None) for name in names) if isinstance(cls, type))


class LearningRateMonitor(PeriodicCallback):
    """Logs the hyperparameters of the optimizer's ``optax.inject_hyperparams`` states at due steps.

    The optimizer state comes from the loop, as the ``opt_state=`` keyword of
    the hook call (or ``state=`` holding an ``opt_state`` attribute, such as a
    Flax ``TrainState``), or from ``get_opt_state()``. Each hyperparameter is
    logged as ``{prefix}{name}`` (``hparams/learning_rate``); with several
    injected states, the name has their place in the state too
    (``hparams/encoder/learning_rate``). ``names`` limits which are logged.

    The values are those the last update used: after update ``k`` (counting
    from 1), a schedule's value at count ``k - 1``.

    Examples:
        >>> import jax.numpy as jnp, optax, jaxtrack as jt
        >>> from jaxtrack.callbacks.hyperparams import LearningRateMonitor
        >>> tx = optax.inject_hyperparams(optax.sgd)(learning_rate=optax.linear_schedule(0.5, 0.0, 10))
        >>> opt_state = tx.init({"w": jnp.zeros(2)})
        >>> monitor = LearningRateMonitor(every_steps=1, names=["learning_rate"])
        >>> with jt.current_tracker(jt.NoopTracker()):
        ...     monitor(1, opt_state=opt_state)
        >>> {name: float(value) for name, value in monitor.find(opt_state).items()}
        {'learning_rate': 0.5}
    """

    def __init__(
        self,
        get_opt_state: Callable[[], Any] | None = None,
        *,
        every_steps: int | None = None,
        every_secs: float | None = None,
        on_steps: Iterable[int] | None = None,
        prefix: str = "hparams/",
        names: Iterable[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if get_opt_state is not None and not callable(get_opt_state):
            raise TypeError(
                f"LearningRateMonitor takes a function that returns the optimizer state, got {get_opt_state!r}; "
                "to hand it the state itself, call the hook with opt_state=..."
            )
        super().__init__(every_steps=every_steps, every_secs=every_secs, on_steps=on_steps, clock=clock)
        self.get_opt_state = get_opt_state
        self.prefix = prefix
        self.names = None if names is None else set(names)

    def run(self, step: int, **context: Any) -> None:
        found = self.find(self._opt_state(context))
        # jaxtrack.log copies JAX arrays on their device, so a step that donates its
        # optimizer state cannot free these buffers before they are fetched.
        api.log({f"{self.prefix}{name}": value for name, value in found.items()}, step=step)

    def find(self, opt_state: Any) -> dict[str, Any]:
        """The hyperparameters of every ``inject_hyperparams`` state in ``opt_state``, by logged name (no prefix)."""
        located = [
            (path, leaf)
            for path, leaf in jax.tree_util.tree_flatten_with_path(opt_state, is_leaf=_is_inject_state)[0]
            if _is_inject_state(leaf)
        ]
        if not located:
            raise ValueError(
                "LearningRateMonitor found no optax.inject_hyperparams state in the optimizer state "
                f"(a {type(opt_state).__name__}); build the optimizer with optax.inject_hyperparams, e.g. "
                "optax.inject_hyperparams(optax.adam)(learning_rate=schedule), so that its hyperparameters "
                "are kept in the state"
            )
        places = [_place(path) for path, _ in located]
        if len(set(places)) < len(places):
            places = [jax.tree_util.keystr(path) for path, _ in located]  # the short names clash
        found: dict[str, Any] = {}
        for place, (_, state) in zip(places, located, strict=True):
            for name, value in state.hyperparams.items():
                if self.names is None or name in self.names:
                    found[f"{place}/{name}" if len(located) > 1 and place else name] = value
        return found

    def _opt_state(self, context: dict[str, Any]) -> Any:
        if "opt_state" in context:
            return context["opt_state"]
        if self.get_opt_state is not None:
            return self.get_opt_state()
        if hasattr(context.get("state"), "opt_state"):
            return context["state"].opt_state
        raise ValueError(
            "LearningRateMonitor needs the optimizer state: call the hook with opt_state=... "
            "(or state=... with an opt_state attribute), or give LearningRateMonitor(get_opt_state=...)"
        )


def _is_inject_state(node: Any) -> bool:
    return isinstance(node, _inject_states())


def _place(path: tuple[Any, ...]) -> str:
    """A state's place as the dict keys and list indices on its path (``encoder``, ``1``), without attribute names."""
    parts = []
    for key in path:
        if isinstance(key, jax.tree_util.DictKey):
            parts.append(str(key.key))
        elif isinstance(key, jax.tree_util.SequenceKey):
            parts.append(str(key.idx))
    return "/".join(parts)


__all__ = [
    "LearningRateMonitor",
]
