"""Callbacks: CLU-style periodic actions for a training loop, ``cb(step, **context)``.

They drop into a plain ``for hook in hooks: hook(step)`` loop; schedules take
CLU's ``every_steps``, ``every_secs`` and ``on_steps``, and a skipped step is
no error. A callback ends training by raising :class:`StopTraining`.
"""

from jaxtrack.callbacks.base import Callback, CallbackList, LambdaCallback, PeriodicCallback, StopTraining
from jaxtrack.callbacks.guards import EarlyStopping, TerminateOnNaN
from jaxtrack.callbacks.loop import Loop, train
from jaxtrack.callbacks.report import ReportMetrics
from jaxtrack.callbacks.schedule import Schedule

__all__ = [
    "Callback",
    "CallbackList",
    "EarlyStopping",
    "LambdaCallback",
    "Loop",
    "PeriodicCallback",
    "ReportMetrics",
    "Schedule",
    "StopTraining",
    "TerminateOnNaN",
    "train",
]
