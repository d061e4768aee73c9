"""``jaxtrack.jit``: the jitted step, its accumulator, ``take_metrics`` and ``report``."""

from __future__ import annotations

import functools
import logging
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxtrack as jt
from support.recording import RecordingTracker


def _floats(metrics):
    return {key: float(value) for key, value in metrics.items()}


@pytest.fixture
def tracker():
    """A current tracker, for the plain ``jax.jit`` references (their jit_log falls back to it)."""
    recording = RecordingTracker()
    with jt.current_tracker(recording):
        yield recording


# -- take_metrics and report ------------------------------------------------------------------


def test_take_metrics_is_empty_before_any_call_and_right_after_a_take():
    @jt.jit
    def step(x):
        jt.jit_log({"x": x})
        return x + 1

    assert step.take_metrics() == {}
    assert step.steps_since_take == 0
    step(jnp.float32(1.0))
    step(jnp.float32(2.0))
    assert step.steps_since_take == 2
    assert _floats(step.take_metrics()) == {"x": 1.5}
    assert step.steps_since_take == 0
    assert step.take_metrics() == {}
    assert step.report(3, tracker=RecordingTracker()) is False  # nothing to report


def test_each_take_starts_a_new_interval():
    @jt.jit
    def step(x):
        jt.jit_log({"mean": x})
        jt.jit_log({"sum": x}, reduce="sum")
        jt.jit_log({"min": x}, reduce="min")
        jt.jit_log({"last": x}, reduce="last")
        return x

    for value in (1.0, 2.0, 6.0):
        step(jnp.float32(value))
    assert _floats(step.take_metrics()) == {"mean": 3.0, "sum": 9.0, "min": 1.0, "last": 6.0}
    for value in (10.0, 20.0):
        step(jnp.float32(value))
    assert _floats(step.take_metrics()) == {"mean": 15.0, "sum": 30.0, "min": 10.0, "last": 20.0}
    tracker = RecordingTracker()
    step(jnp.float32(-4.0))
    assert step.report(5, tracker=tracker)
    step(jnp.float32(7.0))
    assert step.report(6, tracker=tracker)
    assert jt.flush(timeout=60)
    assert [(s, _floats(m)) for s, m, _ in tracker.logs] == [
        (5, {"mean": -4.0, "sum": -4.0, "min": -4.0, "last": -4.0}),
        (6, {"mean": 7.0, "sum": 7.0, "min": 7.0, "last": 7.0}),
    ]
    assert step.take_metrics() == {}  # report took the interval


def test_keys_are_flattened_with_slashes_in_logging_order():
    @jt.jit
    def step(x):
        jt.jit_log({"zeta": x, "train": {"loss": x * 2, "acc": {"top1": x * 3}}})
        jt.jit_log({"alpha": x}, reduce="max")
        jt.jit_log({"mid": x}, reduce="sum")
        return x

    step(jnp.float32(1.0))
    expected = {"zeta": 1.0, "train/loss": 2.0, "train/acc/top1": 3.0, "alpha": 1.0, "mid": 1.0}
    taken = step.take_metrics()
    assert list(taken) == list(expected)
    assert _floats(taken) == expected
    tracker = RecordingTracker()
    step(jnp.float32(1.0))
    step.report(0, tracker=tracker, prefix="train_step/")
    assert jt.flush(timeout=60)
    [(_, reported, _)] = tracker.logs
    assert list(reported) == [f"train_step/{key}" for key in expected]


def test_stats_gives_mean_std_min_max_in_that_order_both_ways():
    @jt.jit
    def step(x):
        jt.jit_log({"w": x}, reduce="stats")
        return x

    values = [np.array([1.0, 2.0], np.float32), np.array([3.0, 10.0], np.float32)]
    every = np.concatenate(values).astype(np.float64)
    expected = {"w/mean": every.mean(), "w/std": every.std(), "w/min": 1.0, "w/max": 10.0}
    for value in values:
        step(jnp.asarray(value))
    taken = step.take_metrics()
    tracker = RecordingTracker()
    for value in values:
        step(jnp.asarray(value))
    step.report(1, tracker=tracker)
    assert jt.flush(timeout=60)
    reported = tracker.logs[0][1]
    for result in (reported, taken):
        assert _floats(result) == pytest.approx(expected, rel=1e-6)
    assert list(reported) == list(expected)
    assert list(taken) == list(expected)  # the documented order, as report gives it


