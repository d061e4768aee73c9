"""The one way values get from the device to the host: held safely at the call, fetched in batches later.

On the caller's thread, [`hold`][jaxtrack.pipeline.fetch.hold] makes what a
call carries safe to keep: arrays sharded over other hosts are replicated
(a collective every process dispatches in step, see ``jaxtrack.multihost``),
and every other JAX array is copied on its device by one small compiled
launch, so a buffer the next training step donates (``donate_argnums``) is
still there when the values are read. Neither waits for the device. On the
dispatcher's thread, [`fetch`][jaxtrack.pipeline.fetch.fetch] copies the arrays
of every call that piled up to the host in one ``jax.device_get``; a value
that cannot be fetched costs only itself.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from jaxtrack.multihost import replicate_sharded
from jaxtrack.values.convert import HOST_SCALAR_TYPES, holds_jax_array, with_key_order
from jaxtrack.values.types import Histogram, Image

logger = logging.getLogger("jaxtrack")

_SMALL_VALUE_BYTES = 16  # a number or a short text: what a value costs beyond its arrays, roughly


def hold(payload: Any, *, owned: bool = False, nbytes: int | None = None) -> tuple[Any, int]:
    """``payload`` made safe to queue, and about how many bytes it holds.

    ``owned`` arrays (an accumulator jaxtrack swapped out) are not copied:
    nothing else can donate them; ``nbytes``, if known, saves measuring them.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> step = jax.jit(lambda w: w * 0.5, donate_argnums=0)
        >>> w = jnp.arange(4.0)
        >>> held, nbytes = hold({"w": w})
        >>> w = step(w)  # donates the logged buffer
        >>> jax.device_get(held["w"]).tolist(), nbytes
        ([0.0, 1.0, 2.0, 3.0], 16)
    """
    if isinstance(payload, Mapping):  # the values of a log call
        jax_keys = [key for key, value in payload.items() if holds_jax_array(value)]
        nbytes = sum(_nbytes(value) for value in payload.values())
        if not jax_keys:
            return payload, nbytes  # host values only: nothing to replicate, copy or wait for
        payload = replicate_sharded(payload)
        if not owned:
            copies = _copy([payload[key] for key in jax_keys])
            payload = {**payload, **dict(zip(jax_keys, copies, strict=True))}
        return payload, nbytes
    payload = replicate_sharded(payload)
    if owned and nbytes is not None:
        return payload, nbytes
    leaves = jax.tree_util.tree_leaves(payload)
    nbytes = sum(_nbytes(leaf) for leaf in leaves)
    if not owned and any(isinstance(leaf, jax.Array) for leaf in leaves):
        payload = _copy([payload])[0]
    return payload, nbytes


def _nbytes(value: Any) -> int:
    if type(value) in HOST_SCALAR_TYPES or value is None:
        return _SMALL_VALUE_BYTES
    if isinstance(value, str):
        return len(value) + _SMALL_VALUE_BYTES
    nbytes = getattr(value, "nbytes", None)  # NumPy and JAX arrays: metadata, no device sync
    if isinstance(nbytes, int):
        return nbytes
    if isinstance(value, (Histogram, Image, list, tuple)):
        return sum(_nbytes(leaf) for leaf in jax.tree_util.tree_leaves(value))
    return _SMALL_VALUE_BYTES


def _copy(trees: list[Any]) -> list[Any]:
    """``trees`` with every JAX array replaced by a copy on the same devices (one launch, no wait)."""
    leaves, treedef = jax.tree_util.tree_flatten(trees)
    picked = [
        i
        for i, leaf in enumerate(leaves)
        if isinstance(leaf, jax.Array) and not isinstance(leaf, jax.core.Tracer) and leaf.sharding.addressable_devices
    ]
    if not picked:
        return trees
    arrays = [leaves[i] for i in picked]
    try:
        copies = _copy_all(*arrays)
    except Exception:  # noqa: BLE001 - e.g. arrays committed to different devices: one copy each
        copies = tuple(jnp.copy(array) for array in arrays)
    for i, copy in zip(picked, copies, strict=True):
        leaves[i] = copy
    return jax.tree_util.tree_unflatten(treedef, leaves)


@functools.partial(jax.jit)
def _copy_all(*arrays: jax.Array) -> tuple[jax.Array, ...]:
    # jnp.copy keeps a copy primitive in the program: the outputs are new buffers, never the inputs.
    return tuple(jnp.copy(array) for array in arrays)


def fetch(payloads: list[Any]) -> list[Any]:
    """Every JAX array among ``payloads`` copied to the host in one call; mappings keep their key order.

    A payload whose arrays cannot be fetched (a deleted buffer, a device
    error) is fetched value by value, and a value that still fails becomes
    [`Unfetched`][jaxtrack.pipeline.fetch.Unfetched], so the other values of the
    call are kept. It waits for the device: only the dispatcher's thread calls it.

    Examples:
        >>> import jax.numpy as jnp
        >>> [payload] = fetch([{"b": jnp.float32(0.5), "a": 1}])
        >>> payload  # keys in the order logged, arrays on the host
        {'b': array(0.5, dtype=float32), 'a': 1}
    """
    try:
        leaves = jax.tree_util.tree_leaves(payloads)
    except Exception:  # noqa: BLE001 - e.g. a dict whose keys cannot be sorted: each payload on its own
        return [fetch([payload])[0] if _flattens(payload) else payload for payload in payloads]
    if not any(type(leaf) not in HOST_SCALAR_TYPES and isinstance(leaf, jax.Array) for leaf in leaves):
        return payloads
    try:
        return with_key_order(payloads, jax.device_get(payloads))
    except Exception:  # noqa: BLE001 - a bad value in one call must not lose the others
        return [_fetch_one(payload) for payload in payloads]


class Unfetched:
    """A value whose arrays could not be copied to the host: ``error`` says why; it is left out of the report.

    Examples:
        >>> import jax.numpy as jnp
        >>> gone = jnp.ones(3)
        >>> gone.delete()  # as a donated buffer would be
        >>> fetch([{"gone": gone, "loss": 0.5}])
        [{'gone': Unfetched(RuntimeError: Array has been deleted...), 'loss': 0.5}]
    """

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def __repr__(self) -> str:
        return f"Unfetched({type(self.error).__name__}: {self.error})"


def _fetch_one(payload: Any) -> Any:
    """``payload`` fetched as a whole, else part by part (a mapping's values, a tuple's items)."""
    try:
        return with_key_order(payload, jax.device_get(payload))
    except Exception as error:  # noqa: BLE001 - part by part below
        if isinstance(payload, Mapping):
            return {key: _fetch_one(value) for key, value in payload.items()}
        if type(payload) in (tuple, list):
            return type(payload)(_fetch_one(item) for item in payload)
        return Unfetched(error)


def _flattens(payload: Any) -> bool:
    try:
        jax.tree_util.tree_leaves(payload)
    except Exception:  # noqa: BLE001 - left to the backend call, which names the problem
        return False
    return True


__all__ = ["Unfetched", "fetch", "hold"]
