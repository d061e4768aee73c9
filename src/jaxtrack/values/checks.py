"""What every backend can record, checked on the caller's thread before anything is queued.

A call that passes [`check_values`][jaxtrack.values.check_values] is recorded
by every backend that records its kind of value; one that does not is an error
at the call that names the key. The checks look only at types, shapes and
dtypes, never at a JAX array's data, so they cost no device sync.

Examples:
    >>> check_values({"train": {"loss": 0.5, "note": "warm-up"}})
    {'train/loss': 0.5, 'train/note': 'warm-up'}
    >>> check_values({"tags": ["a", "b"]})
    Traceback (most recent call last):
    ...
    TypeError: metric 'tags': a list of str cannot be logged; lists must hold numbers (a rectangular array of them)
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from jaxtrack.values.convert import HOST_FLOAT_TYPES, HOST_INT_TYPES, flatten
from jaxtrack.values.text import check_text
from jaxtrack.values.types import Histogram, Image

_FLOAT64_MAX = float(np.finfo(np.float64).max)
_NUMERIC_KINDS = "biuf"


def check_value(key: str, value: Any) -> None:
    """Raises ``TypeError`` naming ``key`` if no backend can record ``value``.

    Accepted: numbers and bools (Python, NumPy, JAX), strings, arrays and
    rectangular lists of numbers, [`Histogram`][jaxtrack.values.Histogram] with
    numeric bucket limits and counts, [`Image`][jaxtrack.values.Image] with numeric
    pixels, and ``None`` (skipped). Looks only at types, shapes and dtypes, never
    at the data, so it is safe on the training thread. (An integer beyond
    float64's range is a ``ValueError``.)

    Examples:
        >>> check_value("loss", 0.5)
        >>> check_value("loss", object())
        Traceback (most recent call last):
        ...
        TypeError: metric 'loss': cannot log a value of type object; use a number, an array, a string, jaxtrack.Histogram or jaxtrack.Image
    """
    kind = type(value)
    if kind in HOST_FLOAT_TYPES:
        return
    if kind is int:
        if abs(value) > _FLOAT64_MAX:  # no backend stores it, not even as a float
            raise ValueError(f"metric {key!r}: {value} is too large to log (beyond float64)")
        return
    if kind in HOST_INT_TYPES:
        return
    if isinstance(value, str):
        check_text(key, value)
        return
    if isinstance(value, Histogram):
        _check_histogram(key, value)
        return
    if isinstance(value, Image):
        _check_numeric(key, "the pixels of an Image", value.pixels)
        return
    if value is None or isinstance(value, (bool, numbers.Real)):
        if isinstance(value, numbers.Integral) and abs(int(value)) > _FLOAT64_MAX:
            raise ValueError(f"metric {key!r}: {value} is too large to log (beyond float64)")
        return
    if isinstance(value, jax.core.Tracer):
        raise TypeError(
            f"metric {key!r} is a JAX tracer: inside jit, log with jaxtrack.jit_log instead of jaxtrack.log"
        )
    if isinstance(value, (list, tuple)):
        _array_like(key, "a list", value)
        return
    if isinstance(value, (np.ndarray, np.generic, jax.Array)):
        if value.dtype.kind in _NUMERIC_KINDS or value.dtype.name == "bfloat16":
            return
        raise TypeError(
            f"metric {key!r}: arrays of dtype {value.dtype} cannot be logged; "
            "use a real-valued array, a number or a string"
        )
    raise TypeError(
        f"metric {key!r}: cannot log a value of type {type(value).__name__}; "
        "use a number, an array, a string, jaxtrack.Histogram or jaxtrack.Image"
    )


def check_values(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """[`check_value`][jaxtrack.values.check_value] on every value of a (nested) metrics mapping; returns it flattened.

    Examples:
        >>> check_values({"train": {"loss": 0.5, "note": "warm-up"}})
        {'train/loss': 0.5, 'train/note': 'warm-up'}
    """
    flat = flatten(metrics)
    for key, value in flat.items():
        check_value(key, value)
    return flat


def check_step(step: Any) -> int:
    """``step`` as an ``int``, or a ``TypeError``/``ValueError`` saying why it is not a step.

    Examples:
        >>> check_step(3), check_step(__import__("numpy").int64(4))
        (3, 4)
        >>> check_step(-1)
        Traceback (most recent call last):
        ...
        ValueError: step must be >= 0, got -1
    """
    if isinstance(step, bool):
        raise TypeError(f"step must be an integer, got {step!r}")
    try:
        resolved = int(step)
    except (TypeError, ValueError, OverflowError):
        raise TypeError(f"step must be an integer, got {step!r} ({type(step).__name__})") from None
    if resolved != step:
        raise TypeError(f"step must be an integer, got {step!r}")
    if resolved < 0:
        raise ValueError(f"step must be >= 0, got {resolved}")
    if resolved >= 2**63:
        raise ValueError(f"step must be below 2**63 (backends store it as int64), got {resolved}")
    return resolved


def check_step_argument(step: Any) -> None:
    """Checks the ``step=`` of a call: ``None``, an integer, or a JAX integer scalar (whose value needs no sync to check).

    Examples:
        >>> import jax.numpy as jnp
        >>> check_step_argument(None), check_step_argument(jnp.int32(3))
        (None, None)
    """
    if step is None:
        return
    if isinstance(step, jax.Array):
        if step.ndim != 0 or step.dtype.kind not in "iu":
            raise TypeError(f"step must be an integer scalar, got a JAX array of shape {step.shape} and {step.dtype}")
        return
    check_step(step)


def _check_histogram(key: str, histogram: Histogram) -> None:
    leaves = jax.tree_util.tree_leaves(histogram)
    if any(isinstance(leaf, jax.core.Tracer) for leaf in leaves):
        raise TypeError(f"metric {key!r} holds a JAX tracer: inside jit, log with jaxtrack.jit_log")
    limits = _check_numeric(key, "a Histogram's bucket_limits", histogram.bucket_limits)
    counts = _check_numeric(key, "a Histogram's bucket_counts", histogram.bucket_counts)
    if len(limits) != 1 or len(counts) != 1 or limits[0] != counts[0] + 1:
        raise TypeError(
            f"metric {key!r}: a Histogram needs 1-d bucket_counts and one more bucket_limits than counts, "
            f"got shapes {tuple(limits)} and {tuple(counts)}"
        )
    for field in ("min", "max", "num", "sum", "sum_squares"):
        shape = _check_numeric(key, f"a Histogram's {field}", getattr(histogram, field))
        if shape:
            raise TypeError(f"metric {key!r}: a Histogram's {field} must be a number, got shape {tuple(shape)}")


def _check_numeric(key: str, what: str, value: Any) -> tuple[int, ...]:
    """The shape of ``value`` if it is a number, a numeric array or a rectangular list of numbers; else ``TypeError``."""
    if isinstance(value, jax.core.Tracer):
        raise TypeError(f"metric {key!r} holds a JAX tracer: inside jit, log with jaxtrack.jit_log")
    if isinstance(value, (np.ndarray, np.generic, jax.Array)):
        if value.dtype.kind in _NUMERIC_KINDS or value.dtype.name == "bfloat16":
            return tuple(value.shape)
        raise TypeError(f"metric {key!r}: {what} must be numbers, got dtype {value.dtype}")
    if isinstance(value, (list, tuple)):
        return _array_like(key, what, value)
    if isinstance(value, (bool, numbers.Real)):
        return ()
    raise TypeError(f"metric {key!r}: {what} must be numbers, got {type(value).__name__}")


def _array_like(key: str, what: str, value: list[Any] | tuple[Any, ...]) -> tuple[int, ...]:
    """The shape of a nested list of numbers (or numeric arrays), found without reading any device data."""
    if not value:
        return (0,)
    shapes = set()
    for item in value:
        if isinstance(item, (list, tuple)):
            shapes.add(_array_like(key, what, item))
        elif isinstance(item, (np.ndarray, np.generic, jax.Array, bool, numbers.Real)):
            shapes.add(_check_numeric(key, what, item))
        else:
            raise TypeError(
                f"metric {key!r}: {what} of {type(item).__name__} cannot be logged; "
                "lists must hold numbers (a rectangular array of them)"
            )
    if len(shapes) != 1:
        raise TypeError(f"metric {key!r}: {what} that is not rectangular (items of shapes {sorted(shapes)})")
    return (len(value), *shapes.pop())


__all__ = [
    "check_step",
    "check_step_argument",
    "check_value",
    "check_values",
]