def test_take_metrics_returns_device_arrays():
    @jt.jit
    def step(x):
        jt.jit_log({"loss": x.mean(), "per_example": x}, reduce="max")
        jt.jit_log({"hist": x}, reduce="histogram")
        return x

    step(jnp.arange(4.0))
    taken = step.take_metrics()
    assert isinstance(taken["loss"], jax.Array) and isinstance(taken["per_example"], jax.Array)
    assert taken["per_example"].shape == (4,)
    assert isinstance(taken["hist"], jt.Histogram)
    assert all(isinstance(leaf, jax.Array) for leaf in jax.tree_util.tree_leaves(taken["hist"]))


def test_report_goes_to_the_current_tracker_by_default():
    @jt.jit
    def step(x):
        jt.jit_log({"x": x})
        return x

    tracker = RecordingTracker()
    with jt.current_tracker(tracker):
        step(jnp.float32(2.0))
        assert step.report(9)
    assert [(s, _floats(m)) for s, m, _ in tracker.logs] == [(9, {"x": 2.0})]


def test_take_metrics_and_report_do_not_wait_for_the_device():
    # A step that keeps the device busy for a while; the training loop must run ahead of it.
    @jt.jit
    def step(w, h, iterations):
        h = jax.lax.fori_loop(0, iterations, lambda i, h: jnp.tanh(h @ w), h)
        jt.jit_log({"loss": jnp.mean(h * h)})
        return h

    w = jnp.asarray(np.random.default_rng(0).normal(size=(256, 256)) / 16.0, jnp.float32)
    h0 = jnp.ones((256, 256), jnp.float32)
    step(w, h0, jnp.int32(1)).block_until_ready()  # compiled outside the measured loop
    step.take_metrics()["loss"].block_until_ready()

    iterations = 20
    for _attempt in range(5):
        tracker = RecordingTracker()
        outputs, h = [], h0
        for i in range(10):
            h = step(w, h, jnp.int32(iterations))
            outputs.append(h)
            if i % 2 == 1 and i < 9:
                assert step.report(i, tracker=tracker)
        taken = step.take_metrics()
        loop_outran_device = not h.is_ready() and not taken["loss"].is_ready()
        jax.block_until_ready((h, taken))
        assert jt.flush(timeout=120)
        losses = [float(jnp.mean(o * o)) for o in outputs]
        assert [s for s, _, _ in tracker.logs] == [1, 3, 5, 7]
        for (_, metrics, _), start in zip(tracker.logs, (0, 2, 4, 6), strict=True):
            assert float(metrics["loss"]) == pytest.approx(np.mean(losses[start : start + 2]), rel=1e-5)
        assert float(taken["loss"]) == pytest.approx(np.mean(losses[8:10]), rel=1e-5)
        if loop_outran_device:
            return
        iterations *= 4  # the device kept up with the loop: give it more work
    pytest.fail("every report/take_metrics loop finished only after the device did: something waits for it")


# -- jax.jit options keep their meaning -------------------------------------------------------


def _aliased_inputs(lowered) -> int:
    return lowered.as_text().count("tf.aliasing_output")


def test_donate_argnums_reaches_jax_jit_and_the_accumulator_is_donated():
    def update(params, grads):
        jt.jit_log({"norm": jnp.sum(params * params)})
        return params - 0.1 * grads

    plain = jt.jit(update)
    donating = jt.jit(update, donate_argnums=0)
    params, grads = jnp.ones(8), jnp.ones(8)
    new = donating(params, grads)
    assert params.is_deleted()
    assert not grads.is_deleted()
    params = jnp.ones(8)
    plain(params, grads)
    assert not params.is_deleted()
    # The accumulator is donated as well: it is aliased to an output even when no argument is.
    aliased_plain = _aliased_inputs(plain.lower(new, grads))
    assert aliased_plain >= 1
    assert _aliased_inputs(donating.lower(new, grads)) == aliased_plain + 1


