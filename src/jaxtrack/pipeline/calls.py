"""What travels through the pipeline: a [`Call`][jaxtrack.pipeline.calls.Call] made at a door, and the [`Delivery`][jaxtrack.pipeline.calls.Delivery] a backend's lane makes of it.

A call is made once, on the caller's thread, whatever the door (``jaxtrack.log``,
a tracker's own method, a CLU writer, an in-graph report); the dispatcher
fetches and normalises it once, then hands each backend of its target one
delivery. ``METHODS`` are the tracker methods a call can be; only ``log``
calls may be dropped when a backend falls behind (``DROPPABLE``).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Mapping
from typing import Any, Protocol

METHODS = ("log", "log_summary", "log_hyperparameters", "log_artifact", "flush", "set_status", "finish")
DROPPABLE = frozenset({"log"})
"""Calls a backend that fell behind may lose (counted); summaries, hyperparameters, artifacts and finish never."""


class Backend(Protocol):
    """What the pipeline needs of a tracker; ``jaxtrack.Tracker`` provides it (the pipeline sits below it).

    The delivery options (``when_full``, ``max_pending``,
    ``max_pending_bytes``, ``block_timeout``) bound the backend's lane,
    ``histogram_bins`` says how its array values arrive (``None``: as NumPy
    arrays), and ``resumed_step`` is where ``step=None`` continues.

    Examples:
        >>> from jaxtrack.trackers import NoopTracker
        >>> tracker = NoopTracker()
        >>> tracker.when_full, tracker.max_pending, tracker.histogram_bins, tracker.backends() == [tracker]
        ('block', 10000, 64, True)
    """

    name: str
    when_full: str
    max_pending: int
    max_pending_bytes: int
    block_timeout: float
    histogram_bins: int | None
    resumed_step: int | None

    def backends(self) -> list[Any]:
        """The backends a call to this tracker reaches: itself, or a composite's members."""
        ...


@dataclasses.dataclass(eq=False)
class Call:
    """One call made at a door: ``method`` with its ``payload`` (metric values, hyperparameters) and arguments.

    ``prepare`` turns the fetched payload into flat values (an in-graph
    report: the accumulator into its reductions' results). ``owned`` says the
    payload's arrays belong to jaxtrack (an accumulator it swapped out), so
    no copy is made to protect them from donation; ``nbytes``, if known, is
    their size (the accumulator's is fixed by its layout).

    Examples:
        >>> Call("log", {"loss": 0.5}, step=3)
        Call(method='log', payload={'loss': 0.5}, args=(), kwargs={}, step=3, commit=None, prepare=None, owned=False, nbytes=None)
    """

    method: str
    payload: Any = None
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    step: Any = None
    commit: bool | None = None
    prepare: Callable[[Any], Mapping[str, Any]] | None = None
    owned: bool = False
    nbytes: int | None = None


class Countdown:
    """Sets ``event`` once ``count`` deliveries are done: one call waited for, delivered to several backends.

    Examples:
        >>> import threading
        >>> done = threading.Event()
        >>> countdown = Countdown(2, done)
        >>> countdown.done(); done.is_set(), countdown.done(), done.is_set()
        (False, None, True)
    """

    def __init__(self, count: int, event: threading.Event, on_set: Callable[[], None] | None = None) -> None:
        self._left = count
        self._lock = threading.Lock()
        self._event = event
        self._on_set = on_set
        if count <= 0:
            self._set()

    def done(self) -> None:
        """Counts one delivery as made (or dropped); the last one sets the event."""
        with self._lock:
            self._left -= 1
            last = self._left == 0
        if last:
            self._set()

    def _set(self) -> None:
        self._event.set()
        if self._on_set is not None:
            self._on_set()


@dataclasses.dataclass(eq=False, slots=True)
class Delivery:
    """One backend method call waiting in that backend's lane: already fetched and normalised.

    ``args`` and ``kwargs`` are what the backend's method is called with (a
    ``log``'s flat values and its resolved ``step``); ``nbytes`` counts against
    the lane's ``max_pending_bytes``; ``countdown`` tells a waiting caller.

    Examples:
        >>> delivery = Delivery("log", ({"loss": 0.5},), {"step": 3, "commit": None}, step=3, nbytes=16)
        >>> delivery.method, delivery.step
        ('log', 3)
        >>> delivery.done()  # nobody waits for it: no countdown
    """

    method: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    step: int | None = None
    nbytes: int = 0
    countdown: Countdown | None = None

    def done(self) -> None:
        """Tells whoever waits for this delivery (``flush``, ``log_artifact``) that it was made or dropped."""
        if self.countdown is not None:
            self.countdown.done()


__all__ = ["DROPPABLE", "METHODS", "Backend", "Call", "Countdown", "Delivery"]
