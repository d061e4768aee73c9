"""Loops whose bodies may call ``jit_log``: ``jaxtrack.scan`` and ``jaxtrack.fori_loop``.

A ``lax.scan`` body is traced apart from the step around it, so its values
cannot be folded into the step's accumulator directly. These wrappers carry
the body's metric states through the loop and merge them into the step's
accumulator afterwards: gradient accumulation and several optimiser steps
per call report exactly as if each iteration had been a step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxtrack.errors import NestedTransformError
from jaxtrack.ingraph.capture import Entry, current_frame, open_frame, trace_state


def scan(
    f: Callable[[Any, Any], tuple[Any, Any]],
    init: Any,
    xs: Any = None,
    length: int | None = None,
    *,
    reverse: bool = False,
    unroll: int | bool = 1,
) -> tuple[Any, Any]:
    """``jax.lax.scan`` whose body may call [`jaxtrack.jit_log`][jaxtrack.jit_log].

    Inside a [`jaxtrack.jit`][jaxtrack.jit] step, each iteration's logged values are
    reduced as if it were a step of its own (a ``mean`` is the mean over
    iterations and calls). Elsewhere it is ``jax.lax.scan``.

    Examples:
        >>> import jax.numpy as jnp, jaxtrack as jt
        >>> @jt.jit
        ... def accumulate(x):
        ...     def body(total, xi):
        ...         jt.jit_log({"xi": xi})
        ...         return total + xi, None
        ...     return jt.scan(body, 0.0, x)[0]
        >>> float(accumulate(jnp.array([1.0, 2.0, 6.0])))
        9.0
        >>> float(accumulate.take_metrics()["xi"])
        3.0
    """
    frame = current_frame()
    if frame is None or frame.trace != trace_state():
        return jax.lax.scan(f, init, xs, length=length, reverse=reverse, unroll=unroll)

    logged: dict[str, Entry] = {}

    def probe(carry: Any, x: Any) -> Any:
        with open_frame() as inner:
            out = f(carry, x)
        logged.update(inner.entries)
        return out

    x_shapes = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(jnp.shape(a)[1:], jnp.result_type(a)), xs)
    jax.eval_shape(probe, init, x_shapes)
    if not logged:
        return jax.lax.scan(f, init, xs, length=length, reverse=reverse, unroll=unroll)

    def body(carry: tuple[Any, dict[str, Any]], x: Any) -> tuple[tuple[Any, dict[str, Any]], Any]:
        inner_carry, states = carry
        with open_frame() as inner:
            inner_carry, y = f(inner_carry, x)
        states = dict(states)
        for name, entry in inner.entries.items():
            states[name] = entry.fold(states[name])
        return (inner_carry, states), y

    initial = {name: entry.initial() for name, entry in logged.items()}
    (carry, states), ys = jax.lax.scan(body, (init, initial), xs, length=length, reverse=reverse, unroll=unroll)
    for name, entry in logged.items():
        frame.add_state(name, entry.reduction, entry.shape, entry.dtype, states[name])
    return carry, ys


def fori_loop(
    lower: int, upper: int, body_fun: Callable[[Any, Any], Any], init_val: Any, *, unroll: int | bool = 1
) -> Any:
    """``jax.lax.fori_loop`` whose body may call [`jaxtrack.jit_log`][jaxtrack.jit_log] (runs as [`scan`][jaxtrack.scan]).

    ``lower`` and ``upper`` must be Python ints inside a [`jaxtrack.jit`][jaxtrack.jit]
    step, as for a reverse-differentiable ``fori_loop``.

    Examples:
        >>> import jaxtrack as jt
        >>> @jt.jit
        ... def count(x):
        ...     def body(i, total):
        ...         jt.jit_log({"i": i}, reduce="max")
        ...         return total + i
        ...     return jt.fori_loop(0, 5, body, x)
        >>> int(count(0)), int(count.take_metrics()["i"])
        (10, 4)
    """
    frame = current_frame()
    if frame is None or frame.trace != trace_state():
        return jax.lax.fori_loop(lower, upper, body_fun, init_val, unroll=unroll)
    if not (isinstance(lower, int) and isinstance(upper, int)):
        raise NestedTransformError(
            "jaxtrack.fori_loop needs Python int bounds inside a jaxtrack.jit step (got traced bounds); "
            "make them static, or return the values from the loop and jit_log them after it"
        )
    carry, _ = scan(lambda c, i: (body_fun(i, c), None), init_val, jnp.arange(lower, upper), unroll=unroll)
    return carry


__all__ = [
    "fori_loop",
    "scan",
]
