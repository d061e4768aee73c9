"""What a metric value can be, and how backends turn one into something they write.

Every backend accepts the same values: Python numbers and bools, NumPy and JAX
scalars and arrays, strings, [`Histogram`][jaxtrack.values.Histogram], [`Image`][jaxtrack.values.Image], and nested
dicts of those (flattened to ``"a/b"`` keys). An array with one or more
dimensions is logged as a histogram of its elements (``DEFAULT_NUM_BINS``
buckets, 64, unless the backend is told otherwise); a 0-d array is a scalar.

Backends call [`flatten`][jaxtrack.values.flatten], then [`to_host`][jaxtrack.values.to_host] once per report (a single
batched device-to-host transfer, made on the thread that writes), then
[`normalize`][jaxtrack.values.normalize] per value.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import numbers
import pathlib
from collections.abc import Mapping
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
        if np.issubdtype(pixels.dtype, np.floating):
            pixels = np.nan_to_num(pixels.astype(np.float64), nan=0.0) * 255.0
        return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def flatten(tree: Mapping[str, Any], *, sep: str = "/") -> dict[str, Any]:
    """Flattens nested mappings into one level, joining keys with ``sep``.

    A name given twice (once nested, once flat) is a ``ValueError``; a key
    that is not a string (or an int) is a ``TypeError``.

    Examples:
        >>> flatten({"train": {"loss": 1.0, "acc": 0.5}, "lr": 0.1})
        {'train/loss': 1.0, 'train/acc': 0.5, 'lr': 0.1}
    """
    if not isinstance(tree, Mapping):
        raise TypeError(f"metrics must be a mapping of names to values, got {type(tree).__name__}")
    out: dict[str, Any] = {}
    _flatten_into(out, tree, "", sep)
    return out


def _flatten_into(out: dict[str, Any], tree: Mapping[Any, Any], prefix: str, sep: str) -> None:
    for key, value in tree.items():
        if type(key) is str:  # the common case first: exact type checks, no ABCs
            if not key:
                raise ValueError(f"empty metric name under {prefix!r}")
            if not key.isascii():
                _check_text(f"{prefix}{key}", key)
        elif isinstance(key, bool) or not isinstance(key, (str, int)):
            raise TypeError(
                f"metric names must be strings (or ints), got {key!r} ({type(key).__name__}) under {prefix!r}"
            )
        elif isinstance(key, str):
            if not key:
                raise ValueError(f"empty metric name under {prefix!r}")
            _check_text(f"{prefix}{key}", key)
        name = f"{prefix}{key}" if prefix else str(key)
        if type(value) is dict or (type(value) not in _LEAF_TYPES and isinstance(value, Mapping)):
            _flatten_into(out, value, name + sep, sep)
        elif name in out:
            raise ValueError(f"metric name {name!r} is given twice (once nested, once flat)")
        else:
            out[name] = value


def to_host(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Copies every JAX array in ``flat`` to host memory in one batched transfer.

    Call it where the backend writes, never on the training thread: it waits for
    the device to produce the values.

    Examples:
        >>> import jax.numpy as jnp
        >>> host = to_host({"loss": jnp.float32(0.5), "lr": 0.1})
        >>> {key: type(value).__name__ for key, value in host.items()}
        {'loss': 'ndarray', 'lr': 'float'}
    """
    if not any(_holds_jax_array(v) for v in flat.values()):
        return dict(flat)
    return jax.device_get(dict(flat))


# Exact types that are plain host scalars: checked with one set look-up, where the
# isinstance checks against numbers.Real or jax.Array (ABCs) cost far more per value.
_HOST_FLOATS = frozenset({float, np.float16, np.float32, np.float64})
_HOST_INTS = frozenset({int, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64})
HOST_SCALAR_TYPES = _HOST_FLOATS | _HOST_INTS | {bool, np.bool_}
_LEAF_TYPES = HOST_SCALAR_TYPES | {str, type(None)}
"""Exact types of values that are already host scalars (a fast path before slower checks)."""


def _holds_jax_array(value: Any) -> bool:
    if type(value) in _HOST_FLOATS or type(value) in _HOST_INTS:
        return False
    if isinstance(value, jax.Array):
        return True
    if isinstance(value, (Histogram, Image)):
        return any(isinstance(leaf, jax.Array) for leaf in jax.tree_util.tree_leaves(value))
    return False


