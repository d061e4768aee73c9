"""``jit_log`` and the capture frames it logs into.

A capture frame is open while a [`jaxtrack.jit`][jaxtrack.jit] function is traced (or
inside a [`capture`][jaxtrack.capture] block). ``jit_log`` folds its values into the frame's
reduction states, which the compiled step carries from one call to the
next. With no frame, ``jit_log`` on traced values falls back to a host
callback, and on concrete values it is [`jaxtrack.log`][jaxtrack.log].
"""

from __future__ import annotations

import dataclasses
import threading
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxtrack import api
from jaxtrack.errors import NestedTransformError
from jaxtrack.ingraph.reductions import Reduction, State, get_reduction
from jaxtrack.pipeline.calls import Call
from jaxtrack.values import flatten

try:
    from jax.extend.core import get_opaque_trace_state as _trace_state_of
except ImportError:  # older JAX
    from jax.core import get_opaque_trace_state as _trace_state_of


def trace_state() -> Any:
    """An opaque token for the JAX trace now active: equal tokens, same trace."""
    return _trace_state_of(convention="flax")


_TOP_LEVEL = trace_state()


def is_tracing() -> bool:
    """Whether a JAX transformation (jit, grad, scan, vmap...) is tracing right now."""
    return trace_state() != _TOP_LEVEL


@dataclasses.dataclass
class Entry:
    """A metric logged in one frame: its reduction, and what to fold into its state in order.

    Each contribution is a value (folded with ``update``, exact) or a state
    from a nested loop (folded with ``merge``).
    """

    reduction: Reduction
    shape: tuple[int, ...]
    dtype: Any
    contributions: list[tuple[bool, Any]] = dataclasses.field(default_factory=list)

    def fold(self, state: State) -> State:
        for is_state, item in self.contributions:
            state = self.reduction.merge(state, item) if is_state else self.reduction.update(state, item)
        return state

    def initial(self) -> State:
        return self.reduction.init(self.shape, self.dtype)


class Frame:
    """The metrics logged while one function is traced, folded as they come."""

    def __init__(self) -> None:
        self.trace = trace_state()
        self.entries: dict[str, Entry] = {}

    def add(self, name: str, reduction: Reduction, value: Any) -> None:
        value = jnp.asarray(value)
        self._entry(name, reduction, value.shape, value.dtype).contributions.append((False, value))

    def add_state(self, name: str, reduction: Reduction, shape: tuple[int, ...], dtype: Any, state: State) -> None:
        self._entry(name, reduction, shape, dtype).contributions.append((True, state))

    def _entry(self, name: str, reduction: Reduction, shape: tuple[int, ...], dtype: Any) -> Entry:
        entry = self.entries.get(name)
        if entry is None:
            entry = self.entries[name] = Entry(reduction, tuple(shape), jnp.dtype(dtype))
        elif entry.reduction != reduction:
            raise ValueError(f"metric {name!r} is logged with reduce={entry.reduction!r} and with reduce={reduction!r}")
        elif entry.shape != tuple(shape):
            raise ValueError(f"metric {name!r} is logged with shapes {entry.shape} and {tuple(shape)}")
        return entry

    def results(self) -> dict[str, Any]:
        return {name: entry.reduction.result(entry.fold(entry.initial())) for name, entry in self.entries.items()}


class _FrameStack(threading.local):
    def __init__(self) -> None:
        self.frames: list[Frame] = []


_stack = _FrameStack()


def current_frame() -> Frame | None:
    """The innermost open frame of this thread, if any."""
    return _stack.frames[-1] if _stack.frames else None


@contextmanager
def open_frame() -> Iterator[Frame]:
    """Opens a frame that ``jit_log`` calls inside the block fold into."""
    frame = Frame()
    _stack.frames.append(frame)
    try:
        yield frame
    finally:
        _stack.frames.pop()


class Captured:
    """What [`capture`][jaxtrack.capture] collected: ``metrics`` (reduced values) and ``reductions``, by name.

    Both are filled in when the ``capture`` block ends.

    Examples:
        >>> import jax.numpy as jnp, jaxtrack as jt
        >>> with jt.capture() as captured:
        ...     jt.jit_log({"loss": jnp.float32(0.5)})
        ...     jt.jit_log({"loss": jnp.float32(1.5)})
        >>> float(captured.metrics["loss"]), captured.reductions["loss"]
        (1.0, Mean())
    """

    def __init__(self, frame: Frame) -> None:
        self._frame = frame
        self.metrics: dict[str, Any] = {}
        self.reductions: dict[str, Reduction] = {}

    def _close(self) -> None:
        self.metrics = self._frame.results()
        self.reductions = {name: entry.reduction for name, entry in self._frame.entries.items()}


