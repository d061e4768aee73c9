"""How a run's values become the store's columns, and how they read back.

A value logged at a step goes to one value table (see
[`jaxtrack.store.schema`][jaxtrack.store.schema]): a number to ``scalars``
(ints exactly within 64 bits, NaN as ``NULL`` since SQLite has no NaN), a
string to ``texts``, a [`Histogram`][jaxtrack.Histogram] to ``histograms``
(its bucket arrays as raw float64 and int64 bytes) and an
[`Image`][jaxtrack.Image] to ``images`` (its uint8 pixels as ``.npy``
bytes). [`encode`][jaxtrack.store.codec.encode] and
[`decode`][jaxtrack.store.codec.decode] are the two directions.

A run's summary, hyperparameters, git and system information are JSON
texts in its ``runs`` row: [`json_text`][jaxtrack.store.codec.json_text]
writes them, [`to_summary`][jaxtrack.store.codec.to_summary] makes a
summary value plain, and [`from_summary`][jaxtrack.store.codec.from_summary]
turns a histogram's plain dict (a dict whose keys are ``HISTOGRAM_FIELDS``)
back into a ``Histogram``.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from jaxtrack.values import Histogram, Image, to_plain

HISTOGRAM_FIELDS = frozenset(field.name for field in dataclasses.fields(Histogram))
"""The keys of a [`Histogram`][jaxtrack.Histogram] kept in a summary, which stores it as a plain dict."""

_INT64 = 2**63


def encode(value: Any) -> tuple[str, tuple[Any, ...]]:
    """The value table a normalized value goes to, and its value columns there.

    ``value`` is one that [`jaxtrack.values.normalize`][jaxtrack.values.normalize]
    returns: a number, a string, a ``Histogram`` or an ``Image``.

    Examples:
        >>> encode(0.5), encode(float("nan")), encode(2**62), encode(True), encode("hi")
        (('scalars', (0.5,)), ('scalars', (None,)), ('scalars', (4611686018427387904,)), ('scalars', (1,)), ('texts', ('hi',)))
        >>> table, columns = encode(Image(np.zeros((2, 3, 1), np.uint8), caption="blank"))
        >>> table, columns[1], type(columns[0])
        ('images', 'blank', <class 'bytes'>)
    """
    if type(value) is float:  # the common case first
        return "scalars", (None if value != value else value,)
    if isinstance(value, str):
        return "texts", (value,)
    if isinstance(value, Histogram):
        return "histograms", _histogram_columns(value)
    if isinstance(value, Image):
        return "images", (_npy(value.to_uint8()), value.caption)
    return "scalars", (_sql_number(value),)


def decode(table: str, columns: Sequence[Any]) -> Any:
    """The value that a row of ``table`` holds in its value columns (NaN for a ``NULL`` number).

    Examples:
        >>> decode("scalars", [None]), decode("scalars", [3]), decode("texts", ["hi"])
        (nan, 3, 'hi')
        >>> histogram = Histogram.from_array([1.0, 2.0, 3.0], num_bins=2)
        >>> decode(*encode(histogram)).bucket_counts.tolist()
        [1, 2]
        >>> decode(*encode(Image(np.full((2, 3, 1), 255, np.uint8)))).pixels.shape
        (1, 2, 3, 1)
    """
    if table == "scalars":
        return math.nan if columns[0] is None else columns[0]
    if table == "texts":
        return columns[0]
    if table == "histograms":
        limits, counts, low, high, num, total, squares = columns
        return Histogram(
            bucket_limits=np.frombuffer(limits, dtype=np.float64).copy(),
            bucket_counts=np.frombuffer(counts, dtype=np.int64).copy(),
            min=math.nan if low is None else low,
            max=math.nan if high is None else high,
            num=num,
            sum=math.nan if total is None else total,
            sum_squares=math.nan if squares is None else squares,
        )
    pixels, caption = columns
    return Image(np.load(io.BytesIO(pixels), allow_pickle=False), caption=caption)


def to_summary(value: Any) -> Any:
    """A normalized value as a run's summary keeps it: plain JSON data, an image only described.

    Examples:
        >>> to_summary(0.25), to_summary(Image(np.zeros((4, 5, 3), np.uint8)))
        (0.25, '<image 4x5x3>')
        >>> sorted(to_summary(Histogram.from_array([1.0, 2.0], num_bins=2))) == sorted(HISTOGRAM_FIELDS)
        True
    """
    if isinstance(value, Image):
        return f"<image {'x'.join(map(str, np.shape(value.pixels)))}>"
    return to_plain(value)


def from_summary(value: Any) -> Any:
    """A summary value as read from the store, with a histogram's plain dict made a ``Histogram`` again.

    Written on, it is a histogram again, instead of one value per field.

    Examples:
        >>> histogram = from_summary(to_summary(Histogram.from_array([1.0, 2.0, 3.0], num_bins=2)))
        >>> type(histogram).__name__, histogram.bucket_counts.tolist(), int(histogram.num)
        ('Histogram', [1, 2], 3)
        >>> from_summary({"loss": 0.5})
        {'loss': 0.5}
    """
    if isinstance(value, dict) and set(value) == HISTOGRAM_FIELDS:
        fields = {**value, "bucket_limits": np.asarray(value["bucket_limits"], dtype=np.float64)}
        fields["bucket_counts"] = np.asarray(value["bucket_counts"], dtype=np.int64)
        return Histogram(**fields)
    return value


def json_text(value: Any) -> str:
    """``value`` as the JSON text of a ``runs`` column; what JSON cannot hold is kept as its ``repr``.

    Examples:
        >>> json_text({"name": "adam", "lr": 0.1, "betas": (0.9, 0.99), "when": object})
        '{"name": "adam", "lr": 0.1, "betas": [0.9, 0.99], "when": "<class \\'object\\'>"}'
    """
    return json.dumps(value, ensure_ascii=False, default=repr)


def _histogram_columns(value: Histogram) -> tuple[Any, ...]:
    return (
        np.asarray(value.bucket_limits, dtype=np.float64).tobytes(),
        np.asarray(value.bucket_counts, dtype=np.int64).tobytes(),
        _sql_number(float(value.min)),
        _sql_number(float(value.max)),
        int(value.num),
        _sql_number(float(value.sum)),
        _sql_number(float(value.sum_squares)),
    )


def _sql_number(value: Any) -> int | float | None:
    """A scalar as SQLite stores it: ints exactly (within 64 bits), NaN as NULL."""
    if isinstance(value, int):
        return int(value) if -_INT64 <= value < _INT64 else float(value)
    number = float(value)
    return None if math.isnan(number) else number


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


__all__ = ["HISTOGRAM_FIELDS", "decode", "encode", "from_summary", "json_text", "to_summary"]
