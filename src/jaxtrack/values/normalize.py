"""Host values as backends write them: Python scalars, text, [`Histogram`][jaxtrack.values.Histogram] and [`Image`][jaxtrack.values.Image].

jaxtrack normalises each report once, on the dispatcher's thread, for every
backend ([`NormalizedValues`][jaxtrack.values.NormalizedValues]): NumPy scalars and 0-d arrays become
Python numbers, an array with one or more dimensions becomes a histogram of
its elements (one per bucket count that some backend asks for, through its
``histogram_bins``; or the NumPy array itself for a backend whose
``histogram_bins`` is ``None``), an image gets ``uint8`` pixels in the layout
it was logged in (``HW``, ``HWC`` or ``NHWC``; ``Image.to_uint8`` gives
``NHWC``), and ``None`` values are left out. A backend's ``log`` therefore
receives a flat mapping of ``HostValue`` s. [`normalize`][jaxtrack.values.normalize]
does the same for one value.
"""

from __future__ import annotations

import dataclasses
import numbers
import types
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from jaxtrack.values.checks import check_value
from jaxtrack.values.convert import HOST_FLOAT_TYPES, HOST_INT_TYPES
from jaxtrack.values.types import DEFAULT_NUM_BINS, Histogram, Image

Scalar = int | float | bool
HostValue = Scalar | str | Histogram | Image
"""What a backend receives for one key: a Python number or bool, text, a histogram or an image."""

_NUMBERS = frozenset({float, int, bool})


