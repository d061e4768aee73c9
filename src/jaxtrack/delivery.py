"""Per-backend delivery: each backend gets its own queue and thread, so one that hangs holds up only itself.

The reporter (``jaxtrack.reporter``) fetches every report to the host once,
then hands each backend its calls through a ``BackendLane``. A backend
that raises is counted and the others go on; one that is slow or hangs fills
only its own lane. What happens when a lane is full is the backend's
``when_full`` policy (an attribute of ``jaxtrack.Tracker``):

- ``"block"`` (the default, and the local store's): nothing is dropped; the
  reporter waits for room, and once the reporter's own queue is full, so does
  the training loop. A backend on local disk only fills its lane if the disk
  stalls, and then waiting is better than losing data.
- ``"drop_oldest"`` (W&B, a remote service): the oldest queued ``log`` call is
  dropped to make room, counted, and warned about once; summaries,
  hyperparameters, artifacts and ``finish`` are never dropped.

A lane queues at most the backend's ``max_pending`` calls (plus the batch its
thread has taken and is making), which bounds memory. The thread takes what is
queued in one go, so a busy backend costs one lock per batch, not per call.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from jaxtrack.trackers.base import Tracker

logger = logging.getLogger("jaxtrack")

WHEN_FULL_POLICIES = ("block", "drop_oldest")
DEFAULT_LANE_CAPACITY = 10_000

_delivering = threading.local()


def on_delivery_thread() -> bool:
    """Whether this thread is a lane calling a backend (where waiting for lanes would wait on itself)."""
    return getattr(_delivering, "active", False)


def check_delivery_options(tracker: Tracker) -> None:
    """Raises ``ValueError`` naming ``tracker`` if its ``when_full`` or ``max_pending`` is not valid."""
    policy = getattr(tracker, "when_full", "block")
    if policy not in WHEN_FULL_POLICIES:
        raise ValueError(
            f"tracker {tracker.name!r}: when_full must be one of {', '.join(map(repr, WHEN_FULL_POLICIES))}, got {policy!r}"
        )
    capacity = getattr(tracker, "max_pending", DEFAULT_LANE_CAPACITY)
    if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
        raise ValueError(f"tracker {tracker.name!r}: max_pending must be a positive integer, got {capacity!r}")


class Countdown:
    """Sets ``event`` once ``count`` calls are done: one caller's call, delivered to several backends."""

    def __init__(self, count: int, event: threading.Event, on_set: Callable[[], None] | None = None) -> None:
        self._left = count
        self._lock = threading.Lock()
        self._event = event
        self._on_set = on_set
        if count == 0:
            self._set()

    def done(self) -> None:
        with self._lock:
            self._left -= 1
            last = self._left == 0
        if last:
            self._set()

    def _set(self) -> None:
        self._event.set()
        if self._on_set is not None:
            self._on_set()


@dataclasses.dataclass
class Call:
    """One backend method call, waiting in a lane."""

    method: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    on_done: Countdown | None = None


class BackendLane:
    """One backend's queue of calls and the thread that makes them, in order.

    >>> from jaxtrack.trackers import NoopTracker
    >>> lane = BackendLane(NoopTracker(), on_error=print)
    >>> lane.put([Call("log", ({"loss": 1.0},), {"step": 0})])
    >>> lane.wait(timeout=10)
    True
    """

    def __init__(
        self,
        tracker: Tracker,
        *,
        on_error: Callable[[Tracker, str, BaseException], None],
        on_drop: Callable[[Tracker], None] | None = None,
    ) -> None:
        check_delivery_options(tracker)
        self.tracker = tracker
        self.policy = getattr(tracker, "when_full", "block")
        self.capacity = int(getattr(tracker, "max_pending", DEFAULT_LANE_CAPACITY))
        self.dropped = 0
        """``log`` calls dropped because the lane was full (``drop_oldest`` only)."""
        self.retired = False
        """The backend finished and its thread ended (a later call starts a new one)."""
        self._on_error = on_error
        self._on_drop = on_drop
        self._queue: collections.deque[Call] = collections.deque()
        self._cond = threading.Condition()
        self._in_flight = 0  # calls the thread took from the queue and has not made yet
        self._finished_last = False
        self._thread: threading.Thread | None = None

    def put(self, calls: list[Call]) -> None:
        """Queues ``calls``; waits for room under ``block``, drops the oldest ``log`` calls under ``drop_oldest``."""
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=f"jaxtrack-{self.tracker.name}", daemon=True)
                self._thread.start()
            self.retired = False
            for call in calls:
                while len(self._queue) >= self.capacity:
                    if self.policy == "drop_oldest" and self._drop_oldest_log():
                        break
                    self._cond.notify_all()  # the thread may be waiting for the calls already queued
                    self._cond.wait()
                self._queue.append(call)
            self._cond.notify_all()

    def _drop_oldest_log(self) -> bool:
        for index, queued in enumerate(self._queue):
            if queued.method == "log":
                del self._queue[index]
                self.dropped += 1
                if self._on_drop is not None:
                    self._on_drop(self.tracker)
                if self.dropped == 1:
                    logger.warning(
                        "jaxtrack: tracker %r is falling behind (%d calls queued); its oldest reports are dropped "
                        "to keep memory bounded, and counted (finish() reports how many)",
                        self.tracker.name,
                        self.capacity,
                    )
                if queued.on_done is not None:
                    queued.on_done.done()
                return True
        return False

    @property
    def pending(self) -> int:
        """Calls queued or being made."""
        with self._cond:
            return len(self._queue) + self._in_flight

    def wait(self, timeout: float | None = None) -> bool:
        """Waits until every queued call has run; ``False`` if ``timeout`` ran out first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._queue or self._in_flight:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def _run(self) -> None:
        _delivering.active = True
        made = 0
        while True:
            with self._cond:
                if made and self._finished_last and not self._queue:
                    # The backend is finished: its thread ends rather than wait forever.
                    self.retired = True
                    self._thread = None
                    return
                while not self._queue:
                    self._cond.wait()
                # What is queued now, taken at once (one lock, not one per call): calls
                # arriving meanwhile stay queued, where drop_oldest can still drop them.
                batch = [self._queue.popleft() for _ in range(len(self._queue))]
                self._in_flight = len(batch)
            for call in batch:
                try:
                    self._make(call)
                finally:
                    self._in_flight -= 1  # read under the lock by pending/wait; an int store is atomic
                self._finished_last = call.method == "finish"
                made += 1
                if made % 8 == 0:
                    time.sleep(0)  # let the training thread take the interpreter lock now and then
            with self._cond:
                self._cond.notify_all()  # room for a reporter waiting on a full lane; waiters for idle

    def _make(self, call: Call) -> None:
        try:
            getattr(self.tracker, call.method)(*call.args, **call.kwargs)
        except Exception as error:  # noqa: BLE001 - a backend's failure must not stop its lane
            self._on_error(self.tracker, call.method, error)
        finally:
            if call.on_done is not None:
                call.on_done.done()

    def __repr__(self) -> str:
        return f"BackendLane({self.tracker!r}, pending={self.pending}, dropped={self.dropped})"


__all__ = [
    "DEFAULT_LANE_CAPACITY",
    "WHEN_FULL_POLICIES",
    "BackendLane",
    "Call",
    "Countdown",
    "check_delivery_options",
    "on_delivery_thread",
]