def test_donate_argnames_donates_an_argument_passed_by_position(tracker):
    def update(params, grads):
        jt.jit_log({"norm": jnp.sum(params * params)})
        return params - 0.1 * grads

    reference = jnp.ones(8)
    jax.jit(update, donate_argnames="params")(reference, jnp.ones(8))
    assert reference.is_deleted()  # what jax.jit does
    step = jt.jit(update, donate_argnames="params")
    by_keyword = jnp.ones(8)
    step(params=by_keyword, grads=jnp.ones(8))
    assert by_keyword.is_deleted()
    by_position = jnp.ones(8)
    step(by_position, jnp.ones(8))
    assert by_position.is_deleted()


def _scaled(x, scale, *, offset=0.0):
    """Scales, then offsets."""
    if scale > 1:  # Python control flow: scale must be static
        jt.jit_log({"big": x.sum()})
    jt.jit_log({"x": x.sum()})
    return x * scale + offset


@pytest.mark.parametrize(
    "options",
    [{"static_argnums": 1}, {"static_argnames": "scale"}, {"static_argnums": (1,), "static_argnames": ("scale",)}],
    ids=["argnums", "argnames", "both"],
)
def test_static_arguments_positional_and_keyword(options, tracker):
    step = jt.jit(_scaled, **options)
    reference = jax.jit(_scaled, **options)
    x = jnp.arange(3.0)
    for call in (
        lambda f: f(x, 2),
        lambda f: f(x, scale=3),
        lambda f: f(x, 1, offset=1.0),
        lambda f: f(x, scale=2, offset=0.5),
    ):
        np.testing.assert_array_equal(call(step), call(reference))
    # x.sum() == 3 at every call; "big" only at the three calls with scale > 1.
    assert _floats(step.take_metrics()) == {"big": 3.0, "x": 3.0}


def test_static_argnames_keyword_only():
    step = jt.jit(_scaled, static_argnames=("scale", "offset"))
    np.testing.assert_array_equal(step(jnp.ones(2), 3, offset=2.0), jnp.full(2, 5.0))
    np.testing.assert_array_equal(step(jnp.ones(2), scale=1, offset=-1.0), jnp.zeros(2))
    assert _floats(step.take_metrics()) == {"big": 2.0, "x": 2.0}


def test_shardings_on_one_device(tracker):
    device = jax.devices()[0]
    sharding = jax.sharding.SingleDeviceSharding(device)

    def f(x, y):
        jt.jit_log({"dot": x @ y})
        return {"sum": x + y, "prod": x * y}

    x, y = jnp.arange(3.0), jnp.ones(3)
    expected = jax.jit(f, in_shardings=(sharding, sharding), out_shardings=sharding)(x, y)
    for step in (
        jt.jit(f, in_shardings=(sharding, sharding), out_shardings=sharding),
        jt.jit(f, in_shardings=sharding, out_shardings=sharding),
        jt.jit(f, in_shardings=[sharding, None]),
    ):
        for _ in range(2):
            out = step(x, y)
        assert out.keys() == expected.keys()
        for key in out:
            np.testing.assert_array_equal(out[key], expected[key])
            assert out[key].sharding.device_set == {device}
        assert _floats(step.take_metrics()) == {"dot": 3.0}


def test_one_in_sharding_for_all_arguments_with_a_static_argument(tracker):
    # jax.jit takes one sharding for every (non-static) argument; so must jaxtrack.jit.
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])

    def f(x, scale):
        jt.jit_log({"x": x.sum()})
        return x * scale

    expected = jax.jit(f, in_shardings=sharding, static_argnums=1)(jnp.ones(2), 3)
    step = jt.jit(f, in_shardings=sharding, static_argnums=1)
    np.testing.assert_array_equal(step(jnp.ones(2), 3), expected)
    assert _floats(step.take_metrics()) == {"x": 2.0}


