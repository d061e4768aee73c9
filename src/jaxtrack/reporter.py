"""The background worker that hands reports to trackers, off the training thread.

Every module-level call (``jaxtrack.log``, ``log_summary``, the reports of
in-graph metrics, ...) becomes a task in one first-in-first-out queue, so a
backend receives calls in the order they were made, with their steps. The
worker copies the JAX arrays of everything that has piled up to the host in
one batched transfer (it is the thread that waits for the device), then hands
each backend its calls through its own queue and thread
(``jaxtrack.delivery``). A slow backend therefore never holds up training
nor the other backends; a backend that raises is reported once by name,
counted, and the others go on.

The queue is bounded (``max_pending`` tasks): when it is full the caller
waits for room rather than drop data. Before delivering, the worker lingers
(up to ``linger_secs``, or until 64 reports wait) so that reports are fetched
and written in batches instead of waking it, and taking a core and the
interpreter lock from training, for each one; ``flush`` and waiting calls cut
the linger short.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from jaxtrack.delivery import BackendLane, Call, Countdown, on_delivery_thread
from jaxtrack.multihost import replicate_sharded
from jaxtrack.trackers.base import CompositeTracker, Tracker
from jaxtrack.values import HOST_SCALAR_TYPES

logger = logging.getLogger("jaxtrack")

DEFAULT_MAX_PENDING = 1024
DEFAULT_LINGER_SECS = 0.5
DEFAULT_BATCH = 64
IDLE_FLUSH_SECS = 2.0
"""Once the queue has been empty this long, trackers written to since are flushed."""


@dataclasses.dataclass
class _Task:
    tracker: Tracker
    method: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    done: threading.Event | None = None
    prepare: Callable[..., tuple[Any, ...]] | None = None


@dataclasses.dataclass
class DeliveryErrors:
    """Calls a backend raised on, by tracker name and method (``{("wandb", "log"): 3}``), and calls dropped."""

    counts: dict[tuple[str, str], int] = dataclasses.field(default_factory=dict)
    last: dict[tuple[str, str], BaseException] = dataclasses.field(default_factory=dict)
    dropped: dict[str, int] = dataclasses.field(default_factory=dict)
    """``log`` calls dropped by a ``drop_oldest`` backend that fell behind, by tracker name."""
    total: int = 0
    """Failures so far, of every backend (so a caller can tell whether there are new ones)."""
    by_tracker: dict[int, dict[str, int]] = dataclasses.field(default_factory=dict)
    """Failures (by method) and drops (``"dropped"``) of each tracker instance, by ``id``, until it finishes."""
    _lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, repr=False, compare=False)

    def record(self, tracker: Tracker, method: str, error: BaseException) -> bool:
        """Counts a failure; ``True`` if it is this tracker's first in this method."""
        with self._lock:
            key = (tracker.name, method)
            self.counts[key] = self.counts.get(key, 0) + 1
            self.last[key] = error
            self.total += 1
            own = self.by_tracker.setdefault(id(tracker), {})
            own[method] = own.get(method, 0) + 1
            return own[method] == 1

    def record_drop(self, tracker: Tracker) -> None:
        with self._lock:
            self.dropped[tracker.name] = self.dropped.get(tracker.name, 0) + 1
            own = self.by_tracker.setdefault(id(tracker), {})
            own["dropped"] = own.get("dropped", 0) + 1

    def take(self, tracker: Tracker) -> dict[str, int]:
        """What ``tracker`` (one instance) failed on or dropped, forgotten once taken (when it finishes)."""
        with self._lock:
            return self.by_tracker.pop(id(tracker), {})

    def __bool__(self) -> bool:
        return bool(self.counts)

    def __str__(self) -> str:
        return "; ".join(
            f"{name}.{method} failed {count} time(s), last: {type(self.last[name, method]).__name__}: {self.last[name, method]}"
            for (name, method), count in self.counts.items()
        )


