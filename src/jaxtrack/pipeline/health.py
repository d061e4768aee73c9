"""What each backend failed on or lost, counted per backend until its run ends, and reported by name.

A backend that raises (any exception, ``SystemExit`` included) is logged
once per method, counted, and its lane goes on with the next call. A
``drop_oldest`` backend that falls behind loses its oldest reports, counted;
a ``block`` backend that takes nothing for ``block_timeout`` seconds is
declared hung and loses the reports made until it catches up, counted; a
call to a backend after it finished is counted too. When a run ends,
[`Health.take`][jaxtrack.pipeline.health.Health.take] gives each of its
backends' counts for the warning that says what was lost.

``DROP_REASONS`` maps each reason a backend can lose a call for to the words
the warning uses: ``"behind"`` (dropped by ``drop_oldest``), ``"hung"``
(dropped while a ``block`` backend hung), ``"finished"`` (made after the
backend finished) and ``"unreadable"`` (a value that could not be fetched or
normalised, left out of its report).

In strict mode each failure of a watched backend is also queued, to be
raised on the training thread as ``jaxtrack.BackendError``, the one at the
lowest step first.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
from typing import Any

logger = logging.getLogger("jaxtrack")

DROP_REASONS = {
    "behind": "report(s) dropped as it fell behind",
    "hung": "report(s) dropped while it hung",
    "finished": "call(s) made after it finished",
    "unreadable": "value(s) left out that could not be read",
}


@dataclasses.dataclass
class BackendHealth:
    """One backend's failures (by method) and losses (by reason) since its lane started or was last taken.

    ``failed_steps`` holds, by method, the steps of the failed calls that had
    one, as ranges ``[first, last]``; ``last_error`` is the latest failure.

    Examples:
        >>> health = BackendHealth("local", failures={"log": 2}, dropped={"behind": 5})
        >>> health.describe()
        'local.log failed x2; local: 5 report(s) dropped as it fell behind'
        >>> health = BackendHealth("local", failures={"log": 4}, failed_steps={"log": [[3, 5], [9, 9]]},
        ...                        last_error=OSError("disk full: runs.db"))
        >>> health.describe()
        'local.log failed x4 at steps 3-5, 9 (last error: OSError: disk full: runs.db)'
    """

    name: str
    failures: dict[str, int] = dataclasses.field(default_factory=dict)
    dropped: dict[str, int] = dataclasses.field(default_factory=dict)
    last_error: BaseException | None = None
    failed_steps: dict[str, list[list[int]]] = dataclasses.field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.failures or self.dropped)

    def describe(self) -> str:
        """The counts in words, as the ``DataLossWarning`` at the end of a run names them (``""`` if none)."""
        parts = [
            f"{self.name}.{method} failed x{count}{_steps_in_words(self.failed_steps.get(method, []))}"
            for method, count in self.failures.items()
        ]
        if parts and self.last_error is not None:
            error = f"{type(self.last_error).__name__}: {self.last_error}"
            parts[-1] += f" (last error: {error if len(error) <= _ERROR_CHARS else error[: _ERROR_CHARS - 3] + '...'})"
        parts += [f"{self.name}: {count} {DROP_REASONS[reason]}" for reason, count in self.dropped.items()]
        return "; ".join(parts)

    def add_failed_step(self, method: str, step: int) -> None:
        """Adds ``step`` to the failed steps of ``method``, merged into the ranges (at most ``_MAX_RANGES`` kept)."""
        ranges = self.failed_steps.setdefault(method, [])
        if ranges and ranges[-1][0] <= step <= ranges[-1][1] + 1:
            ranges[-1][1] = max(ranges[-1][1], step)
        elif len(ranges) < _MAX_RANGES:
            ranges.append([step, step])


_MAX_RANGES = 1000  # steps of failed calls kept per method, as ranges: bounded memory for a backend that fails at every other step
_SHOWN_RANGES = 5  # ranges the warning names; it counts the others
_ERROR_CHARS = 500  # the last error is cut to this length in the warning


def _steps_in_words(ranges: list[list[int]]) -> str:
    if not ranges:
        return ""
    shown = ", ".join(f"{first}-{last}" if last > first else f"{first}" for first, last in ranges[:_SHOWN_RANGES])
    more = f" and {len(ranges) - _SHOWN_RANGES} more range(s)" if len(ranges) > _SHOWN_RANGES else ""
    word = "step" if len(ranges) == 1 and ranges[0][0] == ranges[0][1] else "steps"
    return f" at {word} {shown}{more}"


@dataclasses.dataclass(frozen=True)
class Failure:
    """A failed call of a backend in strict mode: raised as ``jaxtrack.BackendError``.

    ``backend_id`` is the ``id()`` of the backend instance, so failures of two
    backends with one name stay apart.

    Examples:
        >>> class Backend:
        ...     name = "demo"
        >>> health, backend = Health(), Backend()
        >>> health.watch_strict([backend])
        >>> health.record_failure(backend, "log", 3, OSError("disk full"))  # logged once, on stderr
        >>> failure = health.pop_strict()
        >>> failure.backend, failure.method, failure.step, failure.error
        ('demo', 'log', 3, OSError('disk full'))
    """

    backend: str
    method: str
    step: int | None
    error: BaseException
    backend_id: int = 0


class Health:
    """Failures and losses of every backend, by backend instance; the strict-mode queue of failures.

    Examples:
        >>> class Backend:
        ...     name = "demo"
        >>> health, backend = Health(), Backend()
        >>> health.record_drop(backend, "behind")
        >>> health.take(backend).describe()
        'demo: 1 report(s) dropped as it fell behind'
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()  # re-entrant: a SIGTERM handler may run while it is held
        self._by_backend: dict[int, BackendHealth] = {}
        self._strict: set[int] = set()
        self._strict_failures: collections.deque[Failure] = collections.deque()
        self.total = 0
        """Failures and losses so far, of every backend."""
        self.counts: dict[tuple[str, str], int] = {}
        """Failures and losses so far, by ``(backend name, method or loss reason)``, never forgotten."""

    def record_failure(self, backend: Any, method: str, step: int | None, error: BaseException) -> None:
        """Counts a failed call; logs it with its traceback the first time this backend fails in ``method``."""
        with self._lock:
            health = self._health(backend)
            first = method not in health.failures
            health.failures[method] = health.failures.get(method, 0) + 1
            health.last_error = error
            if step is not None:
                health.add_failed_step(method, step)
            self.total += 1
            self.counts[backend.name, method] = self.counts.get((backend.name, method), 0) + 1
            if id(backend) in self._strict:
                self._strict_failures.append(Failure(backend.name, method, step, error, id(backend)))
        if first:
            logger.error(
                "jaxtrack: tracker %r failed in %s%s; training goes on, further failures are counted",
                backend.name,
                method,
                f" at step {step}" if step is not None else "",
                exc_info=error,
            )

    def record_drop(self, backend: Any, reason: str, count: int = 1) -> None:
        """Counts ``count`` calls that ``backend`` lost, for ``reason``: one of ``DROP_REASONS``."""
        with self._lock:
            health = self._health(backend)
            health.dropped[reason] = health.dropped.get(reason, 0) + count
            self.total += count
            self.counts[backend.name, reason] = self.counts.get((backend.name, reason), 0) + count

    def take(self, backend: Any) -> BackendHealth:
        """``backend``'s counts, forgotten once taken (when its run ends), with its strict-mode failures."""
        with self._lock:
            self._strict.discard(id(backend))
            self._strict_failures = collections.deque(f for f in self._strict_failures if f.backend_id != id(backend))
            return self._by_backend.pop(id(backend), None) or BackendHealth(backend.name)

    def peek(self, backend: Any) -> BackendHealth:
        """``backend``'s counts so far (a copy), without forgetting them."""
        with self._lock:
            health = self._by_backend.get(id(backend))
            if health is None:
                return BackendHealth(backend.name)
            return dataclasses.replace(
                health,
                failures=dict(health.failures),
                dropped=dict(health.dropped),
                failed_steps={method: [list(r) for r in ranges] for method, ranges in health.failed_steps.items()},
            )

    def watch_strict(self, backends: list[Any]) -> None:
        """Queues the failures of ``backends`` from now on, to be raised on the training thread."""
        with self._lock:
            self._strict.update(id(backend) for backend in backends)

    def pop_strict(self, backends: list[Any] | None = None) -> Failure | None:
        """The strict-mode failure to raise next (of one of ``backends``, if given), if any.

        The one at the lowest step goes first (then the oldest): backends work
        on threads of their own, so which of two failed first in time says less
        than which report failed first.
        """
        if not self._strict_failures:  # the common case, without the lock
            return None
        with self._lock:
            ids = None if backends is None else {id(backend) for backend in backends}
            candidates = [f for f in self._strict_failures if ids is None or f.backend_id in ids]
            if not candidates:
                return None
            failure = min(candidates, key=lambda f: f.step if f.step is not None else float("inf"))
            self._strict_failures.remove(failure)
            return failure

    def _health(self, backend: Any) -> BackendHealth:
        health = self._by_backend.get(id(backend))
        if health is None:
            health = self._by_backend[id(backend)] = BackendHealth(backend.name)
        return health


__all__ = ["DROP_REASONS", "BackendHealth", "Failure", "Health"]
