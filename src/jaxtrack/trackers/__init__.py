"""Trackers: the backends values go to, and the configs that build them.

``Tracker`` is the interface (and front door) every backend has;
``CompositeTracker`` and ``NoopTracker`` are built from nothing else. One
backend a module: ``local`` (the default run store), ``tensorboard``,
``wandb``, ``console``, ``jsonl`` (JSON lines, ``type: json_logger``), ``clu`` (any CLU ``MetricWriter``). A backend module
imports its package (``tensorboard``, ``wandb``) only when a tracker is made,
so importing this package stays light.

Examples:
    >>> from jaxtrack.trackers import ConsoleTracker, TrackerConfig
    >>> TrackerConfig.parse("type: console").init(None).name
    'console'
"""

from jaxtrack.pipeline.steps import StepCounter
from jaxtrack.trackers.base import NoopTracker, Tracker
from jaxtrack.trackers.composite import CompositeTracker
from jaxtrack.trackers.config import NoopConfig, TrackerConfig
from jaxtrack.trackers.console import ConsoleConfig, ConsoleTracker
from jaxtrack.trackers.jsonl import JsonLinesConfig, JsonLinesTracker
from jaxtrack.trackers.local import LocalConfig, LocalTracker
from jaxtrack.trackers.tensorboard import TensorboardConfig, TensorboardTracker
from jaxtrack.trackers.wandb import WandbConfig, WandbTracker

__all__ = [
    "CompositeTracker",
    "ConsoleConfig",
    "ConsoleTracker",
    "JsonLinesConfig",
    "JsonLinesTracker",
    "LocalConfig",
    "LocalTracker",
    "NoopConfig",
    "NoopTracker",
    "StepCounter",
    "TensorboardConfig",
    "TensorboardTracker",
    "Tracker",
    "TrackerConfig",
    "WandbConfig",
    "WandbTracker",
]
