"""Callbacks: CLU-style periodic actions for a training loop, ``cb(step, **context)``.

They drop into a plain ``for hook in hooks: hook(step)`` loop; schedules take
CLU's ``every_steps``, ``every_secs`` and ``on_steps``, and a skipped step is
no error. A callback ends training by raising [`StopTraining`][jaxtrack.callbacks.StopTraining].
"""

from jaxtrack.callbacks.base import Callback, CallbackList, LambdaCallback, PeriodicCallback
from jaxtrack.callbacks.checkpoint import Checkpoint
from jaxtrack.callbacks.evaluate import Evaluate
from jaxtrack.callbacks.guards import EarlyStopping, TerminateOnNaN
from jaxtrack.callbacks.hyperparams import LearningRateMonitor
from jaxtrack.callbacks.loop import Loop, train
from jaxtrack.callbacks.profile import Profile
from jaxtrack.callbacks.progress import ReportProgress
from jaxtrack.callbacks.report import ReportMetrics
from jaxtrack.callbacks.schedule import Schedule
from jaxtrack.errors import StopTraining

__all__ = [
    "Callback",
    "CallbackList",
    "Checkpoint",
    "EarlyStopping",
    "Evaluate",
    "LambdaCallback",
    "LearningRateMonitor",
    "Loop",
    "PeriodicCallback",
    "Profile",
    "ReportMetrics",
    "ReportProgress",
    "Schedule",
    "StopTraining",
    "TerminateOnNaN",
    "train",
]
