"""What logging costs a JAX training loop: jaxtrack against the usual ways, side by side.

    python bench/bench_logging.py            # or: make bench

One process; for each step size the variants run in turn, round after round
(the order rotating). A variant's score is the median over rounds of its
speed relative to the baseline's in the same round; the baseline is the same
jitted step computing and returning the same metrics, never read. Every
variant writes real TensorBoard files.

Variants:
  naive           float() of every metric and a TensorBoard write, every step, on the training thread
  flax_buffer     keep each step's metric arrays, fetch and write every 100 steps (Flax examples)
  debug_callback  jax.debug.callback in the step, writing every step (Levanter's old jit_log)
  jaxtrack_N      jt.jit + jt.jit_log, report() every N steps to a CompositeTracker

The variants other than jaxtrack's write where they run, as code without jaxtrack
does: they call the TensorBoard backend's own ``log`` (``write_now``), not its
front door, which would queue the write for the backend's thread.

"memory" is the growth of live JAX array bytes between two reports (sampled
on the training thread every step, in a separate untimed pass).
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn

import jaxtrack as jt
from jaxtrack.trackers.tensorboard import TensorboardTracker

SIZES = {"medium": (256, 128), "tiny": (32, 32)}  # (width, batch)
INTERVALS = (1, 10, 100)
FLAX_BUFFER_EVERY = 100
TARGETS = {
    ("medium", "jaxtrack_100"): 0.98,
    ("medium", "jaxtrack_10"): 0.98,
    ("medium", "jaxtrack_1"): 0.90,
    ("tiny", "jaxtrack_100"): 0.97,
}


class MLP(nn.Module):
    width: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.relu(nn.Dense(self.width)(x))
        x = nn.relu(nn.Dense(self.width)(x))
        return nn.Dense(10)(x)


class Setup:
    """A model, an optimiser and one batch; ``core`` is the step every variant shares."""

    def __init__(self, width: int, batch: int) -> None:
        self.model = MLP(width)
        self.tx = optax.adam(1e-3)
        rng = np.random.default_rng(0)
        self.x = jnp.asarray(rng.normal(size=(batch, 64)), jnp.float32)
        self.y = jnp.asarray(rng.integers(0, 10, size=batch), jnp.int32)

    def fresh_state(self) -> tuple[Any, Any]:
        params = self.model.init(jax.random.PRNGKey(0), self.x)
        return params, self.tx.init(params)

    def core(self, params: Any, opt: Any, x: jax.Array, y: jax.Array) -> tuple[Any, Any, dict[str, jax.Array]]:
        def loss_fn(p: Any) -> tuple[jax.Array, jax.Array]:
            logits = self.model.apply(p, x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), logits

        (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt = self.tx.update(grads, opt, params)
        params = optax.apply_updates(params, updates)
        metrics = {
            "loss": loss,
            "accuracy": (logits.argmax(-1) == y).mean(),
            "grad_norm": optax.tree.norm(grads),
            "logit_max": logits.max(),
        }
        return params, opt, metrics


Variant = Callable[[int, Callable[[], None] | None], None]


def write_now(tracker: jt.Tracker) -> Callable[..., None]:
    """``tracker``'s own ``log``, made on the calling thread (behind its front door, which would queue it)."""
    log = type(tracker).log
    return functools.partial(getattr(log, "__wrapped__", log), tracker)


def make_variants(setup: Setup, logdir: str, trackers: list[jt.Tracker]) -> dict[str, Variant]:
    """Each variant: ``run(num_steps, sample)`` trains from its own state; ``sample`` is called every step if given.

    The trackers the variants write to are added to ``trackers``, to be finished afterwards.
    """
    core = setup.core
    x, y = setup.x, setup.y
    variants: dict[str, Variant] = {}

    def stateful(
        body: Callable[[Any, Any, int], tuple[Any, Any]], finish: Callable[[], None] = lambda: None
    ) -> Variant:
        state = list(setup.fresh_state())

        def run(num_steps: int, sample: Callable[[], None] | None = None) -> None:
            params, opt = state
            for step in range(num_steps):
                params, opt = body(params, opt, step)
                if sample is not None:
                    sample()
            jax.block_until_ready(params)
            finish()
            state[:] = [params, opt]

        return run

    baseline = jax.jit(core, donate_argnums=(0, 1))

    def baseline_body(params: Any, opt: Any, step: int) -> tuple[Any, Any]:
        params, opt, _ = baseline(params, opt, x, y)
        return params, opt

    variants["baseline"] = stateful(baseline_body)

    naive_tb = TensorboardTracker(os.path.join(logdir, "naive"))
    trackers.append(naive_tb)
    naive_write = write_now(naive_tb)

    def naive_body(params: Any, opt: Any, step: int) -> tuple[Any, Any]:
        params, opt, metrics = baseline(params, opt, x, y)
        naive_write({k: float(v) for k, v in metrics.items()}, step=step)
        return params, opt

    variants["naive"] = stateful(naive_body)

    buffer_tb = TensorboardTracker(os.path.join(logdir, "flax_buffer"))
    trackers.append(buffer_tb)
    buffer_write = write_now(buffer_tb)
    buffered: list[dict[str, jax.Array]] = []

    def buffer_body(params: Any, opt: Any, step: int) -> tuple[Any, Any]:
        params, opt, metrics = baseline(params, opt, x, y)
        buffered.append(metrics)
        if (step + 1) % FLAX_BUFFER_EVERY == 0:
            fetched = jax.device_get(buffered)
            buffer_write({k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}, step=step)
            buffered.clear()
        return params, opt

    variants["flax_buffer"] = stateful(buffer_body)

    callback_tb = TensorboardTracker(os.path.join(logdir, "debug_callback"))
    trackers.append(callback_tb)
    callback_write = write_now(callback_tb)

    def write_from_callback(step: Any, metrics: dict[str, Any]) -> None:
        callback_write({k: float(v) for k, v in metrics.items()}, step=int(step))

    @jax.jit
    def callback_step(params: Any, opt: Any, x: jax.Array, y: jax.Array, step: jax.Array) -> tuple[Any, Any]:
        params, opt, metrics = core(params, opt, x, y)
        jax.debug.callback(write_from_callback, step, metrics)
        return params, opt

    def callback_body(params: Any, opt: Any, step: int) -> tuple[Any, Any]:
        return callback_step(params, opt, x, y, step)

    variants["debug_callback"] = stateful(callback_body, finish=jax.effects_barrier)

    for interval in INTERVALS:
        tracker = jt.CompositeTracker([TensorboardTracker(os.path.join(logdir, f"jaxtrack_{interval}"))])
        trackers.append(tracker)
        tracked = jt.jit(lambda params, opt, x, y: _log_and_return(core(params, opt, x, y)), donate_argnums=(0, 1))

        def tracked_body(
            params: Any, opt: Any, step: int, tracked: Any = tracked, every: int = interval, tracker: Any = tracker
        ) -> tuple[Any, Any]:
            params, opt = tracked(params, opt, x, y)
            if (step + 1) % every == 0:
                tracked.report(step, tracker=tracker)
            return params, opt

        variants[f"jaxtrack_{interval}"] = stateful(tracked_body, finish=jt.flush)
    return variants


