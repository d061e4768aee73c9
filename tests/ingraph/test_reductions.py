"""Every reduction against NumPy, over several steps, through both ways out of a ``jaxtrack.jit`` step.

``take_metrics`` finishes the reductions on the device with ``jax.numpy``; ``report`` hands the
raw accumulator to the reporter, which finishes them on the host with NumPy. Both must give what
NumPy computes from the logged values themselves.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxtrack as jt
from jaxtrack.ingraph import HistogramReduction, get_reduction
from support.recording import RecordingTracker

ELEMENTWISE = ("mean", "sum", "min", "max", "last")
DTYPES = ("float32", "int32", "bool", "bfloat16")
STEPS = 5


def _values(dtype: str, shape: tuple[int, ...], *, steps: int = STEPS, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(steps):
        if dtype == "bool":
            value = rng.random(shape) < 0.5
        elif dtype == "int32":
            value = rng.integers(-50, 50, shape)
        else:
            value = rng.normal(size=shape) * 3.0 + 1.0
        out.append(np.asarray(value).astype(jnp.dtype(dtype)))
    return out


def _histogram_reference(values, num_bins, value_range=None):
    """What a histogram of every finite element of every step holds, computed with NumPy."""
    steps = [np.asarray(v, np.float64).reshape(-1) for v in values]
    finite = [s[np.isfinite(s)] for s in steps]
    if value_range is None:
        first = next(f for f in finite if f.size)  # the buckets span the first step's finite values
        low, high = first.min(), first.max()
        if low == high:
            low, high = low - 0.5, high + 0.5
    else:
        low, high = value_range
    every = np.concatenate(finite)
    # Values outside the buckets are counted in the edge buckets.
    counts, edges = np.histogram(np.clip(every, low, high), bins=num_bins, range=(low, high))
    return {
        "bucket_limits": edges,
        "bucket_counts": counts,
        "num": every.size,
        "sum": every.sum(),
        "sum_squares": np.square(every).sum(),
        "min": every.min(),
        "max": every.max(),
    }


def _check_histogram(got, want, *, rtol=1e-5):
    assert isinstance(got, jt.Histogram)
    np.testing.assert_allclose(np.asarray(got.bucket_limits, np.float64), want["bucket_limits"], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(got.bucket_counts), want["bucket_counts"])
    assert int(np.asarray(got.num)) == want["num"]
    np.testing.assert_allclose(float(np.asarray(got.sum)), want["sum"], rtol=rtol, atol=1e-4)
    np.testing.assert_allclose(float(np.asarray(got.sum_squares)), want["sum_squares"], rtol=rtol, atol=1e-4)
    assert float(np.asarray(got.min)) == pytest.approx(want["min"])
    assert float(np.asarray(got.max)) == pytest.approx(want["max"])


def _reference(values: list[np.ndarray]) -> dict[str, np.ndarray]:
    stack = np.stack(values)
    as_float = stack.astype(np.float64)
    integral = stack.dtype.kind in "biu"
    return {
        "mean": as_float.mean(axis=0),
        "sum": stack.astype(np.int64).sum(axis=0) if integral else as_float.sum(axis=0),
        "min": as_float.min(axis=0),
        "max": as_float.max(axis=0),
        "last": as_float[-1],
        "stats/mean": as_float.mean(),
        "stats/std": as_float.std(),
        "stats/min": as_float.min(),
        "stats/max": as_float.max(),
    }


def _all_reductions_step():
    @jt.jit
    def step(value):
        for reduce in ELEMENTWISE:
            jt.jit_log({reduce: value}, reduce=reduce)
        jt.jit_log({"stats": value}, reduce="stats")
        jt.jit_log({"histogram": value}, reduce="histogram")
        jt.jit_log({"hist8": value}, reduce=HistogramReduction(num_bins=8, range=(-2.0, 3.0)))
        return value

    return step


def _device_and_host_results(step, values):
    """The interval's metrics from take_metrics, then from report (same values, a second interval)."""
    for value in values:
        step(jnp.asarray(value))
    on_device = step.take_metrics()
    tracker = RecordingTracker()
    for value in values:
        step(jnp.asarray(value))
    assert step.report(7, tracker=tracker)
    assert jt.flush(timeout=60)
    [(logged_step, on_host, commit)] = tracker.logs
    assert (logged_step, commit) == (7, None)
    return on_device, on_host


