"""How the values of a metric logged at many steps become the one value reported.

A [`Reduction`][jaxtrack.ingraph.Reduction] folds each step's value into a small state of fixed size
(so memory does not grow with the steps of an interval), merges two states
(partial results from a scan, say), and turns a state into the reported
value. All of it runs inside the compiled step.

``mean``, ``sum``, ``min``, ``max`` and ``last`` work element-wise: an array
value gives an array of the same shape. ``stats`` and ``histogram`` summarise
the distribution of every element of every step.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxtrack.values import DEFAULT_NUM_BINS, Histogram

State = tuple[Any, ...]

# Step counts are float32 so they share the accumulator's float vector with the
# sums (one array to pass and fetch instead of two); exact up to 2**24 steps per interval.
_COUNT = jnp.float32


def _accumulator_dtype(dtype: Any, *, keep_ints: bool) -> Any:
    dtype = jnp.dtype(dtype)
    if dtype == jnp.bool_:
        return jnp.dtype(jnp.int32)
    if jnp.issubdtype(dtype, jnp.integer) and keep_ints:
        return dtype
    # bfloat16/float16 sums lose precision fast; sums of ints become floats for means.
    return jnp.promote_types(dtype, jnp.float32) if jnp.issubdtype(dtype, jnp.floating) else jnp.dtype(jnp.float32)


class Reduction(abc.ABC):
    """Folds a metric's per-step values into its reported value.

    Subclass it for a reduction of your own and pass an instance as
    ``jit_log(..., reduce=...)``. A metric logged several times must be
    logged with equal reductions (same class, same attributes).

    Examples:
        >>> import jax.numpy as jnp
        >>> mean = get_reduction("mean")
        >>> state = mean.init((), jnp.float32)
        >>> for value in (1.0, 2.0, 6.0):
        ...     state = mean.update(state, jnp.float32(value))
        >>> float(mean.result(state))
        3.0
    """

    name: str = ""

    @abc.abstractmethod
    def init(self, shape: tuple[int, ...], dtype: Any) -> State:
        """The state before any step, for values of this shape and dtype."""

    @abc.abstractmethod
    def update(self, state: State, value: jax.Array) -> State:
        """The state after one more step's value."""

    @abc.abstractmethod
    def merge(self, a: State, b: State) -> State:
        """One state for the steps of ``a`` followed by those of ``b``."""

    @abc.abstractmethod
    def result(self, state: State, xp: Any = jnp) -> Any:
        """The reported value (an array, a dict of arrays or a [`Histogram`][jaxtrack.Histogram]).

        ``xp`` is ``jax.numpy`` in the graph, or ``numpy`` when the dispatcher
        finishes the reduction on the host (so reporting costs no launch).
        """

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and vars(self) == vars(other)

    def __hash__(self) -> int:
        return hash((type(self), tuple(sorted(vars(self).items()))))


class Mean(Reduction):
    """``reduce="mean"``: the element-wise mean over the interval's steps.

    Examples:
        >>> import jax.numpy as jnp, jaxtrack as jt
        >>> with jt.capture() as captured:
        ...     for value in ([1.0, 4.0], [3.0, 0.0]):
        ...         jt.jit_log({"x": jnp.array(value)}, reduce="mean")
        >>> captured.metrics["x"].tolist()
        [2.0, 2.0]
    """

    name = "mean"

    def init(self, shape: tuple[int, ...], dtype: Any) -> State:
        return jnp.zeros(shape, _accumulator_dtype(dtype, keep_ints=False)), jnp.zeros((), _COUNT)

    def update(self, state: State, value: jax.Array) -> State:
        total, count = state
        return total + value.astype(total.dtype), count + 1

    def merge(self, a: State, b: State) -> State:
        return a[0] + b[0], a[1] + b[1]

    def result(self, state: State, xp: Any = jnp) -> Any:
        total, count = state
        return total / count


