"""What a metric value can be, how it is checked at the call, and how backends receive it.

Every backend accepts the same values: Python numbers and bools, NumPy and JAX
scalars and arrays, rectangular lists of numbers, strings,
[`Histogram`][jaxtrack.values.Histogram], [`Image`][jaxtrack.values.Image], and nested dicts of
those (flattened to ``"a/b"`` keys). An array with one or more dimensions is
logged as a histogram of its elements (``DEFAULT_NUM_BINS`` buckets, 64,
unless the backend says otherwise); a 0-d array is a scalar.

- ``types``: [`Histogram`][jaxtrack.values.Histogram] and [`Image`][jaxtrack.values.Image];
- ``checks``: [`check_values`][jaxtrack.values.check_values], what the caller's thread refuses;
- ``convert``: [`flatten`][jaxtrack.values.flatten], [`to_host`][jaxtrack.values.to_host], [`to_plain`][jaxtrack.values.to_plain];
- ``normalize``: [`NormalizedValues`][jaxtrack.values.NormalizedValues], what a backend's ``log`` receives.

Examples:
    >>> from jaxtrack.values import NormalizedValues, check_values
    >>> flat = check_values({"train": {"loss": 0.5}, "note": "warm-up"})
    >>> dict(NormalizedValues(flat).for_bins())
    {'train/loss': 0.5, 'note': 'warm-up'}
"""

from jaxtrack.values.checks import check_step, check_step_argument, check_value, check_values
from jaxtrack.values.convert import HOST_SCALAR_TYPES, flatten, holds_jax_array, to_host, to_plain
from jaxtrack.values.normalize import HostValue, NormalizedValues, normalize
from jaxtrack.values.text import check_text
from jaxtrack.values.types import DEFAULT_NUM_BINS, Histogram, Image

__all__ = [
    "DEFAULT_NUM_BINS",
    "HOST_SCALAR_TYPES",
    "Histogram",
    "HostValue",
    "Image",
    "NormalizedValues",
    "check_step",
    "check_step_argument",
    "check_text",
    "check_value",
    "check_values",
    "flatten",
    "holds_jax_array",
    "normalize",
    "to_host",
    "to_plain",
]