def to_plain(value: Any) -> Any:
    """``value`` as plain Python: dicts, lists, strings, numbers, bools and ``None``.

    For configurations and hyperparameters: dataclasses and mappings become
    dicts, tuples and sets lists, NumPy values Python ones, enums their name,
    paths their text, anything else its ``repr``. JAX arrays must be fetched
    first ([`to_host`][jaxtrack.values.to_host]).

    Examples:
        >>> import enum, numpy as np
        >>> class Mode(enum.Enum):
        ...     FAST = 1
        >>> to_plain({"layers": (64, 64), "lr": np.float32(0.5), "mode": Mode.FAST})
        {'layers': [64, 64], 'lr': 0.5, 'mode': 'FAST'}
    """
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_plain(dataclasses.asdict(value))
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_plain(v) for v in value]
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, (np.generic, np.ndarray)):
        return to_plain(value.tolist())
    if isinstance(value, pathlib.PurePath):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


Scalar = int | float | bool
HostValue = Scalar | str | Histogram | Image | None


def check_value(key: str, value: Any) -> None:
    """Raises ``TypeError`` naming ``key`` if no backend can record ``value``.

    Looks only at types and dtypes, never at the data, so it is safe on the
    training thread. (An integer beyond float64's range is a ``ValueError``.)

    Examples:
        >>> check_value("loss", 0.5)
        >>> check_value("loss", object())
        Traceback (most recent call last):
        ...
        TypeError: metric 'loss': cannot log a value of type object; use a number, an array, a string, jaxtrack.Histogram or jaxtrack.Image
    """
    if type(value) in _HOST_FLOATS:
        return
    if type(value) is int:
        if abs(value) > _FLOAT64_MAX:  # no backend stores it, not even as a float
            raise ValueError(f"metric {key!r}: {value} is too large to log (beyond float64)")
        return
    if type(value) in _HOST_INTS:
        return
    if isinstance(value, str):
        _check_text(key, value)
        return
    if isinstance(value, (Histogram, Image)):
        if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(value)):
            raise TypeError(f"metric {key!r} holds a JAX tracer: inside jit, log with jaxtrack.jit_log")
        return
    if value is None or isinstance(value, (bool, numbers.Real)):
        if isinstance(value, numbers.Integral) and abs(int(value)) > _FLOAT64_MAX:
            raise ValueError(f"metric {key!r}: {value} is too large to log (beyond float64)")
        return
    if isinstance(value, jax.core.Tracer):
        raise TypeError(
            f"metric {key!r} is a JAX tracer: inside jit, log with jaxtrack.jit_log instead of jaxtrack.log"
        )
    if isinstance(value, (list, tuple)):
        try:
            value = np.asarray(value)
        except ValueError as error:  # ragged
            raise TypeError(f"metric {key!r}: a list that is not a rectangular array of numbers ({error})") from None
    if isinstance(value, (np.ndarray, np.generic, jax.Array)):
        if value.dtype.kind in "biuf" or value.dtype.name == "bfloat16":
            return
        raise TypeError(
            f"metric {key!r}: arrays of dtype {value.dtype} cannot be logged; "
            "use a real-valued array, a number or a string"
        )
    raise TypeError(
        f"metric {key!r}: cannot log a value of type {type(value).__name__}; "
        "use a number, an array, a string, jaxtrack.Histogram or jaxtrack.Image"
    )


_FLOAT64_MAX = float(np.finfo(np.float64).max)


def _check_text(key: str, text: str) -> None:
    """Text every backend can write: encodable as UTF-8 (a lone surrogate is not)."""
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(f"metric {key!r}: the text is not valid Unicode ({error.reason} at {error.start})") from None


def check_values(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """[`check_value`][jaxtrack.values.check_value] on every value of a (nested) metrics mapping; returns it flattened.

    Examples:
        >>> check_values({"train": {"loss": 0.5, "note": "warm-up"}})
        {'train/loss': 0.5, 'train/note': 'warm-up'}
    """
    flat = flatten(metrics)
    for key, value in flat.items():
        check_value(key, value)
    return flat


def normalize(key: str, value: Any, *, num_bins: int = DEFAULT_NUM_BINS) -> HostValue:
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
    if type(value) in _HOST_FLOATS:
        return float(value)
    if type(value) in _HOST_INTS:
        return int(value)
    check_value(key, value)
    if value is None or isinstance(value, (str, bool, Histogram, Image)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    array = np.asarray(value)
    if array.ndim == 0:
        item = array.item()
        return item if isinstance(item, (bool, int)) else float(item)
    return Histogram.from_array(array, num_bins=num_bins)


__all__ = [
    "DEFAULT_NUM_BINS",
    "Histogram",
    "Image",
    "check_value",
    "check_values",
    "flatten",
    "normalize",
    "to_host",
    "to_plain",
]
