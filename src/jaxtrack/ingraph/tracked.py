"""``jaxtrack.jit``: ``jax.jit`` plus an accumulator of the step's ``jit_log`` metrics.

The accumulator is one more argument of the compiled function, donated, and
one more output: it stays on the device from step to step and is never read
on the training thread. ``take_metrics`` swaps it for a fresh one with one
small asynchronous dispatch and returns the interval's values as device
arrays; ``report`` hands them to the background dispatcher (``jaxtrack.pipeline``).
"""

from __future__ import annotations

import functools
import inspect
import threading
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
from jax.sharding import NamedSharding, PartitionSpec, SingleDeviceSharding

from jaxtrack import api
from jaxtrack.ingraph.capture import is_tracing, open_frame
from jaxtrack.ingraph.layout import Layout, MetricSpec
from jaxtrack.pipeline.calls import Call
from jaxtrack.trackers.base import Tracker
from jaxtrack.values import flatten

_UNSET: Any = object()


class _NewMetrics(Exception):
    """Raised while tracing: the step logs metrics the accumulator has no room for yet."""

    def __init__(self, specs: list[MetricSpec]) -> None:
        super().__init__(", ".join(spec.name for spec in specs))
        self.specs = specs


class TrackedFunction:
    """A function compiled with ``jax.jit`` whose ``jit_log`` metrics accumulate on the device.

    Made by [`jaxtrack.jit`][jaxtrack.jit]. Calling it is calling the jitted function:
    same arguments, same outputs. See [`take_metrics`][jaxtrack.ingraph.TrackedFunction.take_metrics]
    and [`report`][jaxtrack.ingraph.TrackedFunction.report]. Called from inside another traced
    function, it is inlined, so its ``jit_log`` calls reach the enclosing step.

    Examples:
        >>> import jax.numpy as jnp, jaxtrack as jt
        >>> @jt.jit
        ... def step(x):
        ...     jt.jit_log({"x": x}, reduce="max")
        ...     return x + 1
        >>> isinstance(step, jt.TrackedFunction)
        True
        >>> x = step(step(jnp.float32(0)))
        >>> step.steps_since_take, [spec.name for spec in step.metric_specs]
        (2, ['x'])
        >>> float(step.take_metrics()["x"]), step.steps_since_take
        (1.0, 0)
    """

    def __init__(
        self, fun: Callable[..., Any], jit_kwargs: dict[str, Any], transform: Callable[..., Any] = jax.jit
    ) -> None:
        if not callable(fun):
            raise TypeError(f"jaxtrack.jit takes a function, got {fun!r}")
        self._transform = transform
        functools.update_wrapper(self, fun)
        self.fun = fun
        self._jit_kwargs = dict(jit_kwargs)
        self._signature = _signature(fun)
        self._dynamic_arities: dict[int, int] = {}
        self._lock = threading.RLock()
        self._layout = Layout(())
        self._acc: tuple[Any, ...] = ()
        self._calls = 0
        self._inner = self._make_inner()
        self._per_arity = "in_shardings" in jit_kwargs and not isinstance(jit_kwargs["in_shardings"], (tuple, list))
        self._jitted: dict[int | None, Any] = {}
        if not self._per_arity:
            self._jitted[None] = transform(self._inner, **_inner_jit_kwargs(self._jit_kwargs, None, self._signature))
        self._finalize = jax.jit(self._finalize_impl, static_argnums=0)
        self._grow_acc = jax.jit(self._grow_impl, static_argnums=(0, 1))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if is_tracing():
            # Called from inside another traced function: inline it, so its
            # jit_log calls reach the enclosing step (or fall back there).
            return self.fun(*args, **kwargs)
        jitted = self._jitted_for(self._dynamic_arity(len(args)))
        with self._lock:
            out, self._acc = self._with_room(jitted, *args, **kwargs)
            self._calls += 1
            return out

    def take_metrics(self) -> dict[str, jax.Array]:
        """The metrics reduced since the last take, as device arrays; starts a new interval.

        Returns at once: the reduction is dispatched to the device like a step
        and the arrays are ready when the device gets there. Keys are the
        ``jit_log`` names flattened with ``/`` (``stats`` adds ``/mean``,
        ``/std``, ``/min``, ``/max``). Empty if the function was not called
        since the last take. A metric that was not logged in the interval (a
        step variant that skips it) reports its reduction's empty value (NaN
        for ``mean``).
        """
        taken = self._swap()
        if taken is None:
            return {}
        layout, acc = taken
        leaves = self._finalize(layout, acc)
        # A tuple keeps the order the metrics were logged in (jit sorts dict keys).
        return dict(zip(layout.result_keys, leaves, strict=True))

    def report(
        self, step: int, *, tracker: Tracker | None = None, prefix: str = "", extra: Mapping[str, Any] | None = None
    ) -> bool:
        """Takes the interval's metrics and queues them for ``tracker`` (default: the current one) at ``step``.

        Never waits for the device, and launches at most the fresh
        accumulator's tiny initialiser (for a step on committed arrays): the
        pipeline's dispatcher fetches the values, finishes the reductions and
        hands them to the tracker's backends. ``extra`` host
        values (timings, say) go into the same report. Returns whether there
        was anything to report.

        Examples:
            >>> import jax.numpy as jnp, jaxtrack as jt
            >>> @jt.jit
            ... def step(x):
            ...     jt.jit_log({"x": x})
            ...     return x + 1
            >>> with jt.current_tracker(jt.ConsoleTracker(logger="doc.report")):
            ...     x = step(step(jnp.float32(0)))
            ...     step.report(2)
            True
        """
        taken = self._swap()
        if taken is None:
            return False
        layout, acc = taken
        # The accumulator itself goes to the dispatcher, which fetches it and finishes the
        # reductions with NumPy: no launch on this thread, and no copy (nothing else holds it).
        extra = dict(extra or {})
        target = tracker or api.current_tracker()
        target._submit(
            Call(
                "log",
                acc,
                step=step,
                prepare=lambda host_acc: {**layout.results_on_host(host_acc, prefix), **extra},
                owned=True,
                nbytes=layout.nbytes,
            )
        )
        return True

    def _swap(self) -> tuple[Layout, tuple[Any, ...]] | None:
        """The interval's layout and accumulator, replaced by a fresh one; ``None`` if nothing was logged."""
        with self._lock:
            calls, self._calls = self._calls, 0
            if not calls or not self._layout.specs:
                return None
            taken = self._layout, self._acc
            self._acc = _fresh_like(self._layout, self._acc)
            return taken

    @property
    def steps_since_take(self) -> int:
        """Calls since the last [`take_metrics`][jaxtrack.ingraph.TrackedFunction.take_metrics] (counted on the host, no sync)."""
        return self._calls

    @property
    def metric_specs(self) -> tuple[MetricSpec, ...]:
        """The metrics the accumulator holds so far (known after the first call)."""
        return self._layout.specs

    def lower(self, *args: Any, **kwargs: Any) -> Any:
        """``jax.jit(...).lower`` of the compiled step, accumulator included (its first argument)."""
        with self._lock:
            return self._with_room(self._jitted_for(self._dynamic_arity(len(args))).lower, *args, **kwargs)

    def _with_room(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``call(accumulator, *args, **kwargs)``, growing the accumulator first if tracing finds new metrics."""
        while True:
            if self._layout.specs and self._acc is self._layout.initial_on_host:
                self._acc = _fresh_for(self._layout, (*args, *kwargs.values()))
            try:
                return call(self._acc, *args, **kwargs)
            except _NewMetrics as new:
                self._grow(new.specs)

    def __get__(self, instance: Any, owner: Any = None) -> Any:
        # Like jax.jit's functions: a method decorated with jaxtrack.jit binds its instance.
        return self if instance is None else types.MethodType(self, instance)

    def _dynamic_arity(self, arity: int) -> int:
        """How many of ``arity`` positional arguments are not static (keys the per-arity shardings)."""
        if not self._per_arity:
            return arity
        cached = self._dynamic_arities.get(arity)
        if cached is not None:
            return cached
        static = self._jit_kwargs.get("static_argnums", ())
        static = {static} if isinstance(static, int) else set(static or ())
        static = {n % arity for n in static if -arity <= n < arity}
        names = self._jit_kwargs.get("static_argnames", ())
        names = {names} if isinstance(names, str) else set(names or ())
        if self._signature is not None:
            params = list(self._signature.parameters.values())[:arity]
            static |= {i for i, p in enumerate(params) if p.name in names}
        self._dynamic_arities[arity] = arity - len(static)
        return arity - len(static)

    def _jitted_for(self, arity: int) -> Any:
        if not self._per_arity:
            return self._jitted[None]
        jitted = self._jitted.get(arity)
        if jitted is None:
            kwargs = _inner_jit_kwargs(self._jit_kwargs, arity, self._signature)
            jitted = self._jitted[arity] = self._transform(self._inner, **kwargs)
        return jitted

    def _make_inner(self) -> Callable[..., Any]:
        fun = self.fun

        def inner(acc: tuple[Any, ...], *args: Any, **kwargs: Any) -> tuple[Any, tuple[Any, ...]]:
            layout = self._layout
            with open_frame() as frame:
                out = fun(*args, **kwargs)
            new = []
            for name, entry in frame.entries.items():
                spec = layout.index.get(name)
                if spec is None:
                    new.append(MetricSpec(name, entry.reduction, entry.shape, entry.dtype))
                elif spec.reduction != entry.reduction or spec.shape != entry.shape:
                    raise ValueError(
                        f"metric {name!r} was logged with reduce={spec.reduction!r}, shape {spec.shape} before "
                        f"and now with reduce={entry.reduction!r}, shape {entry.shape}"
                    )
            if new:
                raise _NewMetrics(new)
            states = layout.unpack(acc)
            for name, entry in frame.entries.items():
                states[name] = entry.fold(states[name])
            return out, layout.pack(states)

        inner.__name__ = getattr(fun, "__name__", "tracked")
        inner.__qualname__ = getattr(fun, "__qualname__", inner.__name__)
        if self._signature is not None:
            # jax.jit maps static_argnames to positions through the signature; the accumulator comes first.
            acc_param = inspect.Parameter("_jaxtrack_accumulator", inspect.Parameter.POSITIONAL_ONLY)
            parameters = [acc_param, *self._signature.parameters.values()]
            inner.__signature__ = self._signature.replace(parameters=parameters)  # type: ignore[attr-defined]
        return inner

    def _grow(self, specs: list[MetricSpec]) -> None:
        old = self._layout
        self._layout = Layout(old.specs + tuple(specs))
        if self._calls == 0:
            self._acc = self._layout.initial_on_host
        else:
            self._acc = self._grow_acc(old, self._layout, self._acc)

    @staticmethod
    def _grow_impl(old: Layout, new: Layout, acc: tuple[Any, ...]) -> tuple[Any, ...]:
        states = old.unpack(acc)
        for spec in new.specs:
            if spec.name not in states:
                states[spec.name] = spec.initial()
        return new.pack(states)

    @staticmethod
    def _finalize_impl(layout: Layout, acc: tuple[Any, ...]) -> tuple[Any, ...]:
        states = layout.unpack(acc)
        flat = flatten({spec.name: spec.reduction.result(states[spec.name]) for spec in layout.specs})
        layout.result_keys = list(flat)  # recorded while tracing, in logging order
        return tuple(flat.values())

    def __repr__(self) -> str:
        return f"jaxtrack.jit({getattr(self.fun, '__qualname__', self.fun)!r})"


def _fresh_like(layout: Layout, taken: tuple[Any, ...]) -> tuple[Any, ...]:
    """A fresh accumulator with the shardings of the one just taken, so the next call runs the same program."""
    if not all(getattr(array, "committed", False) for array in taken):
        return layout.initial_on_host  # the step's arguments are not committed: neither need the accumulator be
    return layout.initial_on(tuple(array.sharding for array in taken))


def _fresh_for(layout: Layout, arguments: Sequence[Any]) -> tuple[Any, ...]:
    """A fresh accumulator, committed to the devices of the step's committed arguments, if it has any.

    A step whose arguments are committed (``device_put``, sharded, restored
    by Orbax) returns a committed accumulator, and JAX compiles a call with a
    committed accumulator apart from one with a host one: the step would be
    compiled twice, and again after every restore. Placed as the step will
    return it (replicated over the arguments' devices), it is compiled once;
    a metric whose accumulator the compiler shards (a per-example value of a
    sharded batch) costs one more compile, after which
    ``_fresh_like`` keeps its sharding.
    """
    # Looked at whenever an interval starts with a host accumulator, so kept cheap: the first JAX
    # array of each argument speaks for it (a tree's arrays are placed alike: params, a batch).
    for argument in arguments:
        for leaf in jax.tree_util.tree_leaves(argument):
            committed = getattr(leaf, "committed", None)  # None: not a JAX array
            if committed is None:
                continue
            if not committed:
                break
            sharding = leaf.sharding
            if isinstance(sharding, NamedSharding):
                target: jax.sharding.Sharding = NamedSharding(sharding.mesh, PartitionSpec())
            elif len(sharding.device_set) == 1:
                target = SingleDeviceSharding(next(iter(sharding.device_set)))
            else:
                return layout.initial_on_host  # another kind of sharding: JAX places it (a second compile at worst)
            return layout.initial_on((target,) * len(layout.initial_on_host))
    return layout.initial_on_host


def _signature(fun: Any) -> inspect.Signature | None:
    try:
        return inspect.signature(fun)
    except (TypeError, ValueError):
        return None


def _shift(argnums: Any) -> Any:
    if argnums is None:
        return None
    if isinstance(argnums, int):
        argnums = (argnums,)
    return tuple(n + 1 if n >= 0 else n for n in argnums)


def _inner_jit_kwargs(
    jit_kwargs: dict[str, Any], arity: int | None, signature: inspect.Signature | None
) -> dict[str, Any]:
    """``jax.jit`` options for the inner function, whose first argument is the accumulator."""
    kwargs = dict(jit_kwargs)
    if "static_argnums" in kwargs:
        kwargs["static_argnums"] = _shift(kwargs["static_argnums"])
    donate = _shift(kwargs.get("donate_argnums")) or ()
    if "donate_argnames" in kwargs and "donate_argnums" not in kwargs and signature is not None:
        # Once donate_argnums is set (for the accumulator), jax.jit no longer
        # maps donate_argnames to positions: map them here.
        names = kwargs["donate_argnames"]
        names = (names,) if isinstance(names, str) else tuple(names)
        positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        donate = tuple(
            i + 1 for i, p in enumerate(signature.parameters.values()) if p.name in names and p.kind in positional
        )
    kwargs["donate_argnums"] = (0, *donate)
    in_shardings = kwargs.pop("in_shardings", _UNSET)
    if in_shardings is not _UNSET:
        # None lets JAX place the accumulator (replicated where the step is sharded).
        if isinstance(in_shardings, (tuple, list)):
            kwargs["in_shardings"] = (None, *in_shardings)
        else:
            kwargs["in_shardings"] = (None, *([in_shardings] * (arity or 0)))
    out_shardings = kwargs.pop("out_shardings", _UNSET)
    if out_shardings is not _UNSET:
        kwargs["out_shardings"] = (out_shardings, None)
    return kwargs


def jit(
    fun: Callable[..., Any] | None = None, /, *, transform: Callable[..., Any] = jax.jit, **jax_jit_kwargs: Any
) -> Any:
    """``jax.jit`` that also collects the function's ``jit_log`` metrics on the device.

    Use it as ``jaxtrack.jit(f, ...)``, ``@jaxtrack.jit`` or
    ``@jaxtrack.jit(donate_argnums=0, ...)``. The result is called like
    ``jax.jit(f, ...)`` (every ``jax.jit`` option keeps its meaning) and
    returns what ``f`` returns; its [`take_metrics`][jaxtrack.ingraph.TrackedFunction.take_metrics]
    and [`report`][jaxtrack.ingraph.TrackedFunction.report] give the reduced metrics.
    ``transform`` compiles with another jit of the same form, e.g.
    ``flax.nnx.jit`` for steps that take NNX modules.

    Examples:
        >>> import jax.numpy as jnp, jaxtrack as jt
        >>> @jt.jit(donate_argnums=0)
        ... def step(params, x):
        ...     loss = jnp.mean((params * x) ** 2)
        ...     jt.jit_log({"loss": loss})
        ...     return params - 0.1 * x
        >>> params = jnp.ones(3)
        >>> for _ in range(4):
        ...     params = step(params, jnp.ones(3))
        >>> sorted(step.take_metrics())
        ['loss']
    """
    if fun is None:
        return functools.partial(TrackedFunction, jit_kwargs=jax_jit_kwargs, transform=transform)
    return TrackedFunction(fun, jax_jit_kwargs, transform)


__all__ = [
    "TrackedFunction",
    "jit",
]
