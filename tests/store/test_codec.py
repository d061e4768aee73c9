"""Values as the store's columns and back: numbers exactly (NaN as NULL), histograms, images, summary JSON.

Each value goes through a real SQLite table on its way back, as it does in a
store, so what SQLite does to a column (integers, NULL, blobs) is part of the test.
"""

from __future__ import annotations

import json
import math
import sqlite3

import numpy as np
import pytest

from jaxtrack.store.codec import HISTOGRAM_FIELDS, decode, encode, from_summary, json_text, to_summary
from jaxtrack.store.schema import STEP_TABLES, VALUE_COLUMNS
from jaxtrack.values import Histogram, Image


def through_sqlite(value: object) -> object:
    """``value`` encoded into its value table of an in-memory store schema, read back and decoded."""
    table, columns = encode(value)
    db = sqlite3.connect(":memory:")
    try:
        db.execute(f"CREATE TABLE {table} ({STEP_TABLES[table]})")
        db.execute(f"INSERT INTO {table} VALUES ({', '.join('?' * len(columns))})", columns)
        (row,) = db.execute(f"SELECT {VALUE_COLUMNS[table]} FROM {table}").fetchall()
    finally:
        db.close()
    return decode(table, row)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.1, 0.1),
        (7, 7),
        (2**63 - 1, 2**63 - 1),
        (-(2**63), -(2**63)),
        (2**63, float(2**63)),  # beyond int64: a float, as SQLite could not keep it
        (True, 1),
        (math.inf, math.inf),
        (-math.inf, -math.inf),
    ],
)
def test_numbers_are_stored_exactly_within_64_bits(value: object, expected: object) -> None:
    assert encode(value)[0] == "scalars"
    stored = through_sqlite(value)
    assert stored == expected and type(stored) is type(expected)


def test_nan_is_stored_as_null_and_reads_back_as_nan() -> None:
    assert encode(math.nan) == ("scalars", (None,))
    assert math.isnan(through_sqlite(math.nan))


def test_text_is_stored_as_given() -> None:
    assert through_sqlite("héllo\nwörld 🚀") == "héllo\nwörld 🚀"


def test_histograms_keep_their_buckets_and_nan_statistics() -> None:
    histogram = Histogram(
        bucket_limits=np.array([0.0, 0.5, 1.0]),
        bucket_counts=np.array([2, 2**40]),
        min=math.nan,
        max=1.0,
        num=2 + 2**40,
        sum=math.nan,
        sum_squares=3.0,
    )
    stored = through_sqlite(histogram)
    assert isinstance(stored, Histogram)
    assert stored.bucket_limits.dtype == np.float64 and stored.bucket_counts.dtype == np.int64
    np.testing.assert_array_equal(stored.bucket_limits, histogram.bucket_limits)
    np.testing.assert_array_equal(stored.bucket_counts, histogram.bucket_counts)
    assert math.isnan(stored.min) and math.isnan(stored.sum)
    assert (stored.max, stored.num, stored.sum_squares) == (1.0, 2 + 2**40, 3.0)


def test_images_keep_their_uint8_pixels_and_caption() -> None:
    pixels = np.random.default_rng(0).integers(0, 256, size=(2, 3, 4, 3), dtype=np.uint8)
    stored = through_sqlite(Image(pixels, caption="two frames"))
    assert isinstance(stored, Image) and stored.caption == "two frames"
    np.testing.assert_array_equal(stored.pixels, pixels)
    assert through_sqlite(Image(pixels[0])).caption is None


def test_a_summary_histogram_is_plain_json_and_a_histogram_again() -> None:
    histogram = Histogram.from_array(np.arange(10.0), num_bins=4)
    plain = json.loads(json_text(to_summary(histogram)))
    assert set(plain) == HISTOGRAM_FIELDS
    again = from_summary(plain)
    assert isinstance(again, Histogram)
    np.testing.assert_array_equal(again.bucket_counts, histogram.bucket_counts)
    assert (again.num, again.min, again.max) == (10, 0.0, 9.0)
    assert from_summary({**plain, "extra": 1}) == {**plain, "extra": 1}  # other dicts are left alone


def test_json_text_keeps_what_json_cannot_hold_as_its_repr() -> None:
    assert json.loads(json_text({"ok": [1, "ü"], "odd": {1, 2}})) == {"ok": [1, "ü"], "odd": "{1, 2}"}
    assert "ü" in json_text("ü")  # not escaped: the store is read by people too