@contextmanager
def capture() -> Iterator[Captured]:
    """Collects the ``jit_log`` calls of a block, for a function that returns its metrics itself.

    The low-level form of [`jaxtrack.jit`][jaxtrack.jit] (and of Levanter's deferred
    metrics dict): inside your own ``jax.jit`` function, the values logged in
    the block are available as ``captured.metrics`` once it ends, one value
    per name (several logs of a name are combined by its reduction).

    Examples:
        >>> import jax, jax.numpy as jnp, jaxtrack as jt
        >>> @jax.jit
        ... def step(x):
        ...     with jt.capture() as captured:
        ...         jt.jit_log({"loss": x.mean(), "peak": x.max()})
        ...     return x * 2, captured.metrics
        >>> _, metrics = step(jnp.arange(4.0))
        >>> {k: float(v) for k, v in metrics.items()}
        {'loss': 1.5, 'peak': 3.0}
    """
    with open_frame() as frame:
        captured = Captured(frame)
        yield captured
    captured._close()


def jit_log(metrics: Mapping[str, Any], *, step: Any = None, reduce: str | Reduction = "mean") -> None:
    """Logs metrics from inside a jitted function, at no cost to the training loop.

    Inside a [`jaxtrack.jit`][jaxtrack.jit] function (or a [`capture`][jaxtrack.capture] block), the
    values are folded into an accumulator on the device with ``reduce``
    (``"mean"``, ``"sum"``, ``"min"``, ``"max"``, ``"last"``, ``"stats"``,
    ``"histogram"`` or a [`Reduction`][jaxtrack.ingraph.Reduction]) and reported
    at the step of the next report; ``step`` is not needed there.

    Inside a plain ``jax.jit`` it falls back to a host callback
    (``jax.debug.callback``) that logs every call to the current tracker at
    ``step`` (which may be traced). That is correct, sharded arrays included,
    but slow: the device waits for the host at every call. Outside jit it is
    [`jaxtrack.log`][jaxtrack.log].

    Inside a transformation nested in the step (``lax.scan``/``fori_loop``
    bodies, ``jax.grad``, ``vmap``), it raises [`NestedTransformError`][jaxtrack.NestedTransformError]:
    use [`jaxtrack.scan`][jaxtrack.scan] / [`jaxtrack.fori_loop`][jaxtrack.fori_loop], or return the
    values (``has_aux=True``) and log them after the transformation.

    Examples:
        >>> import jax.numpy as jnp, jaxtrack as jt
        >>> @jt.jit
        ... def step(x):
        ...     jt.jit_log({"x": {"mean": x.mean(), "max": x.max()}})
        ...     jt.jit_log({"x/peak": x.max()}, reduce="max")
        ...     return x + 1
        >>> x = step(step(jnp.zeros(3)))
        >>> {k: float(v) for k, v in step.take_metrics().items()}
        {'x/mean': 0.5, 'x/max': 0.5, 'x/peak': 1.0}
    """
    reduction = get_reduction(reduce)
    flat = flatten(metrics)
    frame = current_frame()
    if frame is not None:
        if frame.trace != trace_state():
            if frame.trace == _TOP_LEVEL:
                frame = None  # an eager capture block around a plain jax.jit: its values are not ours
            else:
                raise NestedTransformError(
                    f"jit_log({', '.join(map(repr, flat))}) was called inside a transformation nested in the "
                    "jaxtrack.jit step (lax.scan/fori_loop/while_loop/cond body, jax.grad, vmap, checkpoint, or a "
                    "nested jax.jit), whose values cannot leave it. Use jaxtrack.scan / jaxtrack.fori_loop for "
                    "loop bodies; for a differentiated function return the values as aux (has_aux=True) and "
                    "jit_log them after the grad."
                )
        if frame is not None:
            for name, value in flat.items():
                frame.add(name, reduction, value)
            return
    leaves = [*flat.values(), step]
    if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(leaves)):
        _log_through_callback(flat, step)
    else:
        api.log(flat, step=step)


def _log_through_callback(flat: dict[str, Any], step: Any) -> None:
    names = list(flat)
    if jax.process_count() > 1:
        # The callback runs on the host of the computation's first device, which need
        # not be process 0, the one that writes: those values would be lost.
        warnings.warn(
            f"jit_log({', '.join(map(repr, names))}) in a plain jax.jit of a multi-process run: its host callback "
            "may run on a process that does not write, and the values be lost. Use jaxtrack.jit for the step.",
            RuntimeWarning,
            stacklevel=3,
        )

    def on_host(step_value: Any, *values: Any) -> None:
        host_step = None if step_value is None else int(np.asarray(step_value))
        # The device waits on this callback: queue without waiting for room.
        api.current_tracker()._submit(Call("log", dict(zip(names, values, strict=True)), step=host_step), room=False)

    jax.debug.callback(on_host, step, *flat.values())


__all__ = [
    "Captured",
    "capture",
    "jit_log",
]