class ReportedValues:
    """Every metric value logged through the reporter, as the backends received it, in order.

    Appended on the reporter's thread when it hands a ``log`` call to a
    tracker (host values, already fetched), so callbacks such as
    ``jaxtrack.callbacks.TerminateOnNaN`` act on every reported value
    without another device sync. Readers keep the ``version`` they have read
    up to. Numbers are kept as they are; of an array only whether all its
    elements are finite. The log holds the last ``capacity`` values.
    """

    def __init__(self, capacity: int = 100_000) -> None:
        self._lock = threading.Lock()
        self._log: collections.deque[tuple[int, str, int | None, Any]] = collections.deque(maxlen=capacity)
        self.version = 0

    def update(self, metrics: Any, step: int | None) -> None:
        from jaxtrack.values import flatten

        try:
            flat = flatten(metrics)
        except (TypeError, ValueError):
            return  # the tracker call reports it
        entries = [(key, _summary_of(value)) for key, value in flat.items()]
        with self._lock:
            for key, value in entries:
                if value is not _SKIP:
                    self.version += 1
                    self._log.append((self.version, key, step, value))

    def since(self, version: int) -> tuple[list[tuple[str, int | None, Any]], int]:
        """``(key, step, value)`` of every value reported after ``version``, in order, and the version now.

        Both are taken under one lock, so a reader that keeps the returned
        version sees each value exactly once. The walk goes back from the
        newest entry, so a read costs the new values, not the whole log.
        """
        fresh = []
        with self._lock:
            for v, key, step, value in reversed(self._log):
                if v <= version:
                    break
                fresh.append((key, step, value))
            now = self.version
        fresh.reverse()
        return fresh, now

    def reader(self) -> ReportedValuesReader:
        """A cursor that returns, at each read, the values reported since its last read."""
        return ReportedValuesReader(self)


class ReportedValuesReader:
    """Reads a ``ReportedValues`` log from where it was made, each value once."""

    def __init__(self, values: ReportedValues) -> None:
        self._values = values
        self._seen = values.version  # values reported before the reader existed are not its business

    def read(self) -> list[tuple[str, int | None, Any]]:
        """``(key, step, value)`` of every value reported since the last read, in order."""
        if self._values.version == self._seen:  # the common case, without the lock
            return []
        fresh, self._seen = self._values.since(self._seen)
        return fresh


_SKIP = object()


def _summary_of(value: Any) -> Any:
    """A number as is; an array as ``NonFinite`` if it holds NaN/Inf, else skipped; other values skipped."""
    if type(value) in HOST_SCALAR_TYPES:
        return value.item() if isinstance(value, np.generic) else value
    if isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, (np.ndarray, np.generic)) and value.dtype.kind in "biuf":
        if value.ndim == 0:
            return value.item()
        count = int((~np.isfinite(value)).sum()) if value.dtype.kind == "f" else 0
        return NonFinite(count) if count else _SKIP
    return _SKIP


@dataclasses.dataclass(frozen=True)
class NonFinite:
    """An array value with ``count`` NaN or infinite elements (as ``ReportedValues`` records it)."""

    count: int