def test_decorator_forms_and_wrapping():
    @jt.jit
    def bare(x):
        """Bare docstring."""
        jt.jit_log({"x": x})
        return x + 1

    @jt.jit(static_argnums=1)
    def configured(x, n):
        """Configured docstring."""
        jt.jit_log({"x": x})
        return x * n

    def plain(x):
        """Plain docstring."""
        jt.jit_log({"x": x})
        return x - 1

    called = jt.jit(plain, donate_argnums=0)
    for function, name, doc in (
        (bare, "bare", "Bare docstring."),
        (configured, "configured", "Configured docstring."),
        (called, "plain", "Plain docstring."),
    ):
        assert isinstance(function, jt.TrackedFunction)
        assert function.__name__ == name
        assert function.__doc__ == doc
        assert function.__qualname__.endswith(name)
        assert name in repr(function)
    assert called.__wrapped__ is plain
    assert float(bare(jnp.float32(1.0))) == 2.0
    assert float(configured(jnp.float32(2.0), 3)) == 6.0
    assert float(called(jnp.float32(2.0))) == 1.0
    with pytest.raises(TypeError, match="function"):
        jt.jit(3)


def test_lower_works_before_the_first_call():
    @jt.jit
    def step(x):
        jt.jit_log({"x": x.sum()})
        return x * 2

    compiled = step.lower(jnp.ones(3)).compile()  # ahead-of-time compilation, as with jax.jit
    assert compiled is not None
    np.testing.assert_array_equal(step(jnp.ones(3)), jnp.full(3, 2.0))
    assert _floats(step.take_metrics()) == {"x": 3.0}


def test_outputs_are_identical_to_jax_jit(tracker):
    def f(params, batch, *, scale=1.0):
        logits = batch["x"] @ params["w"] + params["b"]
        loss = jnp.mean((logits - batch["y"]) ** 2)
        jt.jit_log({"loss": loss, "logits": logits}, reduce="stats")
        return {"loss": loss * scale, "logits": logits}, (logits.argmax(-1), jnp.int32(3))

    rng = np.random.default_rng(1)
    params = {"w": jnp.asarray(rng.normal(size=(5, 3)), jnp.float32), "b": jnp.zeros(3)}
    batch = {"x": jnp.asarray(rng.normal(size=(4, 5)), jnp.float32), "y": jnp.ones((4, 3))}
    ours, theirs = jt.jit(f)(params, batch, scale=2.0), jax.jit(f)(params, batch, scale=2.0)
    assert jax.tree_util.tree_structure(ours) == jax.tree_util.tree_structure(theirs)
    for a, b in zip(jax.tree_util.tree_leaves(ours), jax.tree_util.tree_leaves(theirs), strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)


# -- the accumulator grows; conflicting metrics are errors --------------------------------------


def test_metrics_appearing_later_grow_the_accumulator_and_keep_values():
    @jt.jit(static_argnames="extra")
    def step(x, extra=False):
        jt.jit_log({"a": x})
        jt.jit_log({"lo": x}, reduce="min")
        if extra:
            jt.jit_log({"b": {"c": x * 10}}, reduce="sum")
            jt.jit_log({"h": x}, reduce="stats")
        return x

    for value, extra in ((1.0, False), (2.0, False), (3.0, True), (4.0, False), (5.0, True)):
        step(jnp.float32(value), extra=extra)
    assert [spec.name for spec in step.metric_specs] == ["a", "lo", "b/c", "h"]
    assert _floats(step.take_metrics()) == {
        "a": 3.0,
        "lo": 1.0,
        "b/c": 80.0,
        "h/mean": 4.0,
        "h/std": 1.0,
        "h/min": 3.0,
        "h/max": 5.0,
    }
    step(jnp.float32(7.0), extra=True)
    step(jnp.float32(9.0))
    taken = _floats(step.take_metrics())
    assert {key: taken[key] for key in ("a", "lo", "b/c", "h/mean")} == {
        "a": 8.0,
        "lo": 7.0,
        "b/c": 70.0,
        "h/mean": 7.0,
    }


def test_a_metric_appearing_right_after_a_take_and_in_a_report():
    @jt.jit(static_argnums=1)
    def step(x, variant):
        jt.jit_log({"a": x})
        if variant >= 1:
            jt.jit_log({"b": x}, reduce="max")
        if variant >= 2:
            jt.jit_log({"c": x}, reduce="last")
        return x

    step(jnp.float32(1.0), 0)
    assert _floats(step.take_metrics()) == {"a": 1.0}
    step(jnp.float32(2.0), 1)  # grows with an empty interval
    step(jnp.float32(4.0), 0)
    step(jnp.float32(3.0), 2)  # grows with values in the interval
    tracker = RecordingTracker()
    step.report(4, tracker=tracker)
    assert jt.flush(timeout=60)
    assert [(s, _floats(m)) for s, m, _ in tracker.logs] == [(4, {"a": 3.0, "b": 3.0, "c": 3.0})]