def _log_and_return(result: tuple[Any, Any, dict[str, jax.Array]]) -> tuple[Any, Any]:
    params, opt, metrics = result
    jt.jit_log(metrics)
    return params, opt


def live_bytes() -> int:
    return sum(a.nbytes for a in jax.live_arrays())


def memory_growth(run: Variant, steps: int) -> int:
    """The largest rise of live array bytes above the level at the first sampled step."""
    samples: list[int] = []
    run(steps, lambda: samples.append(live_bytes()))
    return max(samples) - samples[0]


def bench_size(name: str, rounds: int, steps: int, logdir: str) -> list[dict[str, Any]]:
    setup = Setup(*SIZES[name])
    trackers: list[jt.Tracker] = []
    variants = make_variants(setup, os.path.join(logdir, name), trackers)
    for run in variants.values():  # compile and warm every variant
        run(20, None)
    times: dict[str, list[float]] = {v: [] for v in variants}
    order = list(variants)
    for r in range(rounds):
        for variant in order[r % len(order) :] + order[: r % len(order)]:
            gc.collect()  # garbage left by the previous variant is not this one's cost
            start = time.perf_counter()
            variants[variant](steps, None)
            times[variant].append(time.perf_counter() - start)
        print(f"  {name}: round {r + 1}/{rounds} done", file=sys.stderr, flush=True)
    rows = []
    for variant in order:
        median = statistics.median(times[variant])
        # Each round's ratio is taken against that round's baseline, so drift
        # of the machine's speed between rounds cancels out.
        ratios = [base / time_ for base, time_ in zip(times["baseline"], times[variant], strict=True)]
        rows.append(
            {
                "size": name,
                "variant": variant,
                "steps_per_sec": steps / median,
                "ratio": statistics.median(ratios),
                "memory_growth_bytes": memory_growth(variants[variant], 2 * FLAX_BUFFER_EVERY),
                "target": TARGETS.get((name, variant)),
            }
        )
    jt.flush()
    for tracker in trackers:  # the next step size starts from a clean slate
        tracker.finish()
    naive_ratio = next(r["ratio"] for r in rows if r["variant"] == "naive")
    for row in rows:
        if name == "tiny" and row["variant"].startswith("jaxtrack_") and row["target"] is None:
            row["target"] = naive_ratio  # tiny: never below the naive variant
    return rows


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    device = jax.devices()[0]
    return (
        f"{cpu}, {os.cpu_count()} cores; JAX {jax.__version__} on {device.platform} ({device.device_kind}); "
        f"Python {platform.python_version()}"
    )


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| step | variant | steps/s | vs baseline | target | memory growth between reports |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        target = row["target"]
        verdict = "" if target is None else f"≥ {target:.2f} {'✓' if row['ratio'] >= target else '✗'}"
        lines.append(
            f"| {row['size']} | {row['variant']} | {row['steps_per_sec']:,.0f} | {row['ratio']:.2f} | {verdict} | "
            f"{row['memory_growth_bytes']:,} B |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--medium-steps", type=int, default=400)
    parser.add_argument("--tiny-steps", type=int, default=2000)
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args(argv)

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="jaxtrack-bench-") as logdir:
        for size in args.sizes:
            steps = args.medium_steps if size == "medium" else args.tiny_steps
            rows.extend(bench_size(size, args.rounds, steps, logdir))
    print(f"Machine: {machine()}\n")
    print(table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine(), "rows": rows}, f, indent=2)
    missed = [f"{r['size']}/{r['variant']}" for r in rows if r["target"] is not None and r["ratio"] < r["target"]]
    if missed:
        print(f"\nBelow target: {', '.join(missed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
