"""Turning logged values into other shapes: flat ``"a/b"`` keys, host copies, plain Python.

[`flatten`][jaxtrack.values.flatten] joins nested mappings' keys,
[`to_host`][jaxtrack.values.to_host] copies JAX arrays to host memory in one
batched transfer, and [`to_plain`][jaxtrack.values.to_plain] makes
configurations plain Python (for YAML, JSON and run configs).
``HOST_SCALAR_TYPES`` is the set of exact types that are already host scalars.
"""

from __future__ import annotations

import dataclasses
import enum
import pathlib
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from jaxtrack.values.text import check_text
from jaxtrack.values.types import Histogram, Image

# Exact types that are plain host scalars: checked with one set look-up, where the
# isinstance checks against numbers.Real or jax.Array (ABCs) cost far more per value.
HOST_FLOAT_TYPES = frozenset({float, np.float16, np.float32, np.float64})
HOST_INT_TYPES = frozenset({int, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64})
HOST_SCALAR_TYPES = HOST_FLOAT_TYPES | HOST_INT_TYPES | {bool, np.bool_}
"""Exact types of values that are already host scalars (a fast path before slower checks)."""
_LEAF_TYPES = HOST_SCALAR_TYPES | {str, type(None)}


def flatten(tree: Mapping[str, Any], *, sep: str = "/") -> dict[str, Any]:
    """Flattens nested mappings into one level, joining keys with ``sep``.

    A name given twice (once nested, once flat) is a ``ValueError``; a key
    that is not a string (or an int) is a ``TypeError``.

    Examples:
        >>> flatten({"train": {"loss": 1.0, "acc": 0.5}, "lr": 0.1})
        {'train/loss': 1.0, 'train/acc': 0.5, 'lr': 0.1}
    """
    if not isinstance(tree, Mapping):
        raise TypeError(f"metrics must be a mapping of names to values, got {type(tree).__name__}")
    out: dict[str, Any] = {}
    _flatten_into(out, tree, "", sep)
    return out


def _flatten_into(out: dict[str, Any], tree: Mapping[Any, Any], prefix: str, sep: str) -> None:
    for key, value in tree.items():
        if type(key) is str:  # the common case first: exact type checks, no ABCs
            if not key:
                raise ValueError(f"empty metric name under {prefix!r}")
            if not key.isascii():
                check_text(f"{prefix}{key}", key)
        elif isinstance(key, bool) or not isinstance(key, (str, int)):
            raise TypeError(
                f"metric names must be strings (or ints), got {key!r} ({type(key).__name__}) under {prefix!r}"
            )
        elif isinstance(key, str):
            if not key:
                raise ValueError(f"empty metric name under {prefix!r}")
            check_text(f"{prefix}{key}", key)
        name = f"{prefix}{key}" if prefix else str(key)
        if type(value) is dict or (type(value) not in _LEAF_TYPES and isinstance(value, Mapping)):
            _flatten_into(out, value, name + sep, sep)
        elif name in out:
            raise ValueError(f"metric name {name!r} is given twice (once nested, once flat)")
        else:
            out[name] = value


def to_host(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Copies every JAX array in ``flat`` to host memory in one batched transfer.

    It waits for the device to produce the values, so call it off the training
    thread. The pipeline has its own batched fetch
    (``jaxtrack.pipeline.fetch``); a backend receives host values already.

    Examples:
        >>> import jax.numpy as jnp
        >>> host = to_host({"loss": jnp.float32(0.5), "lr": 0.1})
        >>> {key: type(value).__name__ for key, value in host.items()}
        {'loss': 'ndarray', 'lr': 'float'}
    """
    if not any(holds_jax_array(v) for v in flat.values()):
        return dict(flat)
    return jax.device_get(dict(flat))


def holds_jax_array(value: Any) -> bool:
    """Whether ``value`` is a JAX array, or a [`Histogram`][jaxtrack.values.Histogram] or [`Image`][jaxtrack.values.Image] holding one.

    Looks at types only (no device sync): the pipeline asks it to find the
    values it must copy on the device and fetch.

    Examples:
        >>> import jax.numpy as jnp, numpy as np
        >>> holds_jax_array(jnp.ones(2)), holds_jax_array(Image(jnp.zeros((2, 2)))), holds_jax_array(np.ones(2))
        (True, True, False)
    """
    if type(value) in HOST_FLOAT_TYPES or type(value) in HOST_INT_TYPES:
        return False
    if isinstance(value, jax.Array):
        return True
    if isinstance(value, (Histogram, Image)):
        return any(isinstance(leaf, jax.Array) for leaf in jax.tree_util.tree_leaves(value))
    return False


def to_plain(value: Any) -> Any:
    """``value`` as plain Python: dicts, lists, strings, numbers, bools and ``None``.

    For configurations and hyperparameters: dataclasses and mappings become
    dicts, tuples and sets lists, NumPy values Python ones, enums their name,
    paths their text, anything else its ``repr``. JAX arrays must be fetched
    first ([`to_host`][jaxtrack.values.to_host]).

    Examples:
        >>> import enum, numpy as np
        >>> class Mode(enum.Enum):
        ...     FAST = 1
        >>> to_plain({"layers": (64, 64), "lr": np.float32(0.5), "mode": Mode.FAST})
        {'layers': [64, 64], 'lr': 0.5, 'mode': 'FAST'}
    """
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_plain(dataclasses.asdict(value))
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_plain(v) for v in value]
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, (np.generic, np.ndarray)):
        return to_plain(value.tolist())
    if isinstance(value, pathlib.PurePath):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def with_key_order(given: Any, rebuilt: Any) -> Any:
    """``rebuilt`` with the key order of the mappings in ``given``: pytree flattening sorts dict keys.

    Examples:
        >>> import jax
        >>> given = {"b": 1, "a": 2}
        >>> list(jax.device_get(given)), list(with_key_order(given, jax.device_get(given)))
        (['a', 'b'], ['b', 'a'])
    """
    if isinstance(given, dict):
        return type(given)((key, with_key_order(given[key], rebuilt[key])) for key in given)
    if type(given) in (list, tuple):
        return type(given)(with_key_order(g, r) for g, r in zip(given, rebuilt, strict=True))
    return rebuilt


__all__ = [
    "HOST_SCALAR_TYPES",
    "flatten",
    "holds_jax_array",
    "to_host",
    "to_plain",
    "with_key_order",
]