class Sum(Reduction):
    """``reduce="sum"``: the element-wise sum over the interval's steps (integers stay integers).

    Examples:
        >>> import jax.numpy as jnp, jaxtrack as jt
        >>> with jt.capture() as captured:
        ...     for tokens in (128, 128, 64):
        ...         jt.jit_log({"tokens": jnp.int32(tokens)}, reduce="sum")
        >>> int(captured.metrics["tokens"])
        320
    """

    name = "sum"

    def init(self, shape: tuple[int, ...], dtype: Any) -> State:
        dtype = _accumulator_dtype(dtype, keep_ints=True)
        if jnp.issubdtype(dtype, jnp.integer) and dtype.itemsize < 4:
            # As jnp.sum and np.sum do: small integers are added in a wide type, not modulo 256.
            dtype = jnp.dtype(jnp.int32 if jnp.issubdtype(dtype, jnp.signedinteger) else jnp.uint32)
        return (jnp.zeros(shape, dtype),)

    def update(self, state: State, value: jax.Array) -> State:
        return (state[0] + value.astype(state[0].dtype),)

    def merge(self, a: State, b: State) -> State:
        return (a[0] + b[0],)

    def result(self, state: State, xp: Any = jnp) -> Any:
        return state[0]


class _Extremum(Reduction):
    _pick: Any = None

    def init(self, shape: tuple[int, ...], dtype: Any) -> State:
        dtype = _accumulator_dtype(dtype, keep_ints=True)
        start: float
        if jnp.issubdtype(dtype, jnp.integer):
            info = jnp.iinfo(dtype)
            start = info.max if self.name == "min" else info.min
        else:
            start = np.inf if self.name == "min" else -np.inf
        return (jnp.full(shape, start, dtype),)

    def update(self, state: State, value: jax.Array) -> State:
        return (type(self)._pick(state[0], value.astype(state[0].dtype)),)

    def merge(self, a: State, b: State) -> State:
        return (type(self)._pick(a[0], b[0]),)

    def result(self, state: State, xp: Any = jnp) -> Any:
        return state[0]


class Min(_Extremum):
    """``reduce="min"``: the element-wise minimum over the interval's steps (NaN wins, so it is seen).

    Examples:
        >>> import jax.numpy as jnp, jaxtrack as jt
        >>> with jt.capture() as captured:
        ...     for loss in (0.5, 0.25, 0.75):
        ...         jt.jit_log({"loss": jnp.float32(loss)}, reduce="min")
        >>> float(captured.metrics["loss"])
        0.25
    """

    name = "min"
    _pick = staticmethod(jnp.minimum)


class Max(_Extremum):
    """``reduce="max"``: the element-wise maximum over the interval's steps (NaN wins, so it is seen).

    Examples:
        >>> import jax.numpy as jnp, jaxtrack as jt
        >>> with jt.capture() as captured:
        ...     for norm in (1.0, float("nan"), 3.0):
        ...         jt.jit_log({"grad_norm": jnp.float32(norm)}, reduce="max")
        >>> float(captured.metrics["grad_norm"])
        nan
    """

    name = "max"
    _pick = staticmethod(jnp.maximum)


class Last(Reduction):
    """``reduce="last"``: the value of the interval's last step.

    Examples:
        >>> import jax.numpy as jnp, jaxtrack as jt
        >>> with jt.capture() as captured:
        ...     for lr in (0.3, 0.2, 0.1):
        ...         jt.jit_log({"lr": jnp.float32(lr)}, reduce="last")
        >>> round(float(captured.metrics["lr"]), 6)
        0.1
    """

    name = "last"

    def init(self, shape: tuple[int, ...], dtype: Any) -> State:
        return jnp.zeros(shape, dtype), jnp.zeros((), _COUNT)

    def update(self, state: State, value: jax.Array) -> State:
        return value.astype(state[0].dtype), state[1] + 1

    def merge(self, a: State, b: State) -> State:
        return jnp.where(b[1] > 0, b[0], a[0]), a[1] + b[1]

    def result(self, state: State, xp: Any = jnp) -> Any:
        return state[0]


