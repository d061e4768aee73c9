"""Reading what CLU's own writers produced, for the CLU interop tests."""

from __future__ import annotations

import numpy as np
import pytest

import jaxtrack as jt


def absl_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The lines CLU's ``LoggingWriter`` logged (through absl)."""
    return [r.getMessage() for r in caplog.records if r.name == "absl"]


def clu_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The warnings jaxtrack's CLU adapters logged (each at most once per adapter)."""
    return [r.getMessage() for r in caplog.records if r.name == "jaxtrack.clu_writers" and r.levelno >= 30]


def same_histogram(a: jt.Histogram, b: jt.Histogram) -> bool:
    """Whether two histograms have the same buckets, counts and moments."""
    return (
        np.allclose(a.bucket_limits, b.bucket_limits)
        and np.array_equal(a.bucket_counts, b.bucket_counts)
        and (a.num, a.min, a.max) == (b.num, b.min, b.max)
        and np.isclose(a.sum, b.sum)
        and np.isclose(a.sum_squares, b.sum_squares)
    )


__all__ = ["absl_lines", "clu_warnings", "same_histogram"]
