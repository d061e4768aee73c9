"""Each backend's own queue and thread, so a backend that is slow, raises or hangs costs only itself.

The dispatcher hands a backend its deliveries (fetched and normalised once
for all backends) through its [`Lane`][jaxtrack.pipeline.lanes.Lane], which
calls the backend's methods in order on its own thread. Handing over never
waits: what happens once a lane holds ``max_pending`` calls or
``max_pending_bytes`` bytes is the backend's ``when_full`` policy (attributes
of ``jaxtrack.Tracker``):

- ``"block"`` (the default, and the local store's and TensorBoard's): nothing
  is dropped; the next ``log`` made to the backend waits at the call until
  the lane has room (the training loop waits for its slowest such backend).
  A backend that takes nothing for ``block_timeout`` seconds is declared hung,
  with a ``jaxtrack.DataLossWarning``: the training loop goes on, and the
  reports made to it until it takes calls again are counted as lost.
- ``"drop_oldest"`` (W&B, a remote service): the oldest queued ``log`` call is
  dropped to make room, counted, and warned about once.

Summaries, hyperparameters, artifacts, flushes and ``finish`` are never
dropped. A backend that raises (any exception, ``SystemExit`` included) is
counted and its lane goes on; a lane whose thread died is restarted by the
next delivery.

The defaults, which ``jaxtrack.Tracker`` takes as its class attributes:
``DEFAULT_MAX_PENDING`` (10,000 calls) and ``DEFAULT_MAX_PENDING_BYTES``
(256 MiB of values) bound a lane, and ``DEFAULT_BLOCK_TIMEOUT_SECS`` (60 s)
is how long a full ``block`` backend may take nothing before it is declared
hung. ``WHEN_FULL_POLICIES`` are the valid ``when_full`` values, ``"block"``
and ``"drop_oldest"``; [`check_delivery_options`][jaxtrack.pipeline.lanes.check_delivery_options]
refuses anything else when the lane is made (or at ``jaxtrack.current_tracker(t)``).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from jaxtrack.errors import DataLossWarning, warn
from jaxtrack.pipeline.calls import DROPPABLE, Delivery
from jaxtrack.pipeline.health import Health

logger = logging.getLogger("jaxtrack")

WHEN_FULL_POLICIES = ("block", "drop_oldest")
DEFAULT_MAX_PENDING = 10_000
DEFAULT_MAX_PENDING_BYTES = 256 * 2**20
DEFAULT_BLOCK_TIMEOUT_SECS = 60.0

_delivering = threading.local()


def on_delivery_thread() -> bool:
    """Whether this thread is jaxtrack's own (a lane calling a backend, or the dispatcher).

    A flush called there returns at once: a lane cannot wait for itself.

    Examples:
        >>> on_delivery_thread()  # the caller's thread
        False
    """
    return getattr(_delivering, "active", False)


def serving() -> Any:
    """The backend whose lane this thread is (``None`` elsewhere): its own calls to itself are made at once.

    The front door asks it, so a backend's method calling another of its
    methods (``log_summary`` calling ``log``, an override calling ``super()``)
    is a plain call, not a new delivery queued behind the current one.

    Examples:
        >>> serving() is None  # not a lane's thread
        True
    """
    return getattr(_delivering, "backend", None)


def mark_delivery_thread(backend: Any = None) -> None:
    """Marks the calling thread as one of jaxtrack's own, the lane of ``backend`` if given.

    Called first thing by the dispatcher's and each lane's thread; the mark
    lasts as long as the thread.

    Examples:
        >>> import threading
        >>> seen = []
        >>> def lane_thread():
        ...     mark_delivery_thread("backend")
        ...     seen.append((on_delivery_thread(), serving()))
        >>> thread = threading.Thread(target=lane_thread)
        >>> thread.start(); thread.join()
        >>> seen, on_delivery_thread(), serving()  # the mark is the thread's own
        ([(True, 'backend')], False, None)
    """
    _delivering.active = True
    _delivering.backend = backend


def check_delivery_options(backend: Any) -> None:
    """Raises ``ValueError`` naming ``backend`` if its ``when_full``, ``max_pending``, ``max_pending_bytes`` or ``block_timeout`` is not valid.

    Examples:
        >>> from jaxtrack.trackers import NoopTracker
        >>> tracker = NoopTracker()
        >>> tracker.when_full = "drop_newest"
        >>> check_delivery_options(tracker)
        Traceback (most recent call last):
        ...
        ValueError: tracker 'noop': when_full must be one of 'block', 'drop_oldest', got 'drop_newest'
    """
    name = getattr(backend, "name", backend)
    policy = getattr(backend, "when_full", "block")
    if policy not in WHEN_FULL_POLICIES:
        raise ValueError(
            f"tracker {name!r}: when_full must be one of {', '.join(map(repr, WHEN_FULL_POLICIES))}, got {policy!r}"
        )
    for option in ("max_pending", "max_pending_bytes"):
        value = getattr(backend, option, 1)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"tracker {name!r}: {option} must be a positive integer, got {value!r}")
    timeout = getattr(backend, "block_timeout", DEFAULT_BLOCK_TIMEOUT_SECS)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ValueError(f"tracker {name!r}: block_timeout must be a positive number of seconds, got {timeout!r}")


class Lane:
    """One backend's queue of deliveries and the thread that makes them, in order.

    ``implementation(method)`` gives the callable that runs a method of the
    backend itself (not its front door).

    Examples:
        >>> from jaxtrack.pipeline.calls import Delivery
        >>> from jaxtrack.pipeline.health import Health
        >>> class Printer:
        ...     name = "printer"
        ...     def log(self, metrics, *, step=None, commit=None):
        ...         print(step, dict(metrics))
        >>> printer = Printer()
        >>> lane = Lane(printer, health=Health(), implementation=lambda method: getattr(printer, method))
        >>> lane.put(Delivery("log", ({"loss": 0.5},), {"step": 3}, step=3))
        >>> lane.wait_idle(timeout=10)
        3 {'loss': 0.5}
        True
    """

    def __init__(self, backend: Any, *, health: Health, implementation: Callable[[str], Callable[..., Any]]) -> None:
        check_delivery_options(backend)
        self.backend = backend
        self.policy: str = getattr(backend, "when_full", "block")
        self.max_calls = int(getattr(backend, "max_pending", DEFAULT_MAX_PENDING))
        self.max_bytes = int(getattr(backend, "max_pending_bytes", DEFAULT_MAX_PENDING_BYTES))
        self.block_timeout = float(getattr(backend, "block_timeout", DEFAULT_BLOCK_TIMEOUT_SECS))
        self.histogram_bins: int | None = getattr(backend, "histogram_bins", 64)
        self.calls = 0
        """Calls submitted for this backend and not made (or dropped) yet, those still in the dispatcher included."""
        self.bytes = 0
        """About how many bytes those calls hold."""
        self.hung = False
        """A ``block`` backend that took nothing for ``block_timeout`` seconds: its reports are dropped until it catches up."""
        self.finished = False
        """``finish`` was delivered: later calls are counted as lost, not made."""
        self.enqueued = 0
        """Deliveries put in the queue so far (a flush waits until as many are ``completed``)."""
        self.completed = 0
        self.progress_at = time.monotonic()
        self._health = health
        self._implementation = implementation
        self._methods: dict[str, Callable[..., Any]] = {}
        self._queue: collections.deque[Delivery] = collections.deque()
        self._queued_bytes = 0
        self._cond = threading.Condition()  # re-entrant lock: a SIGTERM handler may run while it is held
        self._thread: threading.Thread | None = None
        self._dropped_behind = 0
        self._dropped_hung = 0

    # -- the caller's side -------------------------------------------------------------------------

    def reserve(self, nbytes: int) -> None:
        """Counts a call submitted for this backend (made at the call, so bounds hold before it is routed)."""
        with self._cond:
            if not self.calls:
                self.progress_at = time.monotonic()  # the backend is busy from now, not since it last worked
            self.calls += 1
            self.bytes += nbytes

    def release(self, nbytes: int) -> None:
        """Un-counts a reserved call that will not be put (it failed before it was routed)."""
        with self._cond:
            self.calls -= 1
            self.bytes -= nbytes
            self._cond.notify_all()

    # -- the dispatcher's side ---------------------------------------------------------------------

    def put(self, delivery: Delivery, reserved: int | None = None) -> None:
        """Queues ``delivery`` (reserved with ``reserved`` bytes, or not yet counted); never waits.

        A full ``drop_oldest`` lane drops its oldest ``log`` calls to make room;
        a ``log`` to a hung or finished backend is dropped and counted.
        """
        self.put_many([(delivery, reserved)])

    def put_many(self, entries: list[tuple[Delivery, int | None]]) -> None:
        """[`put`][jaxtrack.pipeline.lanes.Lane.put] of each ``(delivery, reserved)``, in order, under one lock."""
        settled: list[Delivery] = []  # dropped: their waiters are told once the lock is let go
        with self._cond:
            for delivery, reserved in entries:
                if reserved is None:
                    if not self.calls:
                        self.progress_at = time.monotonic()
                    self.calls += 1
                    self.bytes += delivery.nbytes
                else:
                    self.bytes += delivery.nbytes - reserved  # the values as normalised, not as logged
                if self.finished or (delivery.method in DROPPABLE and self.hung):
                    if delivery.method in DROPPABLE or delivery.method not in ("finish", "flush", "set_status"):
                        self._health.record_drop(self.backend, "finished" if self.finished else "hung")
                        self._dropped_hung += not self.finished
                    self.calls -= 1
                    self.bytes -= delivery.nbytes
                    settled.append(delivery)
                    continue
                if delivery.method in DROPPABLE and self.policy == "drop_oldest":
                    while self._over(delivery.nbytes) and (dropped := self._drop_oldest()) is not None:
                        settled.append(dropped)
                self._queue.append(delivery)
                self._queued_bytes += delivery.nbytes
                self.enqueued += 1
                if delivery.method == "finish":
                    self.finished = True
            if self._queue:
                self._start()
                self._cond.notify_all()
        for done in settled:
            done.done()

    def _over(self, extra: int) -> bool:
        """Whether the queue has no room for one more call of ``extra`` bytes (``drop_oldest``)."""
        return len(self._queue) >= self.max_calls or (
            self._queued_bytes > 0 and self._queued_bytes + extra > self.max_bytes
        )

    def _drop_oldest(self) -> Delivery | None:
        """Drops the oldest queued ``log`` call (counted, warned about once); the dropped delivery, if any."""
        for index, queued in enumerate(self._queue):
            if queued.method in DROPPABLE:
                del self._queue[index]
                self._queued_bytes -= queued.nbytes
                self._settle(queued)
                self._dropped_behind += 1
                self._health.record_drop(self.backend, "behind")
                if self._dropped_behind == 1:
                    logger.warning(
                        "jaxtrack: tracker %r is falling behind (%d calls queued); its oldest reports are dropped "
                        "to keep memory bounded, and counted (its run's end reports how many)",
                        self.backend.name,
                        len(self._queue),
                    )
                return queued
        return None

    def _start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        thread = threading.Thread(target=self._run, name=f"jaxtrack-{self.backend.name}", daemon=True)
        try:
            thread.start()
        except RuntimeError:  # no new threads while the interpreter shuts down: make the calls here
            self._thread = None
            self._drain_here()
            return
        self._thread = thread

    @property
    def queued(self) -> int:
        """Deliveries waiting in the lane itself (routed, not yet taken by its thread)."""
        return len(self._queue)

    def full(self) -> bool:
        """Whether the lane holds ``max_pending`` calls or ``max_pending_bytes`` bytes (read without the lock)."""
        return self.calls >= self.max_calls or self.bytes >= self.max_bytes

    def wait_for_room(self, deadline: float | None = None) -> None:
        """Waits until the lane has room, or it is declared hung (it took nothing for ``block_timeout`` s), or ``deadline``."""
        with self._cond:
            while self.full() and not self.hung and not self.finished:
                if self._thread is None or not self._thread.is_alive():
                    self._start()
                now = time.monotonic()
                idle = now - self.progress_at
                if idle >= self.block_timeout:
                    self._declare_hung()
                    return
                wait = min(self.block_timeout - idle, 1.0)
                if deadline is not None:
                    if now >= deadline:
                        return
                    wait = min(wait, deadline - now)
                self._cond.wait(wait)

    def _declare_hung(self) -> None:
        self.hung = True
        warn(
            f"jaxtrack: tracker {self.backend.name!r} has taken no call for {self.block_timeout:.0f} s with "
            f"{self.calls} queued; training goes on, and its reports are dropped (and counted) until it catches up",
            DataLossWarning,
        )

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Waits until every delivery queued so far was made; ``False`` if ``timeout`` ran out first."""
        with self._cond:
            target = self.enqueued
        return self.wait_for(target, None if timeout is None else time.monotonic() + timeout)

    def wait_for(self, enqueued: int, deadline: float | None) -> bool:
        """Waits until the first ``enqueued`` deliveries were made (or dropped); ``False`` at ``deadline``."""
        with self._cond:
            while self.completed < enqueued:
                if self._thread is None or not self._thread.is_alive():
                    self._start()
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(1.0 if remaining is None else min(remaining, 1.0))
        return True

    # -- the lane's thread -------------------------------------------------------------------------

    def _run(self) -> None:
        mark_delivery_thread(self.backend)
        try:
            while True:
                with self._cond:
                    while not self._queue:
                        if self.finished:
                            # The backend is finished: its thread ends rather than hold it alive.
                            self._thread = None
                            return
                        self._cond.wait()
                    # What is queued now, taken at once (one lock, not one per call): calls
                    # arriving meanwhile stay queued, where drop_oldest can still drop them.
                    batch = [self._queue.popleft() for _ in range(len(self._queue))]
                    self._queued_bytes = 0
                self._make_all(batch)
        except BaseException as error:
            logger.error("jaxtrack: the lane of tracker %r stopped; it restarts", self.backend.name, exc_info=error)
            with self._cond:
                self._thread = None

    def _drain_here(self) -> None:
        batch = [self._queue.popleft() for _ in range(len(self._queue))]
        self._queued_bytes = 0
        self._make_all(batch)

    def _make_all(self, batch: list[Delivery]) -> None:
        """Makes ``batch``'s calls in order, counting them as made eight at a time (one lock, one wake-up)."""
        made: list[Delivery] = []
        for delivery in batch:
            self._make(delivery)
            made.append(delivery)
            if len(made) == 8:
                self._made(made)
                made = []
                time.sleep(0)  # let the training thread take the interpreter lock now and then
        if made:
            self._made(made)

    def _make(self, delivery: Delivery) -> None:
        try:
            method = self._methods.get(delivery.method)
            if method is None:
                method = self._methods[delivery.method] = self._implementation(delivery.method)
            method(*delivery.args, **delivery.kwargs)
        except BaseException as error:  # noqa: BLE001 - SystemExit too: a backend's failure stays with it
            self._health.record_failure(self.backend, delivery.method, delivery.step, error)

    def _made(self, deliveries: list[Delivery]) -> None:
        """Counts ``deliveries`` as made: room for callers waiting on a full lane, and their waiters told."""
        with self._cond:
            for delivery in deliveries:
                self._settle(delivery)
            self.progress_at = time.monotonic()
            if self.hung and not self.full():
                self.hung = False
                logger.warning(
                    "jaxtrack: tracker %r takes calls again; %d report(s) were dropped while it hung",
                    self.backend.name,
                    self._dropped_hung,
                )
            self._cond.notify_all()
        for delivery in deliveries:
            delivery.done()

    def _settle(self, delivery: Delivery) -> None:
        """Counts ``delivery`` as made or dropped (its waiter is told by the caller); with the lock held."""
        self.calls -= 1
        self.bytes -= delivery.nbytes
        self.completed += 1

    def __repr__(self) -> str:
        return f"Lane({self.backend!r}, calls={self.calls}, hung={self.hung}, finished={self.finished})"


__all__ = [
    "DEFAULT_BLOCK_TIMEOUT_SECS",
    "DEFAULT_MAX_PENDING",
    "DEFAULT_MAX_PENDING_BYTES",
    "WHEN_FULL_POLICIES",
    "Lane",
    "check_delivery_options",
    "mark_delivery_thread",
    "on_delivery_thread",
    "serving",
]
