"""Transformations nested in a ``jaxtrack.jit`` step: the clear error, and ``jaxtrack.scan`` / ``fori_loop``."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxtrack as jt
from support.recording import RecordingTracker


def _floats(metrics):
    return {key: float(value) for key, value in metrics.items()}


# -- jit_log inside a nested transformation is an error that says what to do -------------------


def _in_scan(x):
    def body(carry, xi):
        jt.jit_log({"xi": xi})
        return carry + xi, None

    return jax.lax.scan(body, 0.0, x)[0]


def _in_fori_loop(x):
    def body(i, carry):
        jt.jit_log({"i": i})
        return carry + x[i]

    return jax.lax.fori_loop(0, x.shape[0], body, 0.0)


def _in_grad(x):
    def loss(w):
        value = jnp.sum((w * x) ** 2)
        jt.jit_log({"loss": value})
        return value

    return jax.grad(loss)(1.0)


def _in_vmap(x):
    def per_example(xi):
        jt.jit_log({"xi": xi})
        return xi * 2

    return jax.vmap(per_example)(x).sum()


def _in_cond(x):
    def positive(x):
        jt.jit_log({"x": x.sum()})
        return x.sum()

    return jax.lax.cond(x.sum() > 0, positive, lambda x: -x.sum(), x)


def _in_nested_jax_jit(x):
    @jax.jit
    def helper(x):
        jt.jit_log({"x": x.sum()})
        return x.sum()

    return helper(x)


@pytest.mark.parametrize(
    "body", [_in_scan, _in_fori_loop, _in_grad, _in_vmap, _in_cond, _in_nested_jax_jit], ids=lambda f: f.__name__
)
def test_jit_log_in_a_nested_transformation_raises_with_the_way_out(body):
    @jt.jit
    def step(x):
        jt.jit_log({"outer": x.sum()})
        return body(x)

    with pytest.raises(jt.NestedTransformError) as info:
        step(jnp.arange(3.0))
    message = str(info.value)
    assert "jaxtrack.scan" in message
    assert "jaxtrack.fori_loop" in message
    assert "has_aux" in message
    # The step is usable once fixed; nothing half-traced was left behind.
    assert step.take_metrics() == {}


def test_grad_with_has_aux_then_jit_log_is_the_way():
    @jt.jit
    def step(w, x):
        def loss(w):
            value = jnp.mean((w * x - 1.0) ** 2)
            return value, {"loss": value, "pred": jnp.mean(w * x)}

        grads, aux = jax.grad(loss, has_aux=True)(w)
        jt.jit_log(aux)
        return w - 0.1 * grads

    w = jnp.float32(0.0)
    losses = []
    for _ in range(3):
        losses.append(float(jnp.mean((w * jnp.arange(3.0) - 1.0) ** 2)))
        w = step(w, jnp.arange(3.0))
    assert float(step.take_metrics()["loss"]) == pytest.approx(np.mean(losses), rel=1e-6)


# -- jaxtrack.scan and jaxtrack.fori_loop inside a step -----------------------------------------


def test_scan_body_metrics_reduce_over_every_iteration_of_every_call():
    @jt.jit
    def step(xs):
        def body(carry, x):
            jt.jit_log({"x": {"mean": x}})
            jt.jit_log({"x/sum": x}, reduce="sum")
            jt.jit_log({"x/max": x}, reduce="max")
            jt.jit_log({"x/last": x}, reduce="last")
            jt.jit_log({"x/stats": x}, reduce="stats")
            jt.jit_log({"vec": jnp.stack([x, -x])}, reduce="min")
            return carry + x, carry * 2

        total, ys = jt.scan(body, jnp.float32(0.0), xs)
        jt.jit_log({"total": total})
        return total, ys

    calls = [np.array([1.0, 4.0, 2.0], np.float32), np.array([7.0, -3.0, 0.5], np.float32)]
    for xs in calls:
        total, ys = step(jnp.asarray(xs))
        assert float(total) == pytest.approx(xs.sum())
        np.testing.assert_allclose(ys, 2 * np.concatenate([[0.0], np.cumsum(xs)[:-1]]))
    every = np.concatenate(calls).astype(np.float64)
    expected = {
        "x/mean": every.mean(),  # over iterations, not over calls
        "x/sum": every.sum(),
        "x/max": every.max(),
        "x/last": every[-1],
        "x/stats/mean": every.mean(),
        "x/stats/std": every.std(),
        "x/stats/min": every.min(),
        "x/stats/max": every.max(),
        "total": np.mean([c.sum() for c in calls]),
    }
    taken = step.take_metrics()
    np.testing.assert_array_equal(taken.pop("vec"), [every.min(), -every.max()])
    assert _floats(taken) == pytest.approx(expected, rel=1e-6)
    # The same numbers through report.
    tracker = RecordingTracker()
    for xs in calls:
        step(jnp.asarray(xs))
    step.report(2, tracker=tracker)
    assert jt.flush(timeout=60)
    reported = dict(tracker.logs[0][1])
    np.testing.assert_array_equal(reported.pop("vec"), [every.min(), -every.max()])
    assert _floats(reported) == pytest.approx(expected, rel=1e-6)


def test_scan_and_the_step_may_log_the_same_name():
    @jt.jit
    def step(xs):
        jt.jit_log({"value": xs[0] * 100}, reduce="max")

        def body(carry, x):
            jt.jit_log({"value": x}, reduce="max")
            jt.jit_log({"seen": x})
            return carry, None

        jt.scan(body, None, xs)
        jt.jit_log({"seen": xs.sum()})
        return xs

    step(jnp.array([1.0, 2.0, 3.0]))
    step(jnp.array([0.0, 9.0, 3.0]))
    # seen: iterations 1,2,3,0,9,3 and the two sums 6 and 12.
    assert _floats(step.take_metrics()) == pytest.approx({"value": 100.0, "seen": 36.0 / 8})


def test_fori_loop_body_metrics():
    @jt.jit
    def step(x):
        def body(i, carry):
            jt.jit_log({"i": i}, reduce="max")
            jt.jit_log({"i_mean": i})
            jt.jit_log({"carry": carry}, reduce="sum")
            return carry + x

        return jt.fori_loop(2, 6, body, jnp.float32(0.0))

    assert float(step(jnp.float32(1.0))) == 4.0
    assert float(step(jnp.float32(2.0))) == 8.0
    carries = [0, 1, 2, 3, 0, 2, 4, 6]  # x = 1, then x = 2
    assert _floats(step.take_metrics()) == {"i": 5.0, "i_mean": 3.5, "carry": float(sum(carries))}


def test_fori_loop_with_traced_bounds_inside_a_step_raises():
    @jt.jit
    def step(x, n):
        def body(i, carry):
            jt.jit_log({"i": i})
            return carry + 1.0

        return jt.fori_loop(0, n, body, x)

    with pytest.raises(jt.NestedTransformError, match="Python int bounds"):
        step(jnp.float32(0.0), jnp.int32(3))


def test_nested_scans():
    @jt.jit
    def step(matrix):
        def row(carry, values):
            def cell(inner_carry, value):
                jt.jit_log({"cell": value})
                jt.jit_log({"cell_max": value}, reduce="max")
                return inner_carry + value, None

            row_total, _ = jt.scan(cell, jnp.float32(0.0), values)
            jt.jit_log({"row": row_total})
            return carry + row_total, row_total

        return jt.scan(row, jnp.float32(0.0), matrix)

    matrices = [np.arange(6.0, dtype=np.float32).reshape(2, 3), np.array([[10.0, -1.0, 4.0]], np.float32)]
    for matrix in matrices:
        total, rows = step(jnp.asarray(matrix))
        assert float(total) == matrix.sum()
        np.testing.assert_array_equal(rows, matrix.sum(axis=1))
    cells = np.concatenate([m.reshape(-1) for m in matrices])
    rows = np.concatenate([m.sum(axis=1) for m in matrices])
    assert _floats(step.take_metrics()) == pytest.approx(
        {"cell": cells.mean(), "cell_max": cells.max(), "row": rows.mean()}, rel=1e-6
    )


def test_scan_with_length_and_no_xs_and_reverse():
    @jt.jit
    def step(start):
        def body(carry, _):
            jt.jit_log({"carry": carry}, reduce="last")
            jt.jit_log({"all": carry}, reduce="sum")
            return carry * 2, carry

        return jt.scan(body, start, None, length=4, reverse=True)

    carry, ys = step(jnp.float32(1.0))
    assert float(carry) == 16.0
    np.testing.assert_array_equal(ys, [8.0, 4.0, 2.0, 1.0])  # reverse: outputs stacked from the end
    assert _floats(step.take_metrics()) == {"carry": 8.0, "all": 15.0}


def test_gradient_accumulation_over_micro_batches():
    rng = np.random.default_rng(0)
    steps, micro, batch, features = 3, 4, 8, 5
    xs = rng.normal(size=(steps, micro, batch, features)).astype(np.float32)
    true_w = rng.normal(size=(features,)).astype(np.float32)
    ys = xs @ true_w

    def loss_fn(w, x, y):
        return jnp.mean((x @ w - y) ** 2)

    @jt.jit(donate_argnums=0)
    def train_step(w, x, y):
        def accumulate(grad_sum, batch):
            loss, grads = jax.value_and_grad(loss_fn)(w, *batch)
            jt.jit_log({"train": {"loss": loss}})
            jt.jit_log({"train": {"worst_loss": loss}}, reduce="max")
            return grad_sum + grads, None

        grad_sum, _ = jt.scan(accumulate, jnp.zeros_like(w), (x, y))
        grads = grad_sum / x.shape[0]
        jt.jit_log({"grad_norm": jnp.linalg.norm(grads)})
        return w - 0.05 * grads

    # The same training without jaxtrack, for the expected values.
    def reference_step(w, x, y):
        losses, grads = jax.vmap(jax.value_and_grad(loss_fn), in_axes=(None, 0, 0))(w, x, y)
        return w - 0.05 * grads.mean(axis=0), losses, jnp.linalg.norm(grads.mean(axis=0))

    w = jnp.zeros(features)
    reference_w = np.zeros(features, np.float32)
    losses, norms = [], []
    for s in range(steps):
        reference_w, step_losses, norm = reference_step(reference_w, xs[s], ys[s])
        losses.extend(np.asarray(step_losses).tolist())
        norms.append(float(norm))
        w = train_step(w, jnp.asarray(xs[s]), jnp.asarray(ys[s]))
    np.testing.assert_allclose(w, reference_w, rtol=1e-5, atol=1e-6)
    tracker = RecordingTracker()
    train_step.report(steps, tracker=tracker)
    assert jt.flush(timeout=60)
    [(step, metrics, _)] = tracker.logs
    assert step == steps
    assert len(losses) == steps * micro
    assert _floats(metrics) == pytest.approx(
        {"train/loss": np.mean(losses), "train/worst_loss": np.max(losses), "grad_norm": np.mean(norms)}, rel=1e-5
    )


# -- outside a jaxtrack.jit step they are the lax loops -------------------------------------------


def test_outside_a_step_they_behave_as_lax_loops():
    def body(carry, x):
        return carry * 0.5 + x, carry + x

    xs = jnp.arange(5.0)
    expected = jax.lax.scan(body, jnp.float32(1.0), xs)
    for got in (jt.scan(body, jnp.float32(1.0), xs), jax.jit(lambda xs: jt.scan(body, jnp.float32(1.0), xs))(xs)):
        assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(expected)
        for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(expected), strict=True):
            np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(
        jt.scan(body, jnp.float32(1.0), xs, reverse=True)[1], jax.lax.scan(body, jnp.float32(1.0), xs, reverse=True)[1]
    )

    def count(i, total):
        return total + i * i

    assert int(jt.fori_loop(0, 5, count, 0)) == int(jax.lax.fori_loop(0, 5, count, 0)) == 30
    traced_bounds = jax.jit(lambda n: jt.fori_loop(0, n, count, 0))
    assert int(traced_bounds(jnp.int32(4))) == 14  # traced bounds are fine outside a jaxtrack.jit step


def test_a_jaxtrack_scan_without_jit_log_in_a_step_is_a_plain_scan():
    @jt.jit
    def step(xs):
        total, _ = jt.scan(lambda c, x: (c + x, None), 0.0, xs)
        jt.jit_log({"total": total})
        return total

    step(jnp.arange(4.0))
    assert _floats(step.take_metrics()) == {"total": 6.0}
