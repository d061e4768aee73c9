"""Where a ``jaxtrack.jit`` step's metrics live in its accumulator, and how their results are read on the host.

A [`MetricSpec`][jaxtrack.ingraph.layout.MetricSpec] describes one metric; a
[`Layout`][jaxtrack.ingraph.layout.Layout] packs every metric's reduction state
into a few arrays (scalars of one dtype share a vector, so a step with dozens
of metrics passes only a few arrays in and out) and finishes the reductions
with NumPy once the accumulator is fetched.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxtrack.ingraph.reductions import Mean, Reduction, State
from jaxtrack.values import flatten


@dataclasses.dataclass(frozen=True)
class MetricSpec:
    """A metric in the accumulator: its name, reduction, and the shape and dtype of its values.

    Examples:
        >>> import jax.numpy as jnp, jaxtrack as jt
        >>> @jt.jit
        ... def step(x):
        ...     jt.jit_log({"x": x}, reduce="max")
        ...     return x
        >>> _ = step(jnp.zeros(3))
        >>> step.metric_specs
        (MetricSpec(name='x', reduction=Max(), shape=(3,), dtype=dtype('float32')),)
    """

    name: str
    reduction: Reduction
    shape: tuple[int, ...]
    dtype: Any

    def initial(self) -> State:
        """The reduction's state before any step, for values of this metric's shape and dtype."""
        return self.reduction.init(self.shape, self.dtype)


class Layout:
    """Where each metric's state lives in the accumulator.

    Scalar state leaves of one dtype share one vector, so a step with dozens
    of metrics still passes only a few arrays in and out: dispatch cost grows
    with the number of arrays, not with the number of metrics. A
    [`TrackedFunction`][jaxtrack.ingraph.TrackedFunction] makes one per traced
    step; ``pack``/``unpack`` run in the graph, ``results_on_host`` on the
    dispatcher's thread once the accumulator is fetched.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from jaxtrack.ingraph import Max, Mean
        >>> f32 = jnp.dtype("float32")
        >>> layout = Layout([MetricSpec("loss", Mean(), (), f32), MetricSpec("grad_norm", Max(), (), f32)])
        >>> acc = layout.initial()
        >>> [a.shape for a in acc]  # loss's sum and count, grad_norm's max: one vector
        [(3,)]
        >>> for loss, norm in [(1.0, 2.0), (0.5, 3.0)]:  # what two steps do in the graph
        ...     states = layout.unpack(acc)
        ...     states = {"loss": Mean().update(states["loss"], jnp.float32(loss)),
        ...               "grad_norm": Max().update(states["grad_norm"], jnp.float32(norm))}
        ...     acc = layout.pack(states)
        >>> layout.results_on_host(jax.device_get(acc), prefix="train/")
        {'train/loss': 0.75, 'train/grad_norm': 3.0}
    """

    def __init__(self, specs: Sequence[MetricSpec]) -> None:
        self.specs = tuple(specs)
        self.index = {spec.name: spec for spec in self.specs}
        self.result_keys: list[str] = []  # flattened result names, set when the finaliser is traced
        self._initial_makers: dict[tuple[jax.sharding.Sharding, ...], Callable[[], tuple[jax.Array, ...]]] = {}
        self._treedefs = []
        # Per spec, per state leaf: ("vec", dtype group, position) or ("own", index, 0).
        self._slots: list[list[tuple[str, int, int]]] = []
        self._vector_dtypes: list[Any] = []
        self._vector_sizes: list[int] = []
        self._own_count = 0
        for spec in self.specs:
            leaves, treedef = jax.tree_util.tree_flatten(jax.eval_shape(spec.initial))
            self._treedefs.append(treedef)
            slots: list[tuple[str, int, int]] = []
            for leaf in leaves:
                if leaf.shape == ():
                    dtype = jnp.dtype(leaf.dtype)
                    if dtype not in self._vector_dtypes:
                        self._vector_dtypes.append(dtype)
                        self._vector_sizes.append(0)
                    group = self._vector_dtypes.index(dtype)
                    slots.append(("vec", group, self._vector_sizes[group]))
                    self._vector_sizes[group] += 1
                else:
                    slots.append(("own", self._own_count, 0))
                    self._own_count += 1
            self._slots.append(slots)

    def pack(self, states: dict[str, State]) -> tuple[Any, ...]:
        """Every metric's reduction state, by name, packed into the accumulator's few arrays."""
        vectors: list[list[Any]] = [[None] * size for size in self._vector_sizes]
        own: list[Any] = [None] * self._own_count
        for spec, slots in zip(self.specs, self._slots, strict=True):
            for leaf, (kind, group, position) in zip(jax.tree_util.tree_leaves(states[spec.name]), slots, strict=True):
                if kind == "vec":
                    vectors[group][position] = jnp.asarray(leaf, self._vector_dtypes[group])
                else:
                    own[group] = leaf
        return (*(jnp.stack(v) for v in vectors), *own)

    def unpack(self, packed: tuple[Any, ...]) -> dict[str, State]:
        """The accumulator's arrays back into each metric's reduction state, by name (``pack`` undone)."""
        vectors, own = packed[: len(self._vector_sizes)], packed[len(self._vector_sizes) :]
        states = {}
        for spec, slots, treedef in zip(self.specs, self._slots, self._treedefs, strict=True):
            leaves = [vectors[group][position] if kind == "vec" else own[group] for kind, group, position in slots]
            states[spec.name] = jax.tree_util.tree_unflatten(treedef, leaves)
        return states

    def initial(self) -> tuple[Any, ...]:
        """The packed accumulator before any step: every reduction's initial state."""
        return self.pack({spec.name: spec.initial() for spec in self.specs})

    def initial_on(self, shardings: tuple[jax.sharding.Sharding, ...]) -> tuple[jax.Array, ...]:
        """The initial accumulator, made on the device with these shardings (committed to them).

        A launch of a tiny compiled function (microseconds): a transfer of
        the host values to the device costs ten times more.
        """
        make = self._initial_makers.get(shardings)
        if make is None:
            make = self._initial_makers[shardings] = jax.jit(self.initial, out_shardings=shardings)
        return make()

    @functools.cached_property
    def nbytes(self) -> int:
        """The accumulator's size in bytes (fixed by the layout)."""
        return sum(array.nbytes for array in self.initial_on_host)

    @functools.cached_property
    def initial_on_host(self) -> tuple[np.ndarray, ...]:
        """The initial accumulator as read-only NumPy arrays.

        Passed to the step as they are, they start an interval without a
        launch of their own, and being uncommitted they land wherever the
        step runs (replicated over a sharded step's devices).
        """
        arrays = tuple(np.asarray(a) for a in jax.device_get(jax.jit(self.initial)()))
        for array in arrays:
            array.setflags(write=False)
        return arrays

    @functools.cached_property
    def _scalar_means(self) -> tuple[list[int], np.ndarray, np.ndarray, list[MetricSpec]]:
        """Scalar ``mean`` metrics whose sum and count share one vector: finished with one division."""
        picked, sums, counts = [], [], []
        for i, (spec, slots) in enumerate(zip(self.specs, self._slots, strict=True)):
            if isinstance(spec.reduction, Mean) and spec.shape == () and slots[0][:2] == slots[1][:2] == ("vec", 0):
                picked.append(i)
                sums.append(slots[0][2])
                counts.append(slots[1][2])
        rest = [spec for i, spec in enumerate(self.specs) if i not in set(picked)]
        return picked, np.asarray(sums, dtype=np.intp), np.asarray(counts, dtype=np.intp), rest

    def results_on_host(self, packed: tuple[np.ndarray, ...], prefix: str = "") -> dict[str, Any]:
        """The reduced values from a fetched accumulator, computed with NumPy, in logging order."""
        picked, sums, counts, rest = self._scalar_means
        by_index: dict[int, Any] = {}
        with np.errstate(divide="ignore", invalid="ignore"):
            if picked:
                # The common case, vectorised: every scalar mean in one division.
                vector = np.asarray(packed[0])
                by_index.update(zip(picked, (vector[sums] / vector[counts]).tolist(), strict=True))
            if rest:
                states = self.unpack(packed)
                for i, spec in enumerate(self.specs):
                    if i not in by_index:
                        by_index[i] = spec.reduction.result(states[spec.name], xp=np)
        results = {f"{prefix}{spec.name}": by_index[i] for i, spec in enumerate(self.specs)}
        # Python scalars for 0-d results: what every backend writes fastest.
        return {key: _scalar_or_array(value) for key, value in flatten(results).items()}


def _scalar_or_array(value: Any) -> Any:
    if isinstance(value, (np.ndarray, np.generic)) and value.ndim == 0:
        return value.item()
    return value


__all__ = ["Layout", "MetricSpec"]
