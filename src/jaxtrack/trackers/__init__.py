"""Trackers: the backends metrics go to, and the configs that build them.

The backend modules import their packages (``tensorboard``, ``wandb``) only
when a tracker is made, so importing this package stays light.
"""

from jaxtrack.store import RunStore  # read what LocalTracker writes; its home is jaxtrack.store
from jaxtrack.trackers.base import CompositeTracker, NoopTracker, StepCounter, Tracker, TrackerError
from jaxtrack.trackers.config import NoopConfig, TrackerConfig, TrackerConfigError
from jaxtrack.trackers.console import ConsoleConfig, ConsoleTracker
from jaxtrack.trackers.local import LocalConfig, LocalTracker
from jaxtrack.trackers.tensorboard import TensorboardConfig, TensorboardTracker
from jaxtrack.trackers.wandb import WandbConfig, WandbTracker

__all__ = [
    "CompositeTracker",
    "ConsoleConfig",
    "ConsoleTracker",
    "LocalConfig",
    "LocalTracker",
    "NoopConfig",
    "NoopTracker",
    "RunStore",
    "StepCounter",
    "TensorboardConfig",
    "TensorboardTracker",
    "Tracker",
    "TrackerConfig",
    "TrackerConfigError",
    "TrackerError",
    "WandbConfig",
    "WandbTracker",
]
