"""The tracker interface every backend implements, and the two trackers built from nothing else.

``RUN_END_STATUSES`` are the ways a run can end: ``"finished"``, ``"failed"``
and ``"killed"``.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Mapping, Sequence
from typing import Any

RUN_END_STATUSES = ("finished", "failed", "killed")
"""How a run can end ([`Tracker.set_status`][jaxtrack.trackers.Tracker.set_status], [`jaxtrack.finish`][jaxtrack.finish])."""


def check_run_end_status(status: str) -> str:
    """``status`` if it is one of ``RUN_END_STATUSES``, else a ``ValueError`` naming it."""
    if status not in RUN_END_STATUSES:
        raise ValueError(f"status must be one of {', '.join(map(repr, RUN_END_STATUSES))}, got {status!r}")
    return status


class Tracker(abc.ABC):
    """A place metrics, summaries, hyperparameters and artifacts of a run go to.

    Subclass it and implement the abstract methods to add a backend; the new
    tracker then works with every ``jaxtrack`` function and inside a
    [`CompositeTracker`][jaxtrack.trackers.CompositeTracker]. Metric dicts may be nested (built-in backends
    flatten them to ``"a/b"`` keys with [`jaxtrack.flatten`][jaxtrack.flatten]) and hold JAX
    arrays, which a backend should copy to the host only where it writes
    ([`jaxtrack.values.to_host`][jaxtrack.values.to_host]).

    A tracker is also a context manager that finishes it on exit.

    Examples:
        >>> class PrintTracker(Tracker):
        ...     name = "print"
        ...     def log(self, metrics, *, step=None, commit=None):
        ...         print(step, dict(metrics))
        ...     def log_summary(self, metrics): print("summary", dict(metrics))
        ...     def log_hyperparameters(self, hparams): print("hparams", dict(hparams))
        ...     def log_artifact(self, artifact_path, *, name=None, type=None): print("artifact", name)
        ...     def finish(self): print("done")
        >>> with PrintTracker() as tracker:
        ...     tracker.log({"loss": 0.5}, step=3)
        3 {'loss': 0.5}
        done
    """

    name: str = "tracker"
    """How [`jaxtrack.get_tracker`][jaxtrack.get_tracker] finds this tracker."""

    resumed_step: int | None = None
    """The last step a resumed run had stored, so ``step=None`` continues after it (``None``: a new run)."""

    when_full: str = "block"
    """What the reporter does when this backend falls ``max_pending`` calls behind: ``"block"`` (wait,
    drop nothing) or ``"drop_oldest"`` (drop the oldest ``log`` call, counted); see ``jaxtrack.delivery``."""

    max_pending: int = 10_000
    """How many calls may wait for this backend (which bounds the memory a slow backend holds)."""

    @abc.abstractmethod
    def log(self, metrics: Mapping[str, Any], *, step: int | None = None, commit: bool | None = None) -> None:
        """Records ``metrics`` at ``step``.

        ``step=None`` means the step after the last committed one (the same step
        again if the previous call passed ``commit=False``), as in ``wandb.log``;
        [`StepCounter`][jaxtrack.trackers.StepCounter] implements that rule for a backend.
        """

    @abc.abstractmethod
    def log_summary(self, metrics: Mapping[str, Any]) -> None:
        """Records one-off values that describe the whole run (best loss, final accuracy...)."""

    @abc.abstractmethod
    def log_hyperparameters(self, hparams: Mapping[str, Any]) -> None:
        """Records the run's configuration; nested dicts become ``"a/b"`` keys."""

    @abc.abstractmethod
    def log_artifact(
        self, artifact_path: str | os.PathLike[str], *, name: str | None = None, type: str | None = None
    ) -> None:
        """Stores the file or directory at ``artifact_path`` with the run."""

    @abc.abstractmethod
    def finish(self) -> None:
        """Writes out everything pending and releases the backend. Calling it twice is harmless."""

    def flush(self) -> None:  # noqa: B027 - optional to override, unlike the methods above
        """Writes out everything pending without finishing (a no-op unless the backend buffers)."""

    def validate(self, metrics: Mapping[str, Any]) -> None:  # noqa: B027 - optional, for backends with limits
        """Raises an error naming the key if this backend cannot record ``metrics`` (flat ``"a/b"`` keys).

        Called by [`jaxtrack.log`][jaxtrack.log], [`jaxtrack.log_summary`][jaxtrack.log_summary]
        and a CLU writer's ``write_*`` on the caller's thread before the values
        are queued, so a value the backend would refuse is an error at the
        call, not a report lost later. It sees the values as logged (JAX
        arrays not fetched), so it checks names and host values only. The
        in-graph metrics of a [`jaxtrack.jit`][jaxtrack.jit] step are not
        checked: their names are only known once the step is traced, and
        their values are numbers, arrays and histograms, which every backend takes.
        """

    def set_status(self, status: str) -> None:  # noqa: B027 - optional, for backends that record how a run ended
        """Says how the run ends, before [`finish`][jaxtrack.trackers.Tracker.finish]: ``"finished"`` (the default), ``"failed"`` or ``"killed"``.

        A no-op unless the backend records it (the local store's run status,
        W&B's exit code). [`jaxtrack.finish`][jaxtrack.finish] passes its ``status=`` here.
        """

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        from jaxtrack import tracking

        tracking.release(self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class StepCounter:
    """Gives each ``log`` call its step, following ``wandb.log``'s rule.

    An explicit step is used as is; ``step=None`` takes the step after the last
    one logged, or the same step again if that call passed ``commit=False``.

    Examples:
        >>> counter = StepCounter()
        >>> counter.resolve(None, None), counter.resolve(None, False), counter.resolve(None, None)
        (0, 1, 1)
        >>> counter.resolve(10, None), counter.resolve(None, None)
        (10, 11)
    """

    def __init__(self) -> None:
        self.last_step: int | None = None
        self._open = False  # the last step was logged with commit=False

    def resolve(self, step: Any, commit: bool | None) -> int:
        """The step of a ``log(..., step=step, commit=commit)`` call, remembered for the next call.

        Raises ``TypeError`` or ``ValueError`` for a ``step`` that is not a
        non-negative integer.
        """
        if step is None:
            if self.last_step is None:
                resolved = 0
            else:
                resolved = self.last_step if self._open else self.last_step + 1
        else:
            resolved = check_step(step)
        self.last_step = resolved
        self._open = commit is False
        return resolved


def check_step(step: Any) -> int:
    """``step`` as an ``int``, or a ``TypeError``/``ValueError`` saying why it is not a step."""
    if isinstance(step, bool):
        raise TypeError(f"step must be an integer, got {step!r}")
    try:
        resolved = int(step)
    except (TypeError, ValueError, OverflowError):
        raise TypeError(f"step must be an integer, got {step!r} ({type(step).__name__})") from None
    if resolved != step:
        raise TypeError(f"step must be an integer, got {step!r}")
    if resolved < 0:
        raise ValueError(f"step must be >= 0, got {resolved}")
    if resolved >= 2**63:
        raise ValueError(f"step must be below 2**63 (backends store it as int64), got {resolved}")
    return resolved


class NoopTracker(Tracker):
    """A tracker that records nothing: for runs that must not log (tests, non-zero processes).

    Examples:
        >>> NoopTracker().log({"loss": 1.0}, step=0)
    """

    name = "noop"

    def log(self, metrics: Mapping[str, Any], *, step: int | None = None, commit: bool | None = None) -> None:
        pass

    def log_summary(self, metrics: Mapping[str, Any]) -> None:
        pass

    def log_hyperparameters(self, hparams: Mapping[str, Any]) -> None:
        pass

    def log_artifact(
        self, artifact_path: str | os.PathLike[str], *, name: str | None = None, type: str | None = None
    ) -> None:
        pass

    def finish(self) -> None:
        pass


class CompositeTracker(Tracker):
    """Sends everything to several trackers, e.g. TensorBoard and W&B at once.

    The step of a call without one is decided here once, so every backend
    records the same step. If a backend raises, the others still receive the
    call, then a [`TrackerError`][jaxtrack.trackers.TrackerError] names the backends that failed.

    Examples:
        >>> both = CompositeTracker([NoopTracker(), NoopTracker()])
        >>> both.log({"loss": 1.0}, step=0)
        >>> len(both.trackers)
        2
    """

    name = "composite"

    def __init__(self, trackers: Sequence[Tracker]) -> None:
        for tracker in trackers:
            if not isinstance(tracker, Tracker):
                raise TypeError(f"CompositeTracker takes Tracker instances, got {tracker!r}")
        self.trackers: list[Tracker] = list(trackers)
        self._steps = StepCounter()
        resumed = [t.resumed_step for t in self.trackers if t.resumed_step is not None]
        if resumed:
            self.resumed_step = self._steps.last_step = max(resumed)

    def log(self, metrics: Mapping[str, Any], *, step: int | None = None, commit: bool | None = None) -> None:
        resolved = self._steps.resolve(step, commit)
        self._each("log", lambda t: t.log(metrics, step=resolved, commit=commit))

    def log_summary(self, metrics: Mapping[str, Any]) -> None:
        self._each("log_summary", lambda t: t.log_summary(metrics))

    def log_hyperparameters(self, hparams: Mapping[str, Any]) -> None:
        self._each("log_hyperparameters", lambda t: t.log_hyperparameters(hparams))

    def log_artifact(
        self, artifact_path: str | os.PathLike[str], *, name: str | None = None, type: str | None = None
    ) -> None:
        self._each("log_artifact", lambda t: t.log_artifact(artifact_path, name=name, type=type))

    def flush(self) -> None:
        self._each("flush", lambda t: t.flush())

    def set_status(self, status: str) -> None:
        self._each("set_status", lambda t: t.set_status(status))

    def validate(self, metrics: Mapping[str, Any]) -> None:
        for tracker in self.trackers:
            tracker.validate(metrics)

    def split(
        self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> list[tuple[Tracker, str, tuple[Any, ...], dict[str, Any]]]:
        """The call ``method(*args, **kwargs)`` as one call per backend, nested composites expanded.

        A ``log`` without a step gets its step here, once, as ``log`` does;
        the reporter uses this to give every backend its own queue.
        """
        if method == "log":
            kwargs = {**kwargs, "step": self._steps.resolve(kwargs.get("step"), kwargs.get("commit"))}
        calls: list[tuple[Tracker, str, tuple[Any, ...], dict[str, Any]]] = []
        for tracker in self.trackers:
            if isinstance(tracker, CompositeTracker):
                calls.extend(tracker.split(method, args, kwargs))
            else:
                calls.append((tracker, method, args, kwargs))
        return calls

    def finish(self) -> None:
        self._each("finish", lambda t: t.finish())

    def _each(self, method: str, call: Any) -> None:
        failures: list[tuple[Tracker, BaseException]] = []
        for tracker in self.trackers:
            try:
                call(tracker)
            except Exception as error:  # noqa: BLE001 - the other backends must still get the call
                failures.append((tracker, error))
        if failures:
            raise TrackerError(method, failures)

    def __repr__(self) -> str:
        return f"CompositeTracker({self.trackers!r})"


class TrackerError(RuntimeError):
    """Raised by [`CompositeTracker`][jaxtrack.trackers.CompositeTracker] when some of its backends failed; the others got the call.

    ``method`` is the call that failed and ``failures`` the ``(tracker,
    exception)`` pairs; the first exception is also the ``__cause__``.

    Examples:
        >>> import jaxtrack as jt
        >>> class Broken(jt.NoopTracker):
        ...     name = "broken"
        ...     def log(self, metrics, *, step=None, commit=None):
        ...         raise OSError("disk full")
        >>> both = jt.CompositeTracker([Broken(), jt.NoopTracker()])
        >>> try:
        ...     both.log({"loss": 1.0}, step=0)
        ... except jt.TrackerError as error:
        ...     print(error)
        ...     print([tracker.name for tracker, _ in error.failures])
        log failed in 1 tracker(s): broken: OSError: disk full
        ['broken']
    """

    def __init__(self, method: str, failures: Sequence[tuple[Tracker, BaseException]]) -> None:
        self.method = method
        self.failures = list(failures)
        detail = "; ".join(f"{t.name}: {type(e).__name__}: {e}" for t, e in self.failures)
        super().__init__(f"{method} failed in {len(self.failures)} tracker(s): {detail}")
        self.__cause__ = self.failures[0][1]


def walk(tracker: Tracker) -> list[Tracker]:
    """The tracker and, for composites, every tracker inside it, depth first."""
    found = [tracker]
    if isinstance(tracker, CompositeTracker):
        for child in tracker.trackers:
            found.extend(walk(child))
    return found


__all__ = [
    "RUN_END_STATUSES",
    "CompositeTracker",
    "NoopTracker",
    "StepCounter",
    "Tracker",
    "TrackerError",
]
