"""Metric values: flattening, histograms, images, normalisation."""

from __future__ import annotations

import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

import jaxtrack as jt
from jaxtrack.values import normalize, to_host


def test_flatten_nests_with_slash_and_keeps_order():
    assert jt.flatten({"a": {"b": 1, "c": {"d": 2}}, "e": 3}) == {"a/b": 1, "a/c/d": 2, "e": 3}
    assert jt.flatten({"layer": {0: 1.0}}) == {"layer/0": 1.0}


@pytest.mark.parametrize(
    ("tree", "error", "match"),
    [
        ({"a/b": 1, "a": {"b": 2}}, ValueError, "'a/b'"),
        ({(1, 2): 1}, TypeError, r"\(1, 2\)"),
        ({"": 1}, ValueError, "empty"),
        ([1, 2], TypeError, "mapping"),
    ],
)
def test_flatten_rejects_ambiguous_input(tree, error, match):
    with pytest.raises(error, match=match):
        jt.flatten(tree)


def test_histogram_from_array_matches_numpy():
    values = np.random.default_rng(0).normal(size=1000)
    hist = jt.Histogram.from_array(values, num_bins=20)
    counts, edges = np.histogram(values, bins=20)
    np.testing.assert_array_equal(hist.bucket_counts, counts)
    np.testing.assert_allclose(hist.bucket_limits, edges)
    assert hist.num == 1000
    assert hist.mean == pytest.approx(values.mean())
    assert hist.std == pytest.approx(values.std())
    assert (hist.min, hist.max) == (values.min(), values.max())


def test_histogram_leaves_out_non_finite_and_handles_constants():
    hist = jt.Histogram.from_array([1.0, np.nan, np.inf, 1.0], num_bins=4)
    assert hist.num == 2 and hist.bucket_counts.sum() == 2 and hist.mean == 1.0
    empty = jt.Histogram.from_array([np.nan])
    assert empty.num == 0 and np.isnan(empty.mean)
    with pytest.raises(ValueError, match="num_bins"):
        jt.Histogram.from_array([1.0], num_bins=0)


def test_image_checks_shape_and_converts_to_uint8():
    assert jt.Image(np.zeros((4, 5))).to_uint8().shape == (1, 4, 5, 1)
    assert jt.Image(np.zeros((2, 4, 5, 3))).num_images == 2
    pixels = jt.Image(np.array([[0.0, 0.5, 1.0, 2.0]])).to_uint8()
    assert pixels.ravel().tolist() == [0, 128, 255, 255]
    with pytest.raises(ValueError, match="shape"):
        jt.Image(np.zeros(5))
    with pytest.raises(ValueError, match="channels"):
        jt.Image(np.zeros((4, 4, 2)))


def test_normalize_turns_values_into_backend_kinds():
    assert normalize("a", np.float32(0.5)) == 0.5 and isinstance(normalize("a", np.float32(0.5)), float)
    assert normalize("a", np.int64(3)) == 3 and isinstance(normalize("a", np.int64(3)), int)
    assert normalize("a", np.bool_(True)) is True
    assert normalize("a", np.array(2.5)) == 2.5
    assert normalize("a", ml_dtypes.bfloat16(1.5)) == 1.5
    assert normalize("a", 10**30) == 10**30
    assert isinstance(normalize("a", np.arange(4)), jt.Histogram)
    assert isinstance(normalize("a", [1.0, 2.0]), jt.Histogram)
    assert normalize("a", "text") == "text"
    assert normalize("a", None) is None


@pytest.mark.parametrize("bad", [object(), np.array([1 + 2j]), np.array(["x"]), {1, 2}])
def test_normalize_names_the_key_of_a_bad_value(bad):
    with pytest.raises(TypeError, match="'weird/key'"):
        normalize("weird/key", bad)


def test_to_host_fetches_jax_arrays_including_inside_histograms_and_images():
    flat = {"x": jnp.ones(3), "h": jt.Histogram.from_array(np.ones(3)), "i": jt.Image(jnp.zeros((2, 2))), "s": "t"}
    host = to_host(flat)
    assert isinstance(host["x"], np.ndarray)
    assert isinstance(host["i"].pixels, np.ndarray)
    assert host["s"] == "t"
    plain = {"y": 1.0}
    assert to_host(plain) == plain
