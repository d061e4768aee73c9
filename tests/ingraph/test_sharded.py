"""A data-parallel step over 8 (host) devices reports the global values, not one shard's.

Everything runs in one subprocess started with 8 host devices
(``--xla_force_host_platform_device_count=8``); it prints what it saw as JSON
and the checks against NumPy are made here.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

TESTS = pathlib.Path(__file__).resolve().parents[1]

SCRIPT = r"""
import json, logging, sys
sys.path.insert(0, TESTS)

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import jaxtrack as jt
from jaxtrack.ingraph import HistogramReduction
from support.recording import RecordingTracker

assert jax.device_count() == 8, jax.devices()
mesh = Mesh(np.array(jax.devices()), ("data",))
data = NamedSharding(mesh, P("data"))
replicated = NamedSharding(mesh, P())

STEPS, BATCH, FEATURES, HIDDEN = 4, 32, 6, 5
rng = np.random.default_rng(0)
xs = rng.normal(size=(STEPS, BATCH, FEATURES)).astype(np.float32)
ys = rng.normal(size=(STEPS, BATCH)).astype(np.float32)
initial = {
    "w1": (rng.normal(size=(FEATURES, HIDDEN)) / 2).astype(np.float32),
    "w2": (rng.normal(size=(HIDDEN,)) / 2).astype(np.float32),
}


def loss_fn(params, x, y):
    pred = jnp.tanh(x @ params["w1"]) @ params["w2"]
    per_example = (pred - y) ** 2
    return per_example.mean(), (pred, per_example)


def body(params, x, y):
    (loss, (pred, per_example)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, x, y)
    jt.jit_log({"loss": loss})
    jt.jit_log({"worst": per_example.max(), "per_example": per_example}, reduce="max")
    jt.jit_log({"pred": pred}, reduce="stats")
    jt.jit_log({"pred_hist": pred}, reduce=HistogramReduction(num_bins=10, range=(-2.0, 2.0)))
    jt.jit_log({"pred_auto": pred}, reduce=HistogramReduction(num_bins=7))
    new = jax.tree_util.tree_map(lambda p, g: p - 0.1 * g, params, grads)
    return new, (loss, pred, per_example)


def plain(value):
    if isinstance(value, jt.Histogram):
        return {f: np.asarray(getattr(value, f), np.float64).tolist() for f in
                ("bucket_limits", "bucket_counts", "min", "max", "num", "sum", "sum_squares")}
    return np.asarray(value, np.float64).tolist()


def train(step, params):
    outputs = []
    for s in range(STEPS):
        params, out = step(params, jax.device_put(xs[s], data), jax.device_put(ys[s], data))
        outputs.append(out)
    return params, outputs


variants = {
    "no_shardings": lambda: jt.jit(body),
    "explicit": lambda: jt.jit(
        body, in_shardings=(replicated, data, data), out_shardings=(replicated, (replicated, data, data))
    ),
    "explicit_donated": lambda: jt.jit(
        body, in_shardings=(replicated, data, data), out_shardings=(replicated, (replicated, data, data)),
        donate_argnums=0,
    ),
}
class CompileCounter(logging.Handler):
    # Counts JAX's "Compiling body ..." log lines: how often the step itself was compiled.
    count = 0

    def emit(self, record):
        message = record.getMessage()
        if message.startswith("Compiling") and "body" in message:
            CompileCounter.count += 1


jax.config.update("jax_log_compiles", True)
logging.getLogger("jax").addHandler(CompileCounter())
logging.getLogger("jax").propagate = False

result = {"variants": {}}
for name, make in variants.items():
    CompileCounter.count = 0
    step = make()
    params = jax.device_put(initial, replicated)
    params, outputs = train(step, params)
    taken = step.take_metrics()
    x_sharding = outputs[0][1].sharding
    tracker = RecordingTracker()
    compiles_first = CompileCounter.count
    params, outputs_again = train(step, jax.device_put(initial, replicated))
    step.report(STEPS, tracker=tracker)
    assert jt.flush(timeout=120)
    result["variants"][name] = {
        "outputs": [[plain(v) for v in out] for out in outputs],
        "outputs_again": [[plain(v) for v in out] for out in outputs_again],
        "pred_sharded_over": len(x_sharding.device_set),
        "taken": {k: plain(v) for k, v in taken.items()},
        "reported": [[s, {k: plain(v) for k, v in m.items()}] for s, m, _ in tracker.logs],
        "compiles_first": compiles_first,
        "compiles_again": CompileCounter.count - compiles_first,
    }

# A step logging only scalars over a sharded batch: its accumulator is replicated, so it is placed as the step
# returns it before the first call, and the step is compiled once (not once for a host accumulator, then again).
@jt.jit
def scalar_body(params, x, y):
    (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, x, y)
    jt.jit_log({"loss": loss})
    return jax.tree_util.tree_map(lambda p, g: p - 0.1 * g, params, grads)


CompileCounter.count = 0
params = jax.device_put(initial, replicated)
with jt.current_tracker(jt.NoopTracker()):
    for interval in range(3):
        for s in range(STEPS):
            params = scalar_body(params, jax.device_put(xs[s], data), jax.device_put(ys[s], data))
        scalar_body.report(STEPS * (interval + 1))
    assert jt.flush(timeout=120)
result["scalar_compiles"] = CompileCounter.count

