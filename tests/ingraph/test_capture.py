"""``jit_log`` outside a ``jaxtrack.jit`` step (host-callback fallback, plain ``log``) and ``capture``."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxtrack as jt
from jaxtrack.ingraph import Max, Mean, Stats
from support.recording import RecordingTracker


def _floats(metrics):
    return {key: float(value) for key, value in metrics.items()}


# -- fallback: a plain jax.jit ----------------------------------------------------------------


def test_jit_log_in_a_plain_jax_jit_logs_every_call_at_the_traced_step():
    traces = []

    @jax.jit
    def step(x, i):
        traces.append(1)
        jt.jit_log({"loss": jnp.mean(x), "per": {"max": jnp.max(x)}}, step=i)
        return x + 1.0

    tracker = RecordingTracker()
    with jt.current_tracker(tracker):
        x = jnp.arange(3.0)
        for i in range(6):
            x = step(x, i)
        assert jt.flush(timeout=60)
    assert len(traces) == 1  # the step is traced once: it is the step value that varies
    assert [s for s, _, _ in tracker.logs] == list(range(6))
    for i, (_, metrics, commit) in enumerate(tracker.logs):
        assert sorted(metrics) == ["loss", "per/max"]  # never a "step" metric
        assert _floats(metrics) == {"loss": 1.0 + i, "per/max": 2.0 + i}
        assert commit is None


def test_fallback_with_a_python_step_and_without_a_step():
    @jax.jit
    def step(x):
        jt.jit_log({"a": x}, step=4)
        jt.jit_log({"b": x * 2})
        return x

    tracker = RecordingTracker()
    with jt.current_tracker(tracker):
        step(jnp.float32(1.5))
        assert jt.flush(timeout=60)
    steps = {next(iter(metrics)): step for step, metrics, _ in tracker.logs}
    assert sorted((list(metrics), commit) for _, metrics, commit in tracker.logs) == [(["a"], None), (["b"], None)]
    assert [m for _, m, _ in sorted(tracker.logs, key=lambda row: list(row[1]))] == [{"a": 1.5}, {"b": 3.0}]
    # Without a step the call takes the step after the last one logged (the callbacks run in either order).
    first = next(iter(tracker.logs[0][1]))
    assert steps == {"a": 4, "b": 5 if first == "a" else 0}


def test_fallback_sends_to_the_tracker_current_when_the_step_runs():
    @jax.jit
    def step(x, i):
        jt.jit_log({"x": x}, step=i)
        return x

    first, second = RecordingTracker("first"), RecordingTracker("second")
    with jt.current_tracker(first):
        step(jnp.float32(1.0), 0).block_until_ready()
    with jt.current_tracker(second):
        step(jnp.float32(2.0), 1).block_until_ready()
    assert [(s, _floats(m)) for s, m, _ in first.logs] == [(0, {"x": 1.0})]
    assert [(s, _floats(m)) for s, m, _ in second.logs] == [(1, {"x": 2.0})]


def test_outside_jit_jit_log_is_log():
    tracker = RecordingTracker()
    with jt.current_tracker(tracker):
        jt.jit_log({"train": {"loss": 0.5}}, step=3)
        jt.jit_log({"eval": jnp.float32(0.25)}, step=4, reduce="max")  # reduce means nothing here
        jt.log({"direct": 1.0}, step=5)
    assert [(s, _floats(m)) for s, m, _ in tracker.logs] == [
        (3, {"train/loss": 0.5}),
        (4, {"eval": 0.25}),
        (5, {"direct": 1.0}),
    ]
    with pytest.raises(TypeError, match="'bad'"):
        jt.jit_log({"bad": object()}, step=0)  # checked like jt.log, on the calling thread


def test_an_eager_capture_block_does_not_take_values_logged_in_a_jitted_call():
    @jax.jit
    def step(x):
        jt.jit_log({"inside": x}, step=0)
        return x

    tracker = RecordingTracker()
    with jt.current_tracker(tracker):
        with jt.capture() as captured:
            step(jnp.float32(2.0)).block_until_ready()
            jt.jit_log({"eager": jnp.float32(1.0)})
        assert jt.flush(timeout=60)
    assert [(s, _floats(m)) for s, m, _ in tracker.logs] == [(0, {"inside": 2.0})]
    assert _floats(captured.metrics) == {"eager": 1.0}


# -- capture ----------------------------------------------------------------------------------


def test_capture_inside_a_plain_jax_jit_returns_the_metrics():
    seen = []

    @jax.jit
    def step(x):
        with jt.capture() as captured:
            jt.jit_log({"loss": x.mean(), "nested": {"peak": x.max()}})
            jt.jit_log({"loss": x.mean() * 3})  # a name logged twice is combined by its reduction
            jt.jit_log({"top": x.max()}, reduce="max")
            jt.jit_log({"top": x.min()}, reduce="max")
            jt.jit_log({"count": x.size}, reduce="sum")
            jt.jit_log({"count": x.size}, reduce="sum")
            jt.jit_log({"spread": x}, reduce="stats")
        seen.append(captured)
        return x * 2, captured.metrics

    out, metrics = step(jnp.arange(4.0))
    [captured] = seen
    np.testing.assert_array_equal(out, [0.0, 2.0, 4.0, 6.0])
    assert set(metrics) == {"loss", "nested/peak", "top", "count", "spread"}
    assert float(metrics["loss"]) == pytest.approx((1.5 + 4.5) / 2)
    assert float(metrics["nested/peak"]) == 3.0
    assert float(metrics["top"]) == 3.0
    assert int(metrics["count"]) == 8
    assert float(metrics["spread"]["mean"]) == 1.5
    assert float(metrics["spread"]["std"]) == pytest.approx(np.std([0.0, 1.0, 2.0, 3.0]))
    assert captured.reductions == {
        "loss": Mean(),
        "nested/peak": Mean(),
        "top": Max(),
        "count": jt.ingraph.Sum(),
        "spread": Stats(),
    }


def test_capture_logs_nothing_to_the_tracker():
    @jax.jit
    def step(x):
        with jt.capture() as captured:
            jt.jit_log({"loss": x}, step=0)
        return captured.metrics

    tracker = RecordingTracker()
    with jt.current_tracker(tracker):
        assert _floats(step(jnp.float32(5.0))) == {"loss": 5.0}
        assert jt.flush(timeout=60)
    assert tracker.logs == []


def test_capture_of_array_values_keeps_their_shape():
    @jax.jit
    def step(x):
        with jt.capture() as captured:
            jt.jit_log({"v": x})
            jt.jit_log({"v": x + 2})
            jt.jit_log({"last": x}, reduce="last")
            jt.jit_log({"last": -x}, reduce="last")
        return captured.metrics

    metrics = step(jnp.arange(3.0))
    np.testing.assert_array_equal(metrics["v"], [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(metrics["last"], [-0.0, -1.0, -2.0])


def test_capture_with_conflicting_reductions_is_an_error_naming_the_metric():
    @jax.jit
    def step(x):
        with jt.capture() as captured:
            jt.jit_log({"loss": x})
            jt.jit_log({"loss": x}, reduce="sum")
        return captured.metrics

    with pytest.raises(ValueError, match="'loss'"):
        step(jnp.float32(1.0))


def test_capture_in_a_transformation_inside_the_block_raises():
    @jax.jit
    def step(xs):
        with jt.capture() as captured:
            jax.vmap(lambda x: jt.jit_log({"x": x}))(xs)
        return captured.metrics

    with pytest.raises(jt.NestedTransformError, match=r"jaxtrack\.scan"):
        step(jnp.ones(3))


def test_jaxtrack_scan_inside_capture():
    @jax.jit
    def step(xs):
        with jt.capture() as captured:

            def body(total, x):
                jt.jit_log({"x": x})
                jt.jit_log({"peak": x}, reduce="max")
                return total + x, None

            total, _ = jt.scan(body, 0.0, xs)
        return total, captured.metrics

    total, metrics = step(jnp.array([1.0, 5.0, 3.0]))
    assert float(total) == 9.0
    assert _floats(metrics) == {"x": 3.0, "peak": 5.0}