def test_one_name_with_two_reductions_or_shapes_is_an_error_naming_it():
    @jt.jit
    def twice_in_one_step(x):
        jt.jit_log({"train": {"loss": x}})
        jt.jit_log({"train/loss": x}, reduce="max")
        return x

    with pytest.raises(ValueError, match="'train/loss'"):
        twice_in_one_step(jnp.float32(1.0))

    @jt.jit
    def two_shapes_in_one_step(x):
        jt.jit_log({"v": x})
        jt.jit_log({"v": x[:2]})
        return x

    with pytest.raises(ValueError, match="'v'"):
        two_shapes_in_one_step(jnp.ones(3))

    @jt.jit(static_argnums=1)
    def variants(x, variant):
        if variant == "max":
            jt.jit_log({"loss": x.sum()}, reduce="max")
        elif variant == "vector":
            jt.jit_log({"loss": x})
        else:
            jt.jit_log({"loss": x.sum()})
        return x

    variants(jnp.ones(3), "mean")
    variants(jnp.ones(3) * 3, "mean")
    with pytest.raises(ValueError, match=r"'loss'.*reduce=Mean.*reduce=Max"):
        variants(jnp.ones(3), "max")
    with pytest.raises(ValueError, match=r"'loss'.*shape \(\).*shape \(3,\)"):
        variants(jnp.ones(3), "vector")
    assert _floats(variants.take_metrics()) == {"loss": 6.0}  # the failed calls changed nothing


# -- composition ------------------------------------------------------------------------------


def test_a_tracked_function_called_inside_another_logs_into_the_outer_one():
    @jt.jit
    def inner(x):
        jt.jit_log({"inner": {"x": x}})
        jt.jit_log({"peak": x}, reduce="max")
        return x * 2

    @jt.jit
    def outer(x):
        jt.jit_log({"outer": x})
        return inner(x) + inner(x + 1)

    assert float(outer(jnp.float32(1.0))) == 2.0 + 4.0
    assert float(outer(jnp.float32(3.0))) == 6.0 + 8.0
    assert _floats(outer.take_metrics()) == {"outer": 2.0, "inner/x": 2.5, "peak": 4.0}
    assert inner.take_metrics() == {}  # inlined: its own accumulator was never touched
    inner(jnp.float32(5.0))
    assert _floats(inner.take_metrics()) == {"inner/x": 5.0, "peak": 5.0}


def test_a_step_called_from_another_thread_accumulates_the_same_way():
    traced = []

    @jt.jit
    def step(x):
        traced.append(1)
        jt.jit_log({"x": x})
        return x + 1

    results = {}

    def train():
        x = jnp.float32(0.0)
        for _ in range(4):
            x = step(x)
        results["x"] = float(x)
        results["metrics"] = _floats(step.take_metrics())

    worker = threading.Thread(target=train)
    worker.start()
    worker.join(timeout=120)
    assert results == {"x": 4.0, "metrics": {"x": 1.5}}
    assert len(traced) <= 2  # traced (once to find the metrics, once to compile), not run eagerly


def test_partial_and_methods_are_accepted():
    class Model:
        def __init__(self, scale):
            self.scale = scale

        def apply(self, x):
            jt.jit_log({"x": x})
            return x * self.scale

    step = jt.jit(Model(3.0).apply)
    assert float(step(jnp.float32(2.0))) == 6.0
    shifted = jt.jit(functools.partial(_scaled, scale=2, offset=1.0))
    np.testing.assert_array_equal(shifted(jnp.ones(2)), jnp.full(2, 3.0))
    assert _floats(shifted.take_metrics()) == {"big": 2.0, "x": 2.0}