# The fallback: jit_log in a plain jax.jit over the same mesh logs once per step, globally.
@jax.jit
def fallback_step(params, x, y, i):
    loss, (pred, per_example) = loss_fn(params, x, y)
    jt.jit_log({"loss": loss, "worst": per_example.max(), "pred_sum": pred.sum()}, step=i)
    return loss, pred, per_example

tracker = RecordingTracker()
outputs = []
params = jax.device_put(initial, replicated)
with jt.current_tracker(tracker):
    for s in range(STEPS):
        outputs.append(fallback_step(params, jax.device_put(xs[s], data), jax.device_put(ys[s], data), s))
    jax.block_until_ready(outputs)
    assert jt.flush(timeout=120)
result["fallback"] = {
    "outputs": [[plain(v) for v in out] for out in outputs],
    "pred_sharded_over": len(outputs[0][1].sharding.device_set),
    "reported": [[s, {k: plain(v) for k, v in m.items()}] for s, m, _ in tracker.logs],
}
print("RESULT " + json.dumps(result))
"""


def _histogram_reference(preds, num_bins, value_range=None):
    every = np.concatenate([p.reshape(-1) for p in preds])
    if value_range is None:
        value_range = (preds[0].min(), preds[0].max())
    counts, edges = np.histogram(np.clip(every, *value_range), bins=num_bins, range=value_range)
    return {
        "bucket_limits": edges,
        "bucket_counts": counts,
        "min": every.min(),
        "max": every.max(),
        "num": every.size,
        "sum": every.sum(),
        "sum_squares": np.square(every).sum(),
    }


def _check_metrics(metrics, outputs, where):
    losses = np.array([out[0] for out in outputs])
    preds = [np.array(out[1]) for out in outputs]
    per_example = np.array([out[2] for out in outputs])
    every_pred = np.concatenate(preds)
    assert list(metrics)[:3] == ["loss", "worst", "per_example"], where
    np.testing.assert_allclose(metrics["loss"], losses.mean(), rtol=1e-5, err_msg=where)
    np.testing.assert_allclose(metrics["worst"], per_example.max(), rtol=1e-6, err_msg=where)
    np.testing.assert_allclose(metrics["per_example"], per_example.max(axis=0), rtol=1e-6, err_msg=where)
    assert np.shape(metrics["per_example"]) == (32,), where
    for key, value in (
        ("mean", every_pred.mean()),
        ("std", every_pred.std()),
        ("min", every_pred.min()),
        ("max", every_pred.max()),
    ):
        np.testing.assert_allclose(metrics[f"pred/{key}"], value, rtol=1e-5, atol=1e-6, err_msg=f"{where} pred/{key}")
    for key, reference in (
        ("pred_hist", _histogram_reference(preds, 10, (-2.0, 2.0))),
        ("pred_auto", _histogram_reference(preds, 7)),
    ):
        histogram = metrics[key]
        np.testing.assert_array_equal(histogram["bucket_counts"], reference["bucket_counts"], err_msg=f"{where} {key}")
        for field in ("bucket_limits", "min", "max", "num", "sum", "sum_squares"):
            np.testing.assert_allclose(
                histogram[field], reference[field], rtol=1e-5, atol=1e-5, err_msg=f"{where} {key}.{field}"
            )


@pytest.fixture(scope="module")
def sharded_run():
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
    env["JAX_PLATFORMS"] = "cpu"
    completed = subprocess.run(
        [sys.executable, "-c", f"TESTS = {str(TESTS)!r}\n" + SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
    assert completed.returncode == 0 and lines, completed.stdout[-3000:] + completed.stderr[-5000:]
    return json.loads(lines[-1][len("RESULT ") :])


@pytest.mark.parametrize("variant", ["no_shardings", "explicit", "explicit_donated"])
def test_sharded_step_reports_global_values(sharded_run, variant):
    run = sharded_run["variants"][variant]
    assert run["pred_sharded_over"] == 8  # the batch really was split over the devices
    np.testing.assert_allclose(
        [out[0] for out in run["outputs"]], [out[0] for out in run["outputs_again"]], rtol=1e-6
    )  # both intervals trained the same way
    _check_metrics(run["taken"], run["outputs"], f"{variant} take_metrics")
    [(step, reported)] = run["reported"]
    assert step == 4
    _check_metrics(reported, run["outputs_again"], f"{variant} report")
    # The accumulator of the per-example metric is sharded like the batch, which the step's first call
    # cannot know: a second program at the second step, then no more, however many intervals follow.
    assert run["compiles_first"] <= 2
    assert run["compiles_again"] == 0


def test_a_step_over_a_sharded_batch_is_compiled_once(sharded_run):
    assert sharded_run["scalar_compiles"] == 1


def test_sharded_fallback_logs_once_per_step_with_global_values(sharded_run):
    run = sharded_run["fallback"]
    assert run["pred_sharded_over"] == 8
    assert [step for step, _ in run["reported"]] == [0, 1, 2, 3]
    for (_, metrics), (loss, pred, per_example) in zip(run["reported"], run["outputs"], strict=True):
        assert sorted(metrics) == ["loss", "pred_sum", "worst"]  # and no "step" among them
        np.testing.assert_allclose(metrics["loss"], loss, rtol=1e-6)
        np.testing.assert_allclose(metrics["worst"], np.max(per_example), rtol=1e-6)
        np.testing.assert_allclose(metrics["pred_sum"], np.sum(pred), rtol=1e-5, atol=1e-5)
