"""The two value types that are not plain numbers or text: [`Histogram`][jaxtrack.values.Histogram] and [`Image`][jaxtrack.values.Image].

``DEFAULT_NUM_BINS`` (64) is how many buckets a histogram made from an array
value has, unless the backend says otherwise (its ``histogram_bins``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import numpy as np

DEFAULT_NUM_BINS = 64
"""Buckets of a histogram made from an array value (W&B's default; TensorBoard's is 30)."""


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Histogram:
    """A distribution summarised as bucket counts, as TensorBoard and W&B draw it.

    ``bucket_limits`` holds the ``n + 1`` bucket edges and ``bucket_counts`` the
    ``n`` counts; ``min``, ``max``, ``num``, ``sum`` and ``sum_squares`` describe
    the samples, so the mean and standard deviation survive any re-bucketing.
    Log a raw array to get one computed for you, or build one yourself.

    Examples:
        >>> import numpy as np
        >>> h = Histogram.from_array(np.array([0.0, 1.0, 1.0, 3.0]), num_bins=3)
        >>> h.bucket_counts.tolist(), float(h.mean)
        ([1, 2, 1], 1.25)
    """

    bucket_limits: Any
    bucket_counts: Any
    min: Any
    max: Any
    num: Any
    sum: Any
    sum_squares: Any

    @classmethod
    def from_array(cls, values: Any, *, num_bins: int = DEFAULT_NUM_BINS) -> Histogram:
        """Buckets the finite elements of ``values`` into ``num_bins`` equal-width bins.

        Non-finite elements (NaN, +-Inf) are left out of the buckets and of the
        moments, so one NaN does not turn a whole distribution into NaN.

        Examples:
            >>> Histogram.from_array([1.0, 2.0, float("nan")], num_bins=2).num
            2
        """
        if num_bins < 1:
            raise ValueError(f"num_bins must be at least 1, got {num_bins}")
        with np.errstate(over="ignore"):
            flat = np.asarray(values, dtype=np.float64).reshape(-1)
        flat = flat[np.isfinite(flat)]
        if flat.size == 0:
            return cls(
                bucket_limits=np.array([0.0, 0.0]),
                bucket_counts=np.array([0], dtype=np.int64),
                min=math.nan,
                max=math.nan,
                num=0,
                sum=0.0,
                sum_squares=0.0,
            )
        lo, hi = float(flat.min()), float(flat.max())
        low, high = lo, hi
        if low == high:
            # A constant array still needs a bucket of non-zero width to be drawn.
            pad = max(0.5, abs(low) * 1e-9)
            low, high = low - pad, high + pad
        with np.errstate(over="ignore", invalid="ignore"):
            edges = np.linspace(low, high, num_bins + 1)
            if np.all(np.isfinite(edges)) and np.all(np.diff(edges) > 0):
                counts = np.histogram(flat, bins=edges)[0]
            else:
                # Too narrow for float64 to split in num_bins (1e16 + a few ulps), or too wide
                # for its width to be a float (-1e308..1e308): one bucket holds everything.
                if low == high:
                    low, high = np.nextafter(low, -np.inf), np.nextafter(high, np.inf)
                edges, counts = np.array([low, high]), np.array([flat.size])
            total, squares = float(flat.sum()), float(np.square(flat).sum())
        return cls(
            bucket_limits=edges,
            bucket_counts=counts.astype(np.int64),
            min=lo,
            max=hi,
            num=int(flat.size),
            sum=total,
            sum_squares=squares,
        )

    @property
    def mean(self) -> Any:
        """The mean of the samples (NaN when there are none)."""
        return self.sum / self.num if self.num else math.nan

    @property
    def std(self) -> Any:
        """The population standard deviation of the samples (NaN when there are none)."""
        if not self.num:
            return math.nan
        mean = self.sum / self.num
        return math.sqrt(max(float(self.sum_squares / self.num - mean * mean), 0.0))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Image:
    """An image value: wrap an array to have it logged as pictures, not a histogram.

    ``pixels`` is ``HW`` (greyscale), ``HWC`` or ``NHWC`` (a batch of ``N``
    images) with 1, 3 or 4 channels; ``uint8`` values are used as they are and
    floating-point values are read as intensities in ``[0, 1]``. The shape is
    checked at once; the pixels are read only when a backend writes them.

    Examples:
        >>> import numpy as np
        >>> Image(np.zeros((8, 8, 3), np.uint8), caption="blank").num_images
        1
        >>> Image(np.full((2, 2), 0.5)).to_uint8().shape  # floats in [0, 1], HW -> NHWC
        (1, 2, 2, 1)
    """

    pixels: Any
    caption: str | None = dataclasses.field(default=None, metadata={"static": True})

    def __post_init__(self) -> None:
        shape = tuple(np.shape(self.pixels))
        if len(shape) not in (2, 3, 4):
            raise ValueError(f"Image pixels must be HW, HWC or NHWC, got shape {shape}")
        if len(shape) >= 3 and shape[-1] not in (1, 3, 4):
            raise ValueError(f"Image pixels must have 1, 3 or 4 channels in the last axis, got shape {shape}")

    @property
    def num_images(self) -> int:
        """How many images the value holds (``N`` of ``NHWC``, else 1)."""
        shape = np.shape(self.pixels)
        return int(shape[0]) if len(shape) == 4 else 1

    def to_uint8(self) -> np.ndarray:
        """The pixels as a host ``uint8`` array of shape ``NHWC``."""
        pixels = np.asarray(self.pixels)
        if pixels.ndim == 2:
            pixels = pixels[..., None]
        if pixels.ndim == 3:
            pixels = pixels[None]
        if pixels.dtype == np.uint8:
            return pixels
        if pixels.dtype == np.bool_:
            return pixels.astype(np.uint8) * np.uint8(255)
        if np.issubdtype(pixels.dtype, np.floating):
            pixels = np.nan_to_num(pixels.astype(np.float64), nan=0.0) * 255.0
        return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


__all__ = ["DEFAULT_NUM_BINS", "Histogram", "Image"]
