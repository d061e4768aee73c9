"""The one path every value takes to the backends: doors submit calls, one dispatcher orders and fetches them, lanes deliver.

```
door (jaxtrack.log, tracker.log, a CLU writer, an in-graph report, ...)
  -> submit: checked on the caller's thread, arrays held safely, queued   (dispatcher.py, fetch.py)
  -> dispatcher thread: one fetch to the host, one normalisation, steps   (dispatcher.py, steps.py, taps.py)
  -> one lane per backend: its own queue, thread and when_full policy    (lanes.py, health.py)
  -> the backend's method
```

There is one [`Dispatcher`][jaxtrack.pipeline.dispatcher.Dispatcher] per
process, made on first use and returned by ``pipeline.default_dispatcher()``.
[`configure`][jaxtrack.pipeline.configure] sets its bounds before then:
``DEFAULT_MAX_QUEUED_CALLS`` (1,024) calls and ``DEFAULT_MAX_QUEUED_BYTES``
(256 MiB) of large values may wait in its queue before a caller waits for
room, and its thread lingers up to ``DEFAULT_LINGER_SECS`` (0.5 s) to fetch
and write reports in batches. Each backend's own bounds are attributes of the
tracker (``jaxtrack.pipeline.lanes``).

Examples:
    >>> import jaxtrack as jt
    >>> from jaxtrack import pipeline
    >>> with jt.current_tracker(jt.NoopTracker()):
    ...     jt.log({"loss": 0.5}, step=1)
    ...     pipeline.flush()
    True
"""

from __future__ import annotations

import threading
import time

from jaxtrack.pipeline.calls import Call
from jaxtrack.pipeline.dispatcher import (
    DEFAULT_LINGER_SECS,
    DEFAULT_MAX_QUEUED_BYTES,
    DEFAULT_MAX_QUEUED_CALLS,
    Dispatcher,
)
from jaxtrack.pipeline.health import BackendHealth
from jaxtrack.pipeline.lanes import on_delivery_thread
from jaxtrack.pipeline.steps import StepCounter
from jaxtrack.pipeline.taps import NonFinite, ReportedValues

_settings = {
    "max_calls": DEFAULT_MAX_QUEUED_CALLS,
    "max_bytes": DEFAULT_MAX_QUEUED_BYTES,
    "linger_secs": DEFAULT_LINGER_SECS,
}
_dispatcher: Dispatcher | None = None
_lock = threading.RLock()  # re-entrant: a SIGTERM handler may run while it is held


def default_dispatcher() -> Dispatcher:
    """The process's dispatcher, made on first use.

    Examples:
        >>> default_dispatcher() is default_dispatcher()
        True
    """
    global _dispatcher
    if _dispatcher is None:
        with _lock:
            if _dispatcher is None:
                _dispatcher = Dispatcher(**_settings)  # type: ignore[arg-type]
    return _dispatcher


def configure(
    *, max_queued_calls: int | None = None, max_queued_bytes: int | None = None, linger_secs: float | None = None
) -> None:
    """Sets the dispatcher's bounds: calls and bytes of large values it may hold, and how long it lingers to batch.

    The defaults are ``DEFAULT_MAX_QUEUED_CALLS`` (1,024),
    ``DEFAULT_MAX_QUEUED_BYTES`` (256 MiB) and ``DEFAULT_LINGER_SECS`` (0.5 s).
    Past a bound, the call that would exceed it waits for the dispatcher
    (which waits only for the device). Takes effect for calls made after it:
    call it before logging.

    Examples:
        >>> configure(max_queued_bytes=64 * 2**20)  # a process short of memory
        >>> default_dispatcher().max_bytes
        67108864
        >>> configure(max_queued_bytes=DEFAULT_MAX_QUEUED_BYTES)
    """
    for name, value in (("max_calls", max_queued_calls), ("max_bytes", max_queued_bytes), ("linger_secs", linger_secs)):
        if value is not None:
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or value < (0 if name == "linger_secs" else 1)
            ):
                raise ValueError(f"configure: {name} must be a positive number, got {value!r}")
            _settings[name] = value
            if _dispatcher is not None:
                setattr(_dispatcher, name, value)


def submit(target: object, call: Call, *, wait: bool = False, timeout: float | None = None, room: bool = True) -> bool:
    """Queues ``call`` for every backend of ``target`` (see [`Dispatcher.submit`][jaxtrack.pipeline.dispatcher.Dispatcher.submit]).

    This is what every door ends in, after checking the values on the
    caller's thread. With ``wait``, returns once every backend made it;
    ``False`` if ``timeout`` seconds ran out first. ``room=False`` queues
    without waiting for room (exit paths, host callbacks the device waits on).
    Nothing is checked here: call a tracker's methods (its front door) instead,
    unless you are writing a door.

    Examples:
        >>> from jaxtrack.trackers import NoopTracker
        >>> submit(NoopTracker(), Call("log", {"loss": 0.5}, step=0), wait=True, timeout=10)
        True
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    return default_dispatcher().submit(target, call, wait=wait, deadline=deadline, room=room)


def flush(timeout: float | None = None) -> bool:
    """Waits until every call made so far reached its backends; ``False`` if ``timeout`` seconds ran out first.

    Examples:
        >>> flush(timeout=10)
        True
    """
    return default_dispatcher().flush(None if timeout is None else time.monotonic() + timeout)


def reported() -> ReportedValues:
    """Every value reported so far, in order, for guards and progress bars (see ``jaxtrack.pipeline.taps``).

    Examples:
        >>> reader = reported().reader()
        >>> reader.read()
        []
    """
    return default_dispatcher().reported


__all__ = [
    "DEFAULT_LINGER_SECS",
    "DEFAULT_MAX_QUEUED_BYTES",
    "DEFAULT_MAX_QUEUED_CALLS",
    "BackendHealth",
    "Call",
    "Dispatcher",
    "NonFinite",
    "ReportedValues",
    "StepCounter",
    "configure",
    "default_dispatcher",
    "flush",
    "on_delivery_thread",
    "reported",
    "submit",
]