class Reporter:
    """A worker thread that hands calls to the trackers (each through its own lane) in submission order.

    >>> from jaxtrack.trackers import NoopTracker
    >>> reporter = Reporter()
    >>> reporter.submit(NoopTracker(), "log", {"loss": 1.0}, step=0)
    True
    >>> reporter.flush()
    True
    >>> reporter.close()
    True
    """

    def __init__(self, *, max_pending: int = DEFAULT_MAX_PENDING, linger_secs: float = DEFAULT_LINGER_SECS) -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending must be at least 1, got {max_pending}")
        self.max_pending = max_pending
        self.linger_secs = linger_secs
        # Deliver once this many wait: few wake-ups when reports are rare, and
        # short hold of the interpreter lock per batch when they are frequent.
        self._batch = min(DEFAULT_BATCH, max(1, max_pending // 2))
        self._urgent = False  # someone waits: deliver without lingering
        self.errors = DeliveryErrors()
        self.reported = ReportedValues()
        self._queue: collections.deque[_Task] = collections.deque()
        self._cond = threading.Condition()
        self._busy = False  # the worker holds tasks it took from the queue
        self._closed = False
        self._thread: threading.Thread | None = None
        self._unflushed: dict[int, Tracker] = {}  # trackers written to since their last idle flush
        self._lanes: dict[int, BackendLane] = {}  # each backend's own queue and thread, by id(tracker)
        self._lanes_lock = threading.RLock()  # re-entrant: a SIGTERM handler may run while it is held
        self._idle = False  # the worker waits for a first task

    def submit(
        self,
        tracker: Tracker,
        method: str,
        *args: Any,
        wait: bool = False,
        timeout: float | None = None,
        may_block: bool = True,
        prepare: Callable[..., tuple[Any, ...]] | None = None,
        **kwargs: Any,
    ) -> bool:
        """Queues ``tracker.method(*args, **kwargs)``; with ``wait=True``, returns once it ran.

        Returns ``False`` if ``wait`` ran out of ``timeout`` seconds first (a
        backend that hangs), else ``True``.

        ``prepare``, if given, turns the arguments (once copied to the host)
        into the ones the tracker gets. ``may_block=False`` queues even past
        ``max_pending``: for callers that the device waits on (host
        callbacks), where waiting could deadlock.
        """
        if threading.current_thread() is self._thread or on_delivery_thread():
            # A tracker logging from inside a tracker call: queueing would wait on ourselves.
            args = prepare(*_fetch([args])[0]) if prepare is not None else args
            getattr(tracker, method)(*args, **kwargs)
            return True
        # Arrays sharded over other hosts are gathered here, on the calling thread,
        # where every process dispatches the collective in step with its training
        # (see jaxtrack.multihost); the worker then reads only local copies.
        args = replicate_sharded(args)
        task = _Task(tracker, method, args, kwargs, threading.Event() if wait else None, prepare)
        if self._closed:
            raise RuntimeError("the jaxtrack reporter is closed (the process is exiting)")
        if may_block and len(self._queue) >= self.max_pending:
            with self._cond:
                while len(self._queue) >= self.max_pending and not self._closed:
                    self._cond.wait()
        # The common case takes no lock: deque.append is atomic, and the worker,
        # lingering, wakes by itself. The lock (contended by the worker) is taken
        # only to start the worker, wake an idle one, or hurry a lingering one.
        # The worker marks itself idle before it looks at the queue, so a task
        # appended here is either seen by that look or followed by a wake-up.
        self._queue.append(task)
        if self._thread is None or self._idle or wait or len(self._queue) >= self._batch:
            with self._cond:
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(target=self._run, name="jaxtrack-reporter", daemon=True)
                    self._thread.start()
                self._urgent = self._urgent or wait
                self._cond.notify_all()
        if task.done is not None:
            return self._wait_done(task.done, timeout)
        return True

    def _wait_done(self, done: threading.Event, timeout: float | None) -> bool:
        # Waits on the condition, not the event: Condition.wait lets go of the lock even
        # when this thread holds it already (a SIGTERM handler that interrupted submit),
        # so the worker can still take the call. Completion notifies (see _notify_waiters).
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not done.is_set():
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(0.1 if remaining is None else min(remaining, 0.1))
        return True

    def _notify_waiters(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        """Waits until every task submitted so far has reached its backends; ``False`` if ``timeout`` ran out first."""
        if threading.current_thread() is self._thread or on_delivery_thread():
            return True  # called by a tracker, on the worker: it cannot wait for itself
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._urgent = True
            self._cond.notify_all()
            while self._queue or self._busy:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
        for lane in self._lane_list():
            if not lane.wait(None if deadline is None else max(deadline - time.monotonic(), 0.0)):
                return False
        return True

    @property
    def pending(self) -> int:
        """Tasks submitted and not yet run (in the reporter's queue or a backend's)."""
        with self._cond:
            queued = len(self._queue) + (1 if self._busy else 0)
        return queued + sum(lane.pending for lane in self._lane_list())

    def backlog(self, tracker: Tracker) -> dict[str, int]:
        """Calls still waiting for each backend of ``tracker`` (those with none are left out)."""
        from jaxtrack.trackers.base import walk

        ids = {id(t) for t in walk(tracker)}
        return {
            lane.tracker.name: lane.pending for lane in self._lane_list() if id(lane.tracker) in ids and lane.pending
        }

    def _lane_list(self) -> list[BackendLane]:
        with self._lanes_lock:
            return list(self._lanes.values())

    def close(self, timeout: float | None = None) -> bool:
        """Runs what is queued, then stops the worker; ``False`` if ``timeout`` ran out first."""
        flushed = self.flush(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        return flushed

    def _run(self) -> None:
        while True:
            with self._cond:
                self._idle = True
                while not self._queue and not self._closed:
                    woken = self._cond.wait(IDLE_FLUSH_SECS if self._unflushed else None)
                    if not woken and self._unflushed and not self._queue:
                        break  # idle: write out what the trackers buffered
                self._idle = False
                if not self._queue:
                    if self._closed:
                        return
                    idle, self._unflushed = list(self._unflushed.values()), {}
                    batch = []
                else:
                    if self.linger_secs > 0:
                        self._cond.wait_for(self._should_deliver, timeout=self.linger_secs)
                    self._urgent = False
                    # popleft, not list() + clear(): callers append without the lock.
                    batch = [self._queue.popleft() for _ in range(len(self._queue))]
                    idle = []
                self._busy = True
                self._cond.notify_all()  # room for callers waiting on a full queue
            try:
                self._deliver(batch)
                for tracker in idle:
                    self._call(_Task(tracker, "flush", (), {}))
            except Exception as error:  # the worker must outlive any bad report
                logger.error("jaxtrack: the reporter failed to deliver %d call(s)", len(batch), exc_info=error)
                for task in batch:
                    self._record(task.tracker, task.method, error)
                    if task.done is not None:
                        task.done.set()
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _should_deliver(self) -> bool:
        return self._urgent or self._closed or len(self._queue) >= self._batch

    def _deliver(self, batch: list[_Task]) -> None:
        host_args = _fetch([task.args for task in batch])
        per_lane: dict[BackendLane, list[Call]] = {}
        for done, (task, args) in enumerate(zip(batch, host_args, strict=True), 1):
            self._route(task, args, per_lane)
            if done % 8 == 0:
                # Let the training thread take the interpreter lock to dispatch
                # now and then, instead of waiting for the whole batch.
                time.sleep(0)
            if task.method != "finish":
                self._unflushed[id(task.tracker)] = task.tracker
            else:
                self._unflushed.pop(id(task.tracker), None)
        self._hand_over(per_lane)

    def _call(self, task: _Task) -> None:
        per_lane: dict[BackendLane, list[Call]] = {}
        self._route(task, task.args, per_lane)
        self._hand_over(per_lane)

    def _route(self, task: _Task, args: tuple[Any, ...], per_lane: dict[BackendLane, list[Call]]) -> None:
        """Adds the backend calls of ``task`` to ``per_lane``, one per backend, in order."""
        try:
            if task.prepare is not None:
                args = task.prepare(*args)
            if task.method == "log" and args:
                self.reported.update(args[0], task.kwargs.get("step"))
            if isinstance(task.tracker, CompositeTracker):
                calls = task.tracker.split(task.method, args, task.kwargs)
            else:
                calls = [(task.tracker, task.method, args, task.kwargs)]
        except Exception as error:  # noqa: BLE001 - a bad report must not stop the others
            self._record(task.tracker, task.method, error)
            if task.done is not None:
                task.done.set()
            return
        countdown = Countdown(len(calls), task.done, self._notify_waiters) if task.done is not None else None
        for tracker, method, call_args, call_kwargs in calls:
            try:
                lane = self._lane(tracker)
            except Exception as error:  # noqa: BLE001 - e.g. an invalid when_full: that backend only
                self._record(tracker, method, error)
                if countdown is not None:
                    countdown.done()
                continue
            per_lane.setdefault(lane, []).append(Call(method, call_args, call_kwargs, countdown))

    def _lane(self, tracker: Tracker) -> BackendLane:
        with self._lanes_lock:
            lane = self._lanes.get(id(tracker))
            if lane is None or lane.tracker is not tracker:
                lane = BackendLane(tracker, on_error=self._record, on_drop=self.errors.record_drop)
                self._lanes[id(tracker)] = lane
            return lane

    def _hand_over(self, per_lane: dict[BackendLane, list[Call]]) -> None:
        for lane, calls in per_lane.items():
            lane.put(calls)  # waits here if a "block" backend is max_pending behind
        with self._lanes_lock:
            # Finished backends' lanes go, so finished trackers are not kept alive.
            for key, lane in list(self._lanes.items()):
                if lane.retired and not lane.pending:
                    del self._lanes[key]

    def _record(self, tracker: Tracker, method: str, error: BaseException) -> None:
        if self.errors.record(tracker, method, error):
            logger.error(
                "jaxtrack: tracker %r failed in %s; training goes on, further failures are counted",
                tracker.name,
                method,
                exc_info=error,
            )


def _fetch(all_args: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Every JAX array among the arguments, copied to the host in one call."""
    try:
        leaves = jax.tree_util.tree_leaves(all_args)
    except Exception:  # noqa: BLE001 - e.g. a dict whose keys cannot be sorted: each call on its own
        return [_fetch([args])[0] if _flattens(args) else args for args in all_args]
    if not any(type(leaf) not in HOST_SCALAR_TYPES and isinstance(leaf, jax.Array) for leaf in leaves):
        return all_args
    try:
        return _in_order(all_args, jax.device_get(all_args))
    except Exception:  # noqa: BLE001 - a bad value in one report must not lose the others
        fetched = []
        for args in all_args:
            try:
                fetched.append(_in_order(args, jax.device_get(args)))
            except Exception:  # noqa: BLE001 - the tracker call reports it, by name
                fetched.append(args)
        return fetched


def _flattens(args: Any) -> bool:
    try:
        jax.tree_util.tree_leaves(args)
    except Exception:  # noqa: BLE001 - the tracker call reports it, by name
        return False
    return True


def _in_order(given: Any, fetched: Any) -> Any:
    """``fetched`` with the key order of the mappings in ``given`` (pytree flattening sorts dict keys)."""
    if isinstance(given, dict):
        return type(given)((key, _in_order(given[key], fetched[key])) for key in given)
    if type(given) in (list, tuple):
        return type(given)(_in_order(g, f) for g, f in zip(given, fetched, strict=True))
    return fetched


_default: Reporter | None = None
_default_lock = threading.RLock()  # re-entrant: a SIGTERM handler may run while it is held


def default_reporter() -> Reporter:
    """The process's reporter, started on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Reporter()
        return _default


def call_soon(
    tracker: Tracker,
    method: str,
    *args: Any,
    wait: bool = False,
    timeout: float | None = None,
    may_block: bool = True,
    **kwargs: Any,
) -> bool:
    """Queues one tracker call on the process's reporter (see ``Reporter.submit``)."""
    return default_reporter().submit(tracker, method, *args, wait=wait, timeout=timeout, may_block=may_block, **kwargs)