@pytest.mark.parametrize("shape", [(), (2, 3)], ids=["scalar", "array"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_every_reduction_matches_numpy_through_take_and_report(dtype, shape):
    values = _values(dtype, shape)
    want = _reference(values)
    on_device, on_host = _device_and_host_results(_all_reductions_step(), values)
    expected_keys = [*ELEMENTWISE, "stats/mean", "stats/std", "stats/min", "stats/max", "histogram", "hist8"]
    assert sorted(on_device) == sorted(on_host) == sorted(expected_keys)  # the order: see test_tracked
    # Summarising reductions in float32 (bfloat16 values are summed in float32 too).
    rtol = 1e-5
    for results, where in ((on_device, "device"), (on_host, "host")):
        for key in ELEMENTWISE:
            got = np.asarray(results[key])
            assert got.shape == shape, (where, key)  # element-wise: the value's shape
            np.testing.assert_allclose(
                got.astype(np.float64), want[key], rtol=rtol, atol=1e-5, err_msg=f"{where} {key}"
            )
        for key in ("stats/mean", "stats/std", "stats/min", "stats/max"):
            got = np.asarray(results[key])
            assert got.shape == (), (where, key)  # a summary of every element of every step
            np.testing.assert_allclose(float(got), want[key], rtol=rtol, atol=1e-5, err_msg=f"{where} {key}")
        _check_histogram(results["histogram"], _histogram_reference(values, 64))
        _check_histogram(results["hist8"], _histogram_reference(values, 8, (-2.0, 3.0)))
    # Integers (and counts of bools) are summed exactly, as integers.
    if dtype in ("int32", "bool"):
        for results in (on_device, on_host):
            assert np.asarray(results["sum"]).dtype.kind == "i"
            np.testing.assert_array_equal(np.asarray(results["sum"]), want["sum"])
    # "last" keeps the logged dtype on the device; the report path hands 0-d
    # results over as Python scalars of the same kind (int, float, bool).
    assert np.asarray(on_device["last"]).dtype == jnp.dtype(dtype)
    host_last = on_host["last"]
    if np.ndim(host_last) == 0:
        expected_type = {"b": bool, "i": int, "f": float}[
            np.dtype(jnp.dtype(dtype)).kind if dtype != "bfloat16" else "f"
        ]
        assert type(host_last) is expected_type
    else:
        assert np.asarray(host_last).dtype == jnp.dtype(dtype)


def test_take_metrics_gives_device_arrays_and_report_gives_host_values():
    values = _values("float32", (4,))
    on_device, on_host = _device_and_host_results(_all_reductions_step(), values)
    for key, value in on_device.items():
        leaves = jax.tree_util.tree_leaves(value)
        assert leaves and all(isinstance(leaf, jax.Array) for leaf in leaves), key
    for key, value in on_host.items():
        leaves = jax.tree_util.tree_leaves(value)
        assert leaves and not any(isinstance(leaf, jax.Array) for leaf in leaves), key


def test_nan_propagates_through_min_and_max_and_histogram_leaves_non_finite_out():
    values = [
        np.array([1.0, 2.0, 3.0], np.float32),
        np.array([0.5, np.nan, 4.0], np.float32),
        np.array([2.0, 1.0, np.inf], np.float32),
        np.array([-np.inf, 5.0, 0.0], np.float32),
    ]

    @jt.jit
    def step(value):
        jt.jit_log({"min": value}, reduce="min")
        jt.jit_log({"max": value}, reduce="max")
        jt.jit_log({"hist": value}, reduce=HistogramReduction(num_bins=4, range=(0.0, 4.0)))
        jt.jit_log({"auto": value}, reduce=HistogramReduction(num_bins=4))
        return value

    on_device, on_host = _device_and_host_results(step, values)
    for results in (on_device, on_host):
        np.testing.assert_array_equal(np.asarray(results["min"]), [-np.inf, np.nan, 0.0])
        np.testing.assert_array_equal(np.asarray(results["max"]), [2.0, np.nan, np.inf])
        for key, value_range in (("hist", (0.0, 4.0)), ("auto", None)):
            hist = results[key]
            _check_histogram(hist, _histogram_reference(values, 4, value_range))
            assert int(np.asarray(hist.num)) == 9  # 12 elements, 3 non-finite
            assert np.isfinite(np.asarray(hist.sum)) and np.isfinite(np.asarray(hist.max))


def test_histogram_first_step_without_finite_values_does_not_fix_the_range():
    values = [
        np.array([np.nan, np.inf], np.float32),
        np.array([0.0, 8.0], np.float32),
        np.array([1.5, 7.5], np.float32),
    ]

    @jt.jit
    def step(value):
        jt.jit_log({"h": value}, reduce=HistogramReduction(num_bins=8))
        return value

    on_device, on_host = _device_and_host_results(step, values)
    for results in (on_device, on_host):
        _check_histogram(results["h"], _histogram_reference(values, 8))
        np.testing.assert_array_equal(np.asarray(results["h"].bucket_counts), [1, 1, 0, 0, 0, 0, 0, 2])


def test_histogram_of_a_constant_first_step_gets_a_unit_wide_range():
    values = [np.full((3,), 2.0, np.float32), np.array([2.2, 1.9, 2.4], np.float32)]

    @jt.jit
    def step(value):
        jt.jit_log({"h": value}, reduce=HistogramReduction(num_bins=5))
        return value

    for results in _device_and_host_results(step, values):
        np.testing.assert_allclose(np.asarray(results["h"].bucket_limits), [1.5, 1.7, 1.9, 2.1, 2.3, 2.5], rtol=1e-6)
        _check_histogram(results["h"], _histogram_reference(values, 5))


def test_small_integer_sums_do_not_overflow():
    # NumPy (and jnp.sum) add small integers in the default integer type; an interval
    # sum of uint8/int8 values must not wrap around at 256.
    values = [np.uint8(200), np.uint8(200), np.uint8(200)]

    @jt.jit
    def step(value):
        jt.jit_log({"count": value}, reduce="sum")
        jt.jit_log({"signed": (value // 2).astype(jnp.int8)}, reduce="sum")
        return value

    on_device, on_host = _device_and_host_results(step, values)
    for results in (on_device, on_host):
        assert int(np.asarray(results["count"])) == 600
        assert int(np.asarray(results["signed"])) == 300


def test_an_interval_without_the_metric_reports_the_empty_value():
    @jt.jit(static_argnums=1)
    def step(x, log):
        if log:
            jt.jit_log({"m": x})
            jt.jit_log({"lo": x}, reduce="min")
        jt.jit_log({"always": x}, reduce="sum")
        return x

    step(jnp.float32(1.0), True)
    step.take_metrics()
    step(jnp.float32(2.0), False)
    taken = step.take_metrics()
    assert np.isnan(float(taken["m"]))
    assert float(taken["lo"]) == np.inf
    assert float(taken["always"]) == 2.0


# -- the Reduction protocol itself ------------------------------------------------------------


def _fold(reduction, values, shape, dtype):
    state = reduction.init(shape, dtype)
    for value in values:
        state = reduction.update(state, jnp.asarray(value))
    return state


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(
    "reduce",
    ["mean", "sum", "min", "max", "last", "stats", HistogramReduction(num_bins=6, range=(-4.0, 6.0))],
    ids=str,
)
def test_merge_agrees_with_sequential_update(reduce, seed):
    rng = np.random.default_rng(seed)
    reduction = get_reduction(reduce)
    count = int(rng.integers(1, 7))
    values = [(rng.normal(size=(3,)) * 3 + 1).astype(np.float32) for _ in range(count)]
    whole = reduction.result(_fold(reduction, values, (3,), jnp.float32))
    for split in sorted({0, count, int(rng.integers(0, count + 1))}):
        a = _fold(reduction, values[:split], (3,), jnp.float32)
        b = _fold(reduction, values[split:], (3,), jnp.float32)
        merged = reduction.result(reduction.merge(a, b))
        jax.tree_util.tree_map(
            lambda x, y, split=split: np.testing.assert_allclose(
                np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-5, err_msg=f"split at {split}"
            ),
            merged,
            whole,
        )


@pytest.mark.parametrize("seed", range(3))
def test_merge_of_histograms_without_range_keeps_every_count_and_the_moments(seed):
    rng = np.random.default_rng(seed)
    reduction = HistogramReduction(num_bins=5)
    values = [(rng.normal(size=(4,)) * 2).astype(np.float32) for _ in range(5)]
    whole = reduction.result(_fold(reduction, values, (4,), jnp.float32))
    for split in (0, 2, 5):
        merged = reduction.result(
            reduction.merge(
                _fold(reduction, values[:split], (4,), "float32"), _fold(reduction, values[split:], (4,), "float32")
            )
        )
        assert int(merged.bucket_counts.sum()) == int(whole.bucket_counts.sum()) == 20
        np.testing.assert_allclose(np.asarray(merged.bucket_limits), np.asarray(whole.bucket_limits), rtol=1e-6)
        for field in ("num", "sum", "sum_squares", "min", "max"):
            np.testing.assert_allclose(np.asarray(getattr(merged, field)), np.asarray(getattr(whole, field)), rtol=1e-5)


def test_last_merge_with_an_empty_right_side_keeps_the_left_value():
    last = get_reduction("last")
    a = _fold(last, [np.float32(3.0), np.float32(4.0)], (), jnp.float32)
    empty = last.init((), jnp.float32)
    assert float(last.result(last.merge(a, empty))) == 4.0
    assert float(last.result(last.merge(empty, a))) == 4.0


def test_get_reduction_names_and_errors():
    assert get_reduction("max") == jt.ingraph.Max()
    custom = HistogramReduction(num_bins=3, range=(0.0, 1.0))
    assert get_reduction(custom) is custom
    assert HistogramReduction(num_bins=3, range=(0.0, 1.0)) == custom
    assert HistogramReduction(num_bins=4, range=(0.0, 1.0)) != custom
    with pytest.raises(ValueError, match=r"'median'.*'mean'.*'histogram'"):
        get_reduction("median")
    with pytest.raises(ValueError, match="num_bins"):
        HistogramReduction(num_bins=0)
    with pytest.raises(ValueError, match="range"):
        HistogramReduction(range=(1.0, 1.0))
