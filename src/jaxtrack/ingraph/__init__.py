"""In-graph metrics: ``jit_log`` inside jitted steps, reduced on the device, read only when reported."""

from jaxtrack.ingraph.capture import Captured, capture, jit_log
from jaxtrack.ingraph.layout import MetricSpec
from jaxtrack.ingraph.loops import fori_loop, scan
from jaxtrack.ingraph.reductions import (
    HistogramReduction,
    Last,
    Max,
    Mean,
    Min,
    Reduction,
    Stats,
    Sum,
    get_reduction,
)
from jaxtrack.ingraph.tracked import TrackedFunction, jit

__all__ = [
    "Captured",
    "HistogramReduction",
    "Last",
    "Max",
    "Mean",
    "MetricSpec",
    "Min",
    "Reduction",
    "Stats",
    "Sum",
    "TrackedFunction",
    "capture",
    "fori_loop",
    "get_reduction",
    "jit",
    "jit_log",
    "scan",
]