def normalize(key: str, value: Any, *, num_bins: int = DEFAULT_NUM_BINS) -> HostValue | None:
    """Turns one host value into a scalar, a string, a [`Histogram`][jaxtrack.values.Histogram], an [`Image`][jaxtrack.values.Image] or ``None``.

    Raises ``TypeError`` naming ``key`` for a value no backend can record.
    An array with one or more dimensions becomes a histogram of
    ``num_bins`` buckets.

    Examples:
        >>> import numpy as np
        >>> normalize("loss", np.float32(0.5)), normalize("note", "ok")
        (0.5, 'ok')
        >>> normalize("weights", np.arange(10.0), num_bins=5).bucket_counts.tolist()
        [2, 2, 2, 2, 2]
    """
    if type(value) in HOST_FLOAT_TYPES:
        return float(value)
    if type(value) in HOST_INT_TYPES:
        return int(value)
    check_value(key, value)
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, Histogram):
        return _host_histogram(value)
    if isinstance(value, Image):
        return _host_image(key, value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    array = np.asarray(value)
    if array.ndim == 0:
        return _item(array)
    return Histogram.from_array(array, num_bins=num_bins)


class NormalizedValues:
    """One report's values normalised once for every backend; [`for_bins`][jaxtrack.values.normalize.NormalizedValues.for_bins] gives a backend its view.

    A value that fails to normalise is left out and kept in ``failed`` as
    ``(key, error)``, so one bad value never costs the others. ``nonfinite``
    counts the NaN/Inf elements of each array value (left out of its
    histogram), for guards; ``nbytes`` is about what the values hold.
    ``text``, if given, rewrites every text value and image caption once for
    all backends, as ``text(key, value)`` (the pipeline passes
    [`redact_logged`][jaxtrack.redaction.redact_logged]);
    numbers never reach it, so they cost nothing more.

    Examples:
        >>> import numpy as np
        >>> values = NormalizedValues({"loss": np.float32(0.5), "w": np.array([1.0, np.nan, 3.0]), "skip": None})
        >>> dict(values.for_bins(2))["loss"], dict(values.for_bins(2))["w"].bucket_counts.tolist()
        (0.5, [1, 1])
        >>> values.nonfinite, sorted(values.for_bins(2))
        ({'w': 1}, ['loss', 'w'])
        >>> dict(NormalizedValues({"loss": 0.5, "note": "warm-up"}, text=lambda key, value: value.upper()).scalars())
        {'loss': 0.5, 'note': 'WARM-UP'}
    """

    __slots__ = ("_arrays", "_by_bins", "_order", "_values", "failed", "nbytes", "nonfinite")

    def __init__(self, flat: Mapping[str, Any], text: Callable[[str, str], str] | None = None) -> None:
        self._values: dict[str, HostValue] = {}
        self._arrays: dict[str, np.ndarray] = {}  # array values, bucketed per backend
        self._order: list[str] | None = None  # key order, kept only when arrays interleave with other values
        self._by_bins: dict[int | None, Mapping[str, Any]] = {}
        self.nonfinite: dict[str, int] = {}
        self.failed: list[tuple[str, BaseException]] = []
        self.nbytes = 0
        for key, raw in flat.items():
            kind = type(raw)
            if kind in _NUMBERS:  # the common cases first: exact type checks
                self._values[key] = raw
                self.nbytes += 16
                continue
            if kind in HOST_FLOAT_TYPES:  # a NumPy float, as fetched from the device
                self._values[key] = float(raw)
                self.nbytes += 16
                continue
            if kind is str:  # after the numbers, so that they pay nothing for it
                self._values[key] = raw if text is None else text(key, raw)
                self.nbytes += 16
                continue
            try:
                self._add(key, raw, text)
            except Exception as error:  # noqa: BLE001 - one bad value must not cost the report
                self.failed.append((key, error))
        if self._arrays:
            self._order = [key for key in flat if key in self._values or key in self._arrays]

    def _add(self, key: str, raw: Any, text: Callable[[str, str], str] | None) -> None:
        if raw is None:
            return
        if type(raw) in HOST_FLOAT_TYPES:
            self._values[key] = float(raw)
        elif type(raw) in HOST_INT_TYPES or type(raw) is np.bool_:
            self._values[key] = raw.item() if isinstance(raw, np.generic) else raw
        elif isinstance(raw, Histogram):
            self._values[key] = histogram = _host_histogram(raw)
            self.nbytes += histogram.bucket_limits.nbytes + histogram.bucket_counts.nbytes
        elif isinstance(raw, Image):
            image = _host_image(key, raw)
            if text is not None and image.caption:
                image = dataclasses.replace(image, caption=text(key, image.caption))
            self._values[key] = image
            self.nbytes += image.pixels.nbytes
        else:
            check_value(key, raw)
            if isinstance(raw, numbers.Number) and not isinstance(raw, np.generic):
                self._values[key] = int(raw) if isinstance(raw, numbers.Integral) else float(raw)  # type: ignore[arg-type]
                return
            array = np.asarray(raw)
            if array.ndim == 0:
                self._values[key] = _item(array)
                return
            if array.dtype.kind == "f" or array.dtype.name == "bfloat16":
                count = int(array.size - np.count_nonzero(np.isfinite(array)))
                if count:
                    self.nonfinite[key] = count
            self._arrays[key] = array
            self.nbytes += array.nbytes

    def for_bins(self, num_bins: int | None = DEFAULT_NUM_BINS) -> Mapping[str, Any]:
        """The values with every array as a histogram of ``num_bins`` buckets, read-only (shared by backends).

        ``num_bins=None`` (a backend that takes arrays as they are) gives each
        array as the host NumPy array it was logged as instead.
        """
        view = self._by_bins.get(num_bins)
        if view is None:
            if not self._arrays:
                view = types.MappingProxyType(self._values)
            else:
                arrays: dict[str, Any] = (
                    dict(self._arrays)
                    if num_bins is None
                    else {key: Histogram.from_array(flat, num_bins=num_bins) for key, flat in self._arrays.items()}
                )
                assert self._order is not None
                merged = {key: arrays[key] if key in arrays else self._values[key] for key in self._order}
                view = types.MappingProxyType(merged)
            self._by_bins[num_bins] = view
        return view

    def scalars(self) -> Mapping[str, HostValue]:
        """The values that are not arrays (numbers, text, histograms, images), in order."""
        return types.MappingProxyType(self._values)

    def numbers(self) -> list[tuple[str, Scalar]]:
        """``(key, value)`` of the values that are numbers or bools, in order (what guards read).

        Examples:
            >>> NormalizedValues({"loss": 0.5, "note": "text", "ok": True}).numbers()
            [('loss', 0.5), ('ok', True)]
        """
        return [(key, value) for key, value in self._values.items() if type(value) in _NUMBERS]  # type: ignore[misc]

    def __len__(self) -> int:
        return len(self._values) + len(self._arrays)


def _item(array: np.ndarray) -> Scalar:
    item = array.item()
    return item if isinstance(item, (bool, int)) else float(item)


def _host_histogram(value: Histogram) -> Histogram:
    """``value`` with NumPy bucket arrays and Python numbers (as it was fetched, possibly NumPy scalars)."""
    return Histogram(
        bucket_limits=np.asarray(value.bucket_limits, dtype=np.float64),
        bucket_counts=np.asarray(value.bucket_counts),
        min=float(value.min),
        max=float(value.max),
        num=int(value.num) if float(value.num).is_integer() else float(value.num),
        sum=float(value.sum),
        sum_squares=float(value.sum_squares),
    )


def _host_image(key: str, image: Image) -> Image:
    """``image`` with ``uint8`` host pixels in the layout it was given (``HW``, ``HWC`` or ``NHWC``)."""
    if isinstance(image.pixels, np.ndarray) and image.pixels.dtype == np.uint8:
        return image
    check_value(key, image)
    return Image(image.to_uint8().reshape(np.shape(image.pixels)), caption=image.caption)


__all__ = [
    "HostValue",
    "NormalizedValues",
    "normalize",
]
