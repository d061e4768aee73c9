"""jaxtrack: experiment tracking for JAX, Flax and Optax training loops.

Examples:
    >>> import jaxtrack as jt
    >>> with jt.init_tracker({"type": "noop"}, run_id="example"):
    ...     jt.log({"loss": 0.5}, step=0)
"""

from jaxtrack import callbacks
from jaxtrack._optional import MissingExtraError
from jaxtrack._version import __version__ as __version__  # the redundant alias re-exports it
from jaxtrack.callbacks import StopTraining, train
from jaxtrack.ingraph import (
    NestedTransformError,
    TrackedFunction,
    capture,
    fori_loop,
    jit,
    jit_log,
    scan,
)
from jaxtrack.store import RunStore
from jaxtrack.trackers import (
    CompositeTracker,
    ConsoleConfig,
    ConsoleTracker,
    LocalConfig,
    LocalTracker,
    NoopConfig,
    NoopTracker,
    TensorboardConfig,
    TensorboardTracker,
    Tracker,
    TrackerConfig,
    TrackerConfigError,
    TrackerError,
    WandbConfig,
    WandbTracker,
)
from jaxtrack.trackers.clu import as_metric_writer, from_metric_writer
from jaxtrack.tracking import (
    BackendError,
    NoTrackerWarning,
    current_tracker,
    finish,
    flush,
    get_tracker,
    init_tracker,
    log,
    log_artifact,
    log_configuration,
    log_hyperparameters,
    log_summary,
)
from jaxtrack.values import Histogram, Image, flatten

__all__ = [
    "as_metric_writer",
    "BackendError",
    "from_metric_writer",
    "StopTraining",
    "train",
    "callbacks",
    "scan",
    "jit_log",
    "jit",
    "fori_loop",
    "capture",
    "TrackedFunction",
    "NestedTransformError",
    "CompositeTracker",
    "ConsoleConfig",
    "ConsoleTracker",
    "Histogram",
    "Image",
    "LocalConfig",
    "LocalTracker",
    "MissingExtraError",
    "NoTrackerWarning",
    "NoopConfig",
    "NoopTracker",
    "RunStore",
    "TensorboardConfig",
    "TensorboardTracker",
    "Tracker",
    "TrackerConfig",
    "TrackerConfigError",
    "TrackerError",
    "WandbConfig",
    "WandbTracker",
    "current_tracker",
    "finish",
    "flush",
    "flatten",
    "get_tracker",
    "init_tracker",
    "log",
    "log_artifact",
    "log_configuration",
    "log_hyperparameters",
    "log_summary",
]