class Stats(Reduction):
    """``reduce="stats"``: mean, standard deviation, min and max of every element of every step.

    Reported as ``key/mean``, ``key/std``, ``key/min``, ``key/max``. Uses
    Chan et al.'s pairwise update, so a large mean does not swamp a small
    variance the way a sum of squares would.

    Examples:
        >>> import jax.numpy as jnp, jaxtrack as jt
        >>> with jt.capture() as captured:
        ...     for weights in ([1.0, 3.0], [5.0, 7.0]):
        ...         jt.jit_log({"w": jnp.array(weights)}, reduce="stats")
        >>> {name: round(float(value), 3) for name, value in captured.metrics["w"].items()}
        {'mean': 4.0, 'std': 2.236, 'min': 1.0, 'max': 7.0}
    """

    name = "stats"

    def init(self, shape: tuple[int, ...], dtype: Any) -> State:
        zero = jnp.zeros((), jnp.float32)
        return zero, zero, zero, jnp.full((), np.inf, jnp.float32), jnp.full((), -np.inf, jnp.float32)

    def update(self, state: State, value: jax.Array) -> State:
        flat = value.astype(jnp.float32).reshape(-1)
        n = jnp.float32(flat.size)
        mean = flat.mean()
        m2 = jnp.square(flat - mean).sum()
        return self.merge(state, (n, mean, m2, flat.min(), flat.max()))

    def merge(self, a: State, b: State) -> State:
        n_a, mean_a, m2_a, min_a, max_a = a
        n_b, mean_b, m2_b, min_b, max_b = b
        n = n_a + n_b
        safe_n = jnp.maximum(n, 1.0)
        delta = mean_b - mean_a
        mean = mean_a + delta * n_b / safe_n
        m2 = m2_a + m2_b + jnp.square(delta) * n_a * n_b / safe_n
        return n, mean, m2, jnp.minimum(min_a, min_b), jnp.maximum(max_a, max_b)

    def result(self, state: State, xp: Any = jnp) -> Any:
        n, mean, m2, low, high = state
        return {"mean": mean, "std": xp.sqrt(m2 / n), "min": low, "max": high}


