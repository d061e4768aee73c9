"""The one path from every door to every backend: one queue, one order, one background thread.

[`Dispatcher.submit`][jaxtrack.pipeline.dispatcher.Dispatcher.submit] runs on
the caller's thread and returns at once: it holds the call's arrays safely
(``jaxtrack.pipeline.fetch``), waits only while a ``block`` backend of the
target or the queue itself is full, and appends the call to one
first-in-first-out queue. The dispatcher's thread takes what piled up, copies
every array to the host in one batched transfer (it is the thread that waits
for the device), finishes in-graph reductions, normalises each report once
for every backend (``jaxtrack.values.NormalizedValues``; credentials in its
text values, and in hyperparameters as they are written, are redacted there
by ``jaxtrack.redaction``), gives a call made
without a step its step, tells the guards (``jaxtrack.pipeline.taps``), and
hands each backend its delivery through the backend's own lane
(``jaxtrack.pipeline.lanes``), which it never waits for. So a value logged
later is never recorded before, or instead of, one logged earlier, whichever
door each came through.

The queue holds at most ``max_calls`` calls (``DEFAULT_MAX_QUEUED_CALLS``,
1,024) and ``max_bytes`` bytes of large values (``DEFAULT_MAX_QUEUED_BYTES``,
256 MiB; a call is large from ``LARGE_CALL_BYTES``, 64 KiB, smaller ones count
only as calls); past that the caller waits for the dispatcher (which itself
waits only for the device). Before delivering, the thread lingers (up to
``linger_secs``, ``DEFAULT_LINGER_SECS`` = 0.5 s, or until 64 calls wait) so
that reports are fetched and written in batches instead of waking it, and
taking a core and the interpreter lock from training, for each one; a waiting
caller cuts the linger short. Once the queue has been empty for
``IDLE_FLUSH_SECS`` (2 s), every backend written to since is flushed, so
buffered writes reach the disk while training pauses.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
import types
from collections.abc import Mapping
from typing import Any

from jaxtrack.pipeline.calls import DROPPABLE, Call, Countdown, Delivery
from jaxtrack.pipeline.fetch import Unfetched, fetch, hold
from jaxtrack.pipeline.health import Health
from jaxtrack.pipeline.lanes import Lane, mark_delivery_thread, on_delivery_thread, serving
from jaxtrack.pipeline.steps import StepCounter
from jaxtrack.pipeline.taps import ReportedValues
from jaxtrack.redaction import redact, redact_logged
from jaxtrack.values.convert import to_plain
from jaxtrack.values.normalize import NormalizedValues

logger = logging.getLogger("jaxtrack")

DEFAULT_MAX_QUEUED_CALLS = 1024
DEFAULT_MAX_QUEUED_BYTES = 256 * 2**20
DEFAULT_LINGER_SECS = 0.5
DEFAULT_BATCH = 64
IDLE_FLUSH_SECS = 2.0
"""Once the queue has been empty this long, backends written to since are flushed."""
LARGE_CALL_BYTES = 64 * 2**10
"""Calls at least this large are counted against ``max_bytes`` (smaller ones only against ``max_calls``)."""

_WRITES = frozenset({"log", "log_summary", "log_hyperparameters", "log_artifact"})


@dataclasses.dataclass(eq=False, slots=True)
class _Task:
    target: Any
    lanes: list[Lane]
    call: Call
    payload: Any
    nbytes: int  # reserved with each lane at the call
    counted_bytes: int  # counted against the queue's own bound (large calls only)
    countdown: Countdown | None


class Dispatcher:
    """The queue between the doors and the backends' lanes, and the thread that empties it, in order.

    ``health`` counts what each backend failed on or lost; ``reported`` is
    every value reported, for guards.

    Examples:
        >>> from jaxtrack.pipeline.calls import Call
        >>> from jaxtrack.trackers import NoopTracker
        >>> dispatcher = Dispatcher()
        >>> dispatcher.submit(NoopTracker(), Call("log", {"loss": 1.0}, step=0))
        True
        >>> dispatcher.flush()
        True
    """

    def __init__(
        self,
        *,
        max_calls: int = DEFAULT_MAX_QUEUED_CALLS,
        max_bytes: int = DEFAULT_MAX_QUEUED_BYTES,
        linger_secs: float = DEFAULT_LINGER_SECS,
    ) -> None:
        if max_calls < 1:
            raise ValueError(f"max_calls must be at least 1, got {max_calls}")
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be at least 1, got {max_bytes}")
        self.max_calls = max_calls
        self.max_bytes = max_bytes
        self.linger_secs = linger_secs
        # Deliver once this many wait: few wake-ups when reports are rare, and
        # short hold of the interpreter lock per batch when they are frequent.
        self._batch = min(DEFAULT_BATCH, max(1, max_calls // 2))
        self.health = Health()
        self.reported = ReportedValues()
        self._queue: collections.deque[_Task] = collections.deque()
        self._queued_bytes = 0  # of large calls; changed under the lock
        self._cond = threading.Condition()  # re-entrant lock: a SIGTERM handler may run while it is held
        self._thread: threading.Thread | None = None
        self._busy = False  # the thread holds tasks it took from the queue
        self._idle = False  # the thread waits for a first task
        self._urgent = False  # someone waits: deliver without lingering
        self._lanes: dict[int, Lane] = {}  # each backend's lane, by id(backend)
        self._lanes_lock = threading.RLock()
        self._steps: dict[int, tuple[Any, StepCounter]] = {}  # each target's step counter, by id(target)
        self._unflushed: dict[int, Lane] = {}  # lanes written to since their last idle flush
        self._unreadable: set[tuple[int, str]] = set()  # (target, key) whose bad value was logged once

    # -- the caller's side -------------------------------------------------------------------------

    def lane(self, backend: Any) -> Lane:
        """``backend``'s lane, made on first use (which checks its delivery options)."""
        lane = self._lanes.get(id(backend))
        if lane is not None and lane.backend is backend:
            return lane  # the common case, without the lock
        with self._lanes_lock:
            lane = self._lanes.get(id(backend))
            if lane is None or lane.backend is not backend:
                lane = Lane(backend, health=self.health, implementation=backend._implementation)
                self._lanes[id(backend)] = lane
            return lane

    def submit(
        self,
        target: Any,
        call: Call,
        *,
        wait: bool = False,
        deadline: float | None = None,
        room: bool = True,
    ) -> bool:
        """Queues ``call`` for every backend of ``target``; with ``wait``, returns once every backend made it.

        Returns ``False`` if ``deadline`` (a ``time.monotonic()`` time) came
        first. ``room=False`` queues without waiting for room: for exit paths
        and for callers that the device waits on (host callbacks).
        """
        lanes = [self.lane(backend) for backend in target.backends()]
        if wait and serving() is not None and any(lane.backend is serving() for lane in lanes):
            wait = False  # a backend's own thread cannot wait for its own lane: the call is queued, in order
        payload, nbytes = (
            hold(call.payload, owned=call.owned, nbytes=call.nbytes) if call.payload is not None else (None, 0)
        )
        if room:
            if call.method in DROPPABLE:
                for lane in lanes:
                    if lane.policy == "block" and lane.full():
                        self._hurry()  # calls the lane waits for may still be lingering here
                        lane.wait_for_room(deadline)
            self._wait_for_room(nbytes, deadline)
        for lane in lanes:
            lane.reserve(nbytes)
        done = threading.Event() if wait else None
        countdown = Countdown(len(lanes), done, self._notify) if done is not None else None
        counted = nbytes if nbytes >= LARGE_CALL_BYTES else 0
        task = _Task(target, lanes, call, payload, nbytes, counted, countdown)
        if threading.current_thread() is self._thread:
            # A call made while the dispatcher prepares another (a prepare hook that logs): route it now.
            self._deliver([task])
            return True
        if counted:
            with self._cond:
                self._queued_bytes += counted
        # The common case takes no lock: deque.append is atomic, and the thread,
        # lingering, wakes by itself. The lock (contended by the thread) is taken
        # only to start the thread, wake an idle one, or hurry a lingering one.
        # The thread marks itself idle before it looks at the queue, so a task
        # appended here is either seen by that look or followed by a wake-up.
        self._queue.append(task)
        if self._thread is None or self._idle or wait or len(self._queue) >= self._batch:
            with self._cond:
                self._ensure_thread()
                self._urgent = self._urgent or wait
                self._cond.notify_all()
        if done is not None:
            return self._wait(done, deadline)
        return True

    def _wait_for_room(self, nbytes: int, deadline: float | None) -> None:
        large = nbytes >= LARGE_CALL_BYTES
        if len(self._queue) < self.max_calls and not (large and self._queued_bytes):
            return  # the common case, without the lock
        with self._cond:
            # A call larger than the whole budget still goes once the queue holds no large call.
            while len(self._queue) >= self.max_calls or (
                large and self._queued_bytes and self._queued_bytes + nbytes > self.max_bytes
            ):
                self._hurry()
                remaining = 1.0 if deadline is None else min(deadline - time.monotonic(), 1.0)
                if remaining <= 0:
                    return
                self._cond.wait(remaining)

    def _wait(self, done: threading.Event, deadline: float | None) -> bool:
        # Waits on the condition, not the event: Condition.wait lets go of the lock even
        # when this thread holds it already (a SIGTERM handler that interrupted submit),
        # so the thread can still take the call. Completion notifies (see _notify).
        with self._cond:
            while not done.is_set():
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._ensure_thread()
                self._cond.wait(0.1 if remaining is None else min(remaining, 0.1))
        return True

    def _notify(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _hurry(self) -> None:
        """Has the thread deliver what is queued now, without lingering (someone waits for it)."""
        with self._cond:
            self._ensure_thread()
            self._urgent = True
            self._cond.notify_all()

    def flush(self, deadline: float | None = None) -> bool:
        """Waits until every call submitted so far was made by its backends; ``False`` if ``deadline`` came first."""
        if on_delivery_thread():
            return True  # called by a backend, on a lane: it cannot wait for itself
        with self._cond:
            self._urgent = True
            self._cond.notify_all()
            while self._queue or self._busy:
                self._ensure_thread()
                remaining = 1.0 if deadline is None else min(deadline - time.monotonic(), 1.0)
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return all(lane.wait_for(enqueued, deadline) for lane, enqueued in self._lane_marks())

    def _lane_marks(self) -> list[tuple[Lane, int]]:
        with self._lanes_lock:
            return [(lane, lane.enqueued) for lane in self._lanes.values()]

    def backlog(self, target: Any) -> dict[str, int]:
        """Calls still waiting for each backend of ``target`` (those with none are left out)."""
        backends = {id(backend) for backend in target.backends()}
        with self._lanes_lock:
            lanes = [lane for key, lane in self._lanes.items() if key in backends]
        return {lane.backend.name: lane.calls for lane in lanes if lane.calls}

    @property
    def pending(self) -> int:
        """Backend calls submitted and not yet made, in the queue or a lane (a call to a composite counts per backend)."""
        with self._lanes_lock:
            return sum(lane.calls for lane in self._lanes.values())

    def forget(self, target: Any) -> None:
        """Lets go of what the dispatcher keeps for ``target`` once its run ended (its step counter, idle lanes)."""
        self._steps.pop(id(target), None)
        with self._lanes_lock:
            for backend in target.backends():
                lane = self._lanes.get(id(backend))
                if lane is not None and lane.backend is backend and lane.finished and not lane.calls:
                    del self._lanes[id(backend)]

    # -- the dispatcher's thread -------------------------------------------------------------------

    def _ensure_thread(self) -> None:
        """Starts the thread if it is not running (first use, or it died); called with the lock held."""
        if self._thread is not None and self._thread.is_alive():
            return
        thread = threading.Thread(target=self._run, name="jaxtrack-dispatcher", daemon=True)
        try:
            thread.start()
        except RuntimeError:  # no new threads while the interpreter shuts down: deliver here
            self._thread = None
            batch = [self._queue.popleft() for _ in range(len(self._queue))]
            self._queued_bytes = 0
            self._deliver(batch)
            return
        self._thread = thread

    def _run(self) -> None:
        mark_delivery_thread()
        while True:
            with self._cond:
                self._idle = True
                while not self._queue:
                    woken = self._cond.wait(IDLE_FLUSH_SECS if self._unflushed else None)
                    if not woken and self._unflushed and not self._queue:
                        break  # idle: have the backends write out what they buffered
                self._idle = False
                if self._queue:
                    if self.linger_secs > 0:
                        self._cond.wait_for(self._should_deliver, timeout=self.linger_secs)
                    self._urgent = False
                    # popleft, not list() + clear(): callers append without the lock.
                    batch = [self._queue.popleft() for _ in range(len(self._queue))]
                    self._queued_bytes -= sum(task.counted_bytes for task in batch)
                    idle: list[Lane] = []
                else:
                    batch, idle, self._unflushed = [], list(self._unflushed.values()), {}
                self._busy = True
                self._cond.notify_all()  # room for callers waiting on a full queue
            try:
                self._deliver(batch)
                for lane in idle:
                    if not lane.finished:
                        lane.put(Delivery("flush", (), {}))
            except BaseException as error:
                logger.error("jaxtrack: the dispatcher failed to deliver %d call(s)", len(batch), exc_info=error)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _should_deliver(self) -> bool:
        return self._urgent or len(self._queue) >= self._batch

    def _deliver(self, batch: list[_Task]) -> None:
        """Hands every task of ``batch`` to its lanes; a task that fails is counted for its backends, never raised."""
        fetched = fetch([(task.payload, task.call.step) for task in batch])
        handed: dict[Lane, list[tuple[Delivery, int | None]]] = {}  # each lane's deliveries, put at once
        for made, (task, (payload, step)) in enumerate(zip(batch, fetched, strict=True), 1):
            try:
                if isinstance(step, Unfetched):
                    raise step.error
                deliveries = self._deliveries(task, payload, step)
            except BaseException as error:  # noqa: BLE001 - a bad call must not stop the others
                for lane in task.lanes:
                    lane.release(task.nbytes)
                    self.health.record_failure(lane.backend, task.call.method, _plain_step(step), error)
                    if task.countdown is not None:
                        task.countdown.done()
                continue
            for lane, delivery in zip(task.lanes, deliveries, strict=True):
                handed.setdefault(lane, []).append((delivery, task.nbytes))
                if task.call.method in _WRITES:
                    self._unflushed[id(lane)] = lane
                elif task.call.method == "finish":
                    self._unflushed.pop(id(lane), None)
            if made % 8 == 0:
                # Let the training thread take the interpreter lock to dispatch
                # now and then, instead of waiting for the whole batch.
                time.sleep(0)
        for lane, entries in handed.items():
            lane.put_many(entries)

    def _deliveries(self, task: _Task, payload: Any, step: Any) -> list[Delivery]:
        """One delivery per backend of the task: values fetched, prepared and normalised once for all."""
        call, lanes, countdown = task.call, task.lanes, task.countdown
        method = call.method
        if call.prepare is not None:
            payload = call.prepare(payload)
        if method in ("log", "log_summary"):
            # Credentials in text values are redacted here, once for every backend (positional: a keyword costs ~0.1 µs).
            values = NormalizedValues(self._readable(task, payload), redact_logged)
            for key, error in values.failed:
                self._unreadable_value(task, key, error)
            resolved = None
            if method == "log":
                resolved = self._resolve_step(task.target, step, call.commit)
                self.reported.update(values, resolved)
            kwargs = {"step": resolved, "commit": call.commit} if method == "log" else {}
            return [
                Delivery(method, (values.for_bins(lane.histogram_bins),), kwargs, resolved, values.nbytes, countdown)
                for lane in lanes
            ]
        if method == "log_hyperparameters":
            # The door redacted them as given; this catches what only their plain form shows (an object's repr).
            plain = types.MappingProxyType(redact({key: to_plain(value) for key, value in payload.items()}))
            return [Delivery(method, (plain,), {}, None, 0, countdown) for _ in lanes]
        return [Delivery(method, call.args, call.kwargs, None, 0, countdown) for _ in lanes]

    def _readable(self, task: _Task, payload: Mapping[str, Any]) -> Mapping[str, Any]:
        """``payload`` without the values that could not be fetched (each reported once)."""
        if not any(isinstance(value, Unfetched) for value in payload.values()):
            return payload
        readable = {}
        for key, value in payload.items():
            if isinstance(value, Unfetched):
                self._unreadable_value(task, key, value.error)
            else:
                readable[key] = value
        return readable

    def _unreadable_value(self, task: _Task, key: str, error: BaseException) -> None:
        for lane in task.lanes:
            self.health.record_drop(lane.backend, "unreadable")
        if (id(task.target), key) not in self._unreadable:
            self._unreadable.add((id(task.target), key))
            logger.error(
                "jaxtrack: the value of %r could not be read (%s: %s); it is left out, the report's other values are kept",
                key,
                type(error).__name__,
                error,
            )

    def _resolve_step(self, target: Any, step: Any, commit: bool | None) -> int:
        """The step of a ``log`` call to ``target`` (``step=None``: after the last one), remembered for the next.

        Only this thread resolves steps, in the order calls were made, so every
        backend of a target records a call at the same step.
        """
        entry = self._steps.get(id(target))
        if entry is None or entry[0] is not target:
            entry = self._steps[id(target)] = (target, StepCounter(target.resumed_step))
        return entry[1].resolve(step, commit)


def _plain_step(step: Any) -> int | None:
    try:
        return None if step is None else int(step)
    except (TypeError, ValueError):
        return None


__all__ = [
    "DEFAULT_LINGER_SECS",
    "DEFAULT_MAX_QUEUED_BYTES",
    "DEFAULT_MAX_QUEUED_CALLS",
    "IDLE_FLUSH_SECS",
    "LARGE_CALL_BYTES",
    "Dispatcher",
]