def test_as_a_method_like_jax_jit():
    # jax.jit functions are descriptors: decorating a method with a static self works.
    class Trainer:
        def __init__(self, scale):
            self.scale = scale

        @functools.partial(jax.jit, static_argnums=0)
        def reference(self, x):
            return x * self.scale

        @functools.partial(jt.jit, static_argnums=0)
        def step(self, x):
            jt.jit_log({"x": x})
            return x * self.scale

    trainer = Trainer(3.0)
    assert float(trainer.reference(jnp.float32(2.0))) == 6.0
    assert float(trainer.step(jnp.float32(2.0))) == 6.0
    assert float(trainer.step(jnp.float32(4.0))) == 12.0
    assert _floats(Trainer.step.take_metrics()) == {"x": 3.0}


def test_constants_and_python_numbers_can_be_logged():
    @jt.jit
    def step(x, lr):
        jt.jit_log({"lr": lr, "const": 0.5, "count": 1, "flag": True})
        jt.jit_log({"total": 1}, reduce="sum")
        return x

    for lr in (0.1, 0.3):
        step(jnp.float32(0.0), lr)
    taken = step.take_metrics()
    assert _floats(taken) == pytest.approx({"lr": 0.2, "const": 0.5, "count": 1.0, "flag": 1.0, "total": 2.0})
    assert np.issubdtype(taken["total"].dtype, np.integer)


# -- memory: O(1) in the steps of an interval ---------------------------------------------------


def test_accumulator_and_live_memory_do_not_grow_with_the_steps_of_an_interval():
    @jt.jit(donate_argnums=0)
    def step(x):
        jt.jit_log({"mean": x.mean(), "hist": x}, reduce="mean")
        jt.jit_log({"dist": x}, reduce="histogram")
        jt.jit_log({"spread": x}, reduce="stats")
        return x + 1.0

    x = step(jnp.zeros((64,)))
    jax.block_until_ready(x)
    accumulator_bytes = sum(a.nbytes for a in step._acc)
    samples = []
    for _ in range(500):
        x = step(x)
        samples.append(sum(a.nbytes for a in jax.live_arrays()))
    jax.block_until_ready(x)
    # The accumulator has the same size after 500 steps, and nothing else piles up.
    assert sum(a.nbytes for a in step._acc) == accumulator_bytes
    assert max(samples[100:]) <= max(samples[:100])
    assert step.steps_since_take == 501


class _CompileCounter(logging.Handler):
    """Counts JAX's "Compiling <name> ..." log lines for one function name."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name, self.count = name, 0

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("Compiling") and f"jit({self.name})" in message:
            self.count += 1


@pytest.fixture
def compiles():
    """``compiles(name)`` starts counting the compilations of the function ``name``."""
    logger, counters = logging.getLogger("jax"), []
    previous = jax.config.jax_log_compiles
    jax.config.update("jax_log_compiles", True)

    def start(name: str) -> _CompileCounter:
        counters.append(_CompileCounter(name))
        logger.addHandler(counters[-1])
        return counters[-1]

    yield start
    for counter in counters:
        logger.removeHandler(counter)
    jax.config.update("jax_log_compiles", previous)


def test_a_step_on_committed_arrays_is_compiled_once_also_after_a_restore(tracker, compiles):
    """Committed arguments (device_put, restored from a checkpoint) make the step return a committed
    accumulator; the fresh one is placed the same way, so no interval needs a program of its own."""
    counter = compiles("committed_step")

    @jt.jit
    def committed_step(w):
        jt.jit_log({"w": w.sum()})
        return w + 1

    w = np.zeros(3, np.float32)  # host arrays, uncommitted: one program
    for step in range(1, 5):
        w = committed_step(w)
        if step % 2 == 0:
            committed_step.report(step)
    assert counter.count == 1
    w = jax.device_put(np.zeros(3, np.float32), jax.devices()[0])  # as a checkpoint restores it: committed
    for step in range(5, 11):
        w = committed_step(w)
        if step % 2 == 0:
            committed_step.report(step)
    assert counter.count == 2  # one program for committed arguments, whatever the intervals
    assert jt.flush(timeout=60)
    assert [step for step, _, _ in tracker.logs] == [2, 4, 6, 8, 10]
    assert _floats(tracker.logs[-1][1]) == {"w": pytest.approx(3 * (4 + 5) / 2)}  # steps 9, 10 see w = 4, 5