@dataclasses.dataclass(frozen=True, eq=False)
class HistogramReduction(Reduction):
    """``reduce="histogram"``: a fixed-bin histogram of every element of every step.

    With ``range=(low, high)`` the buckets are fixed; without it they span the
    finite values of the interval's first step. Values outside the buckets
    are counted in the edge buckets; ``min``, ``max`` and the moments stay
    exact. Reported as a [`Histogram`][jaxtrack.Histogram]. Non-finite values are
    left out.

    Examples:
        >>> reduction = get_reduction(HistogramReduction(num_bins=4, range=(0.0, 4.0)))
        >>> state = reduction.update(reduction.init((3,), "float32"), jnp.array([0.5, 1.5, 3.5]))
        >>> reduction.result(state).bucket_counts.tolist()
        [1, 1, 0, 1]

        In a step, ``reduce=HistogramReduction(...)`` (``reduce="histogram"`` is
        ``HistogramReduction()``):

        >>> import jaxtrack as jt
        >>> with jt.capture() as captured:
        ...     jt.jit_log({"logits": jnp.array([0.5, 1.5, 3.5])}, reduce=HistogramReduction(4, (0.0, 4.0)))
        >>> captured.metrics["logits"].bucket_counts.tolist()
        [1, 1, 0, 1]
    """

    num_bins: int = DEFAULT_NUM_BINS
    range: tuple[float, float] | None = None
    name = "histogram"

    def __post_init__(self) -> None:
        if self.num_bins < 1:
            raise ValueError(f"histogram num_bins must be at least 1, got {self.num_bins}")
        if self.range is not None and not self.range[0] < self.range[1]:
            raise ValueError(f"histogram range must be (low, high) with low < high, got {self.range}")

    def init(self, shape: tuple[int, ...], dtype: Any) -> State:
        low, high = self.range if self.range is not None else (0.0, 0.0)
        f32 = jnp.float32
        return (
            jnp.array(low, f32),
            jnp.array(high, f32),
            jnp.zeros((self.num_bins,), jnp.int32),
            jnp.zeros((), f32),  # number of finite values
            jnp.zeros((), f32),  # their sum
            jnp.zeros((), f32),  # their sum of squares
            jnp.full((), np.inf, f32),
            jnp.full((), -np.inf, f32),
        )

    def update(self, state: State, value: jax.Array) -> State:
        flat = value.astype(jnp.float32).reshape(-1)
        finite = jnp.isfinite(flat)
        low, high = state[0], state[1]
        if self.range is None:
            first = state[3] == 0
            step_low = jnp.min(jnp.where(finite, flat, np.inf))
            step_high = jnp.max(jnp.where(finite, flat, -np.inf))
            widen = step_low == step_high
            low = jnp.where(first, jnp.where(widen, step_low - 0.5, step_low), low)
            high = jnp.where(first, jnp.where(widen, step_high + 0.5, step_high), high)
        counts = state[2] + self._bucket(flat, finite, low, high)
        values = jnp.where(finite, flat, 0.0)
        return (
            low,
            high,
            counts,
            state[3] + finite.sum(dtype=jnp.float32),
            state[4] + values.sum(),
            state[5] + jnp.square(values).sum(),
            jnp.minimum(state[6], jnp.min(jnp.where(finite, flat, np.inf))),
            jnp.maximum(state[7], jnp.max(jnp.where(finite, flat, -np.inf))),
        )

    def _bucket(self, flat: jax.Array, weight: jax.Array, low: jax.Array, high: jax.Array) -> jax.Array:
        width = jnp.maximum(high - low, jnp.finfo(jnp.float32).tiny) / self.num_bins
        index = jnp.clip(jnp.floor((flat - low) / width), 0, self.num_bins - 1).astype(jnp.int32)
        return jnp.zeros((self.num_bins,), jnp.int32).at[index].add(weight.astype(jnp.int32))

    def merge(self, a: State, b: State) -> State:
        # b's buckets are re-counted into a's by their centres (exact when the ranges agree).
        a_empty, b_empty = a[3] == 0, b[3] == 0
        low = jnp.where(a_empty, b[0], a[0])
        high = jnp.where(a_empty, b[1], a[1])
        b_width = (b[1] - b[0]) / self.num_bins
        centres = b[0] + (jnp.arange(self.num_bins, dtype=jnp.float32) + 0.5) * b_width
        width = jnp.maximum(high - low, jnp.finfo(jnp.float32).tiny) / self.num_bins
        index = jnp.clip(jnp.floor((centres - low) / width), 0, self.num_bins - 1).astype(jnp.int32)
        moved = jnp.zeros((self.num_bins,), jnp.int32).at[index].add(b[2])
        counts = jnp.where(b_empty, a[2], jnp.where(a_empty, b[2], a[2] + moved))
        return (
            low,
            high,
            counts,
            a[3] + b[3],
            a[4] + b[4],
            a[5] + b[5],
            jnp.minimum(a[6], b[6]),
            jnp.maximum(a[7], b[7]),
        )

    def result(self, state: State, xp: Any = jnp) -> Any:
        low, high, counts, num, total, squares, smallest, largest = state
        return Histogram(
            bucket_limits=xp.linspace(low, high, self.num_bins + 1),
            bucket_counts=counts,
            min=smallest,
            max=largest,
            num=num,
            sum=total,
            sum_squares=squares,
        )

    def __repr__(self) -> str:
        return f"HistogramReduction(num_bins={self.num_bins}, range={self.range})"


_BY_NAME: dict[str, type[Reduction]] = {cls.name: cls for cls in (Mean, Sum, Min, Max, Last, Stats, HistogramReduction)}


def get_reduction(reduce: str | Reduction) -> Reduction:
    """The reduction named ``reduce``, or ``reduce`` itself if it is a [`Reduction`][jaxtrack.ingraph.Reduction].

    The names are ``mean``, ``sum``, ``min``, ``max``, ``last``, ``stats`` and
    ``histogram``; another is a ``ValueError`` listing them.

    Examples:
        >>> get_reduction("max")
        Max()
    """
    if isinstance(reduce, Reduction):
        return reduce
    if isinstance(reduce, str) and reduce in _BY_NAME:
        return _BY_NAME[reduce]()
    raise ValueError(f"unknown reduce={reduce!r}; choose one of {', '.join(map(repr, _BY_NAME))} or a Reduction")


__all__ = [
    "HistogramReduction",
    "Last",
    "Max",
    "Mean",
    "Min",
    "Reduction",
    "Stats",
    "Sum",
    "get_reduction",
]
