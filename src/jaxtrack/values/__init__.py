"""What a metric value can be, how it is checked at the call, and how backends receive it.

Every backend accepts the same values: Python numbers and bools, NumPy and JAX
scalars and arrays, rectangular lists of numbers, strings,
[`Histogram`][jaxtrack.values.Histogram], [`Image`][jaxtrack.values.Image], and nested dicts of
those (flattened to ``"a/b"`` keys). An array with one or more dimensions is
logged as a histogram of its elements (``DEFAULT_NUM_BINS`` buckets, 64,
unless the backend's ``histogram_bins`` says otherwise; ``None`` hands it the
NumPy array); a 0-d array is a scalar.

Backends never see the values as logged: jaxtrack fetches them to the host
and normalises each report once, so a backend's ``log`` receives a flat
mapping of ``HostValue`` (a Python number or bool, text, a ``Histogram`` or an
``Image`` with ``uint8`` pixels). ``HOST_SCALAR_TYPES`` are the exact types
(Python and NumPy numbers and bools) taken as host scalars without further
checks: the fast path that keeps a report of plain numbers cheap.

- ``types``: [`Histogram`][jaxtrack.values.Histogram] and [`Image`][jaxtrack.values.Image];
- ``checks``: [`check_values`][jaxtrack.values.check_values], what the caller's thread refuses;
- ``convert``: [`flatten`][jaxtrack.values.flatten], [`to_host`][jaxtrack.values.to_host], [`to_plain`][jaxtrack.values.to_plain];
- ``normalize``: [`NormalizedValues`][jaxtrack.values.NormalizedValues], what a backend's ``log`` receives;
- ``text``: [`check_text`][jaxtrack.values.check_text], text every backend can write.

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
