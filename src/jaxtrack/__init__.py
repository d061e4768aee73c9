"""jaxtrack: experiment tracking for JAX, Flax and Optax training loops.

The names users type live here: the logging functions, the in-graph metrics
(``jit``, ``jit_log``), the tracker interface and its configs, the value
types, the training loop, and every error. Concrete backends live in
``jaxtrack.trackers`` (``from jaxtrack.trackers import LocalTracker``);
``jaxtrack.LocalTracker`` and the other backends and configs, and
``jaxtrack.RunStore`` (``jaxtrack.store``), also resolve here, on first use.
``jaxtrack.__version__`` is the package's version (a dunder, so not in
``__all__``).

Examples:
    >>> import jaxtrack as jt
    >>> with jt.init_tracker({"type": "noop"}, run_id="example"):
    ...     jt.log({"loss": 0.5}, step=0)
"""

from typing import Any

from jaxtrack import callbacks
from jaxtrack._version import __version__ as __version__  # the package version; a dunder, so not in __all__
from jaxtrack.api import (
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
from jaxtrack.callbacks import train
from jaxtrack.errors import (
    ArtifactWarning,
    BackendError,
    CredentialWarning,
    DataLossWarning,
    FinishedTrackerError,
    MissingExtraError,
    NestedTransformError,
    NoTrackerWarning,
    RunInUseError,
    RunTakenOverError,
    StopTraining,
    StoreError,
    TrackerConfigError,
    TrackerError,
    UnsafePathError,
)
from jaxtrack.ingraph import TrackedFunction, capture, fori_loop, jit, jit_log, scan
from jaxtrack.metric_writer import as_metric_writer
from jaxtrack.trackers.base import NoopTracker, Tracker
from jaxtrack.trackers.clu import from_metric_writer
from jaxtrack.trackers.composite import CompositeTracker
from jaxtrack.trackers.config import TrackerConfig
from jaxtrack.values import Histogram, Image, flatten


def __getattr__(name: str) -> Any:
    # Concrete backends live in jaxtrack.trackers and RunStore in jaxtrack.store; jaxtrack.LocalTracker
    # and friends still resolve here.
    if name == "RunStore":
        from jaxtrack.store import RunStore

        return RunStore
    if not name.startswith("_"):  # probes for dunders import nothing
        from jaxtrack import trackers  # the one list of backends and their configs: trackers.__all__

        if name in trackers.__all__:
            return getattr(trackers, name)
    raise AttributeError(f"module 'jaxtrack' has no attribute {name!r}")


__all__ = [
    "ArtifactWarning",
    "BackendError",
    "CompositeTracker",
    "CredentialWarning",
    "DataLossWarning",
    "FinishedTrackerError",
    "Histogram",
    "Image",
    "MissingExtraError",
    "NestedTransformError",
    "NoTrackerWarning",
    "NoopTracker",
    "RunInUseError",
    "RunTakenOverError",
    "StopTraining",
    "StoreError",
    "TrackedFunction",
    "Tracker",
    "TrackerConfig",
    "TrackerConfigError",
    "TrackerError",
    "UnsafePathError",
    "as_metric_writer",
    "callbacks",
    "capture",
    "current_tracker",
    "finish",
    "flatten",
    "flush",
    "fori_loop",
    "from_metric_writer",
    "get_tracker",
    "init_tracker",
    "jit",
    "jit_log",
    "log",
    "log_artifact",
    "log_configuration",
    "log_hyperparameters",
    "log_summary",
    "scan",
    "train",
]
