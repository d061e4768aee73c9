"""The tracker interface every backend implements, and the front door every call to a tracker goes through.

A backend subclasses [`Tracker`][jaxtrack.trackers.Tracker] and implements
``log``, ``log_summary``, ``log_hyperparameters``, ``log_artifact`` and
``finish`` (``flush``, ``set_status`` and ``validate`` are optional). Those
implementations run on the backend's own thread, in the order the calls were
made, with values already fetched and normalised (a flat mapping of Python
numbers, text, [`Histogram`][jaxtrack.Histogram] and [`Image`][jaxtrack.Image];
arrays as histograms of ``histogram_bins`` buckets, or as NumPy arrays when
it is ``None``) and an ``int`` step.

Whoever calls them — ``jaxtrack.log``, user code holding the tracker, a
composite, a CLU writer, a callback — calls the *front door* that ``Tracker``
puts in front of each: it checks the values on the caller's thread (an error
at the call names the key), then submits the call to the one pipeline
(``jaxtrack.pipeline``) and returns. ``flush`` waits until everything
submitted before it was written; ``finish`` ends the run (``jaxtrack.run.end``).
A subclass gets this without doing anything; its methods called from its own
thread (``super().log(...)`` in an override, ``log_summary`` calling ``log``)
run at once, as plain calls.
"""

from __future__ import annotations

import abc
import functools
import os
from collections.abc import Callable, Mapping
from typing import Any

from jaxtrack import pipeline, run
from jaxtrack.errors import DataLossWarning, FinishedTrackerError, warn
from jaxtrack.pipeline.calls import Call
from jaxtrack.pipeline.lanes import DEFAULT_BLOCK_TIMEOUT_SECS, DEFAULT_MAX_PENDING, DEFAULT_MAX_PENDING_BYTES, serving
from jaxtrack.redaction import redact
from jaxtrack.values.checks import check_step_argument, check_values
from jaxtrack.values.convert import flatten
from jaxtrack.values.types import DEFAULT_NUM_BINS

_DOORS = ("log", "log_summary", "log_hyperparameters", "log_artifact", "flush", "set_status", "finish")


class Tracker(abc.ABC):
    """A place metrics, summaries, hyperparameters and artifacts of a run go to.

    Subclass it and implement the abstract methods to add a backend; the new
    tracker then works with every ``jaxtrack`` function and inside a
    [`CompositeTracker`][jaxtrack.trackers.CompositeTracker]. Your ``log`` receives
    ``metrics`` as a flat mapping (``"train/loss"`` keys) of Python numbers,
    bools, text, [`Histogram`][jaxtrack.Histogram] (arrays arrive as histograms of
    ``histogram_bins`` buckets, or as NumPy arrays if it is ``None``) and [`Image`][jaxtrack.Image] (``uint8``
    pixels in the layout logged; ``to_uint8()`` gives ``NHWC``), and an ``int`` step; it runs on the
    tracker's own thread, in the order calls were made, never on the training thread.

    Calling a tracker's methods (``tracker.log(...)``) goes through the same
    front door as ``jaxtrack.log``: checked at the call, then queued behind
    everything logged before, never written on the caller's thread.
    ``tracker.flush()`` returns once everything before it is written, and
    ``tracker.finish()`` ends the run. ``with tracker:`` makes it the current
    tracker, restores the previous one on exit, and finishes the run there
    (``"failed"`` if the block raised, ``"killed"`` for Ctrl-C); use
    ``with jaxtrack.current_tracker(tracker):`` to keep it running past the block.

    Delivery options (class or instance attributes, set before first use):
    ``when_full`` (``"block"`` or ``"drop_oldest"``), ``max_pending`` (calls),
    ``max_pending_bytes`` and ``block_timeout`` (see ``jaxtrack.pipeline.lanes``).

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
        ...     tracker.log({"train": {"loss": 0.5}}, step=3)
        3 {'train/loss': 0.5}
        done
    """

    name: str = "tracker"
    """How [`jaxtrack.get_tracker`][jaxtrack.get_tracker] finds this tracker."""

    resumed_step: int | None = None
    """The last step a resumed run had stored, so ``step=None`` continues after it (``None``: a new run)."""

    when_full: str = "block"
    """What happens when this backend falls ``max_pending`` calls (or ``max_pending_bytes``) behind: ``"block"``
    (the next ``log`` waits; drop nothing unless it hangs) or ``"drop_oldest"`` (drop the oldest ``log`` call, counted)."""

    max_pending: int = DEFAULT_MAX_PENDING
    """How many calls may wait for this backend (10,000)."""

    max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES
    """About how many bytes of values may wait for this backend (256 MiB): images, histograms, text."""

    block_timeout: float = DEFAULT_BLOCK_TIMEOUT_SECS
    """Under ``block``, how long (s) the backend may take no call while full before it is declared hung (60)."""

    histogram_bins: int | None = DEFAULT_NUM_BINS
    """Buckets of the histogram this backend receives for an array value (``None``: the NumPy array itself)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _install_doors(cls)

    @abc.abstractmethod
    def log(self, metrics: Mapping[str, Any], *, step: int | None = None, commit: bool | None = None) -> None:
        """Records ``metrics`` at ``step``.

        ``step=None`` means the step after the last committed one (the same step
        again if the previous call passed ``commit=False``), as in ``wandb.log``;
        the front door resolves it, so the implementation receives an ``int``.
        """

    @abc.abstractmethod
    def log_summary(self, metrics: Mapping[str, Any]) -> None:
        """Records one-off values that describe the whole run (best loss, final accuracy...)."""

    @abc.abstractmethod
    def log_hyperparameters(self, hparams: Mapping[str, Any]) -> None:
        """Records the run's configuration: flat ``"a/b"`` keys, plain Python values, credentials redacted."""

    @abc.abstractmethod
    def log_artifact(
        self, artifact_path: str | os.PathLike[str], *, name: str | None = None, type: str | None = None
    ) -> None:
        """Stores the file or directory at ``artifact_path`` with the run (the call waits until it is taken)."""

    @abc.abstractmethod
    def finish(self) -> None:
        """Writes out everything pending and releases the backend; called once, after every other call."""

    def flush(self) -> None:  # noqa: B027 - optional to override, unlike the methods above
        """Writes out everything pending without finishing (a no-op unless the backend buffers)."""

    def validate(self, metrics: Mapping[str, Any]) -> None:  # noqa: B027 - optional, for backends with limits
        """Raises an error naming the key if this backend cannot record ``metrics`` (flat ``"a/b"`` keys).

        Called by the front door (``jaxtrack.log``, ``tracker.log``,
        ``log_summary``, a CLU writer's ``write_*``) on the caller's thread
        before the values are queued, so a value the backend would refuse is an
        error at the call, not a report lost later. It sees the values as
        logged (JAX arrays not fetched), so it checks names and host values
        only. The in-graph metrics of a [`jaxtrack.jit`][jaxtrack.jit] step are not
        checked: their names are only known once the step is traced, and
        their values are numbers, arrays and histograms, which every backend takes.
        """

    def set_status(self, status: str) -> None:  # noqa: B027 - optional, for backends that record how a run ended
        """Says how the run ends, before [`finish`][jaxtrack.trackers.base.Tracker.finish]: ``"finished"`` (the default), ``"failed"`` or ``"killed"``.

        A no-op unless the backend records it (the local store's run status,
        W&B's exit code). [`jaxtrack.finish`][jaxtrack.finish] passes its ``status=`` here.
        """

    def backends(self) -> list[Tracker]:
        """The backends a call to this tracker reaches: the tracker itself (a composite: its members)."""
        return [self]

    def __enter__(self) -> Tracker:
        previous = run.set_current(self)
        # ``with jaxtrack.init_tracker(...) as t:`` enters a tracker made current already: leave none current.
        self.__dict__.setdefault("_jaxtrack_scopes", []).append(None if previous is self else previous)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, traceback: Any) -> None:
        scopes = self.__dict__.get("_jaxtrack_scopes") or [None]
        previous = scopes.pop()
        status = "finished" if kind is None else "killed" if issubclass(kind, KeyboardInterrupt) else "failed"
        run.end(self, status=status, previous=previous)

    def _implementation(self, method: str) -> Callable[..., Any]:
        """The method ``method`` of this backend itself, behind its front door (what its lane calls)."""
        bound = getattr(self, method)
        implementation = getattr(bound, "__wrapped__", None)
        return bound if implementation is None else implementation.__get__(self)

    def _submit(self, call: Call, *, wait: bool = False, timeout: float | None = None, room: bool = True) -> bool:
        """The one way into the pipeline for this tracker: refused if its run ended; strict failures raised after."""
        if run.is_ended(self):
            raise FinishedTrackerError(self, call.method)
        run.register(self)
        done = pipeline.submit(self, call, wait=wait, timeout=timeout, room=room)
        run.raise_if_strict()
        return done

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


# -- the front doors -------------------------------------------------------------------------------


def _door_log(self: Tracker, metrics: Mapping[str, Any], *, step: Any = None, commit: bool | None = None) -> None:
    flat = check_values(metrics)
    check_step_argument(step)
    for backend in self.backends():
        backend.validate(flat)  # a value a backend would refuse is an error here, not a report lost later
    self._submit(Call("log", flat, step=step, commit=commit))


def _door_log_summary(self: Tracker, metrics: Mapping[str, Any]) -> None:
    flat = check_values(metrics)
    for backend in self.backends():
        backend.validate(flat)  # a backend's limits hold for its summary too
    self._submit(Call("log_summary", flat))


def _door_log_hyperparameters(self: Tracker, hparams: Mapping[str, Any]) -> None:
    # Redacted here, so no backend (user-written ones included) ever sees a credential.
    self._submit(Call("log_hyperparameters", redact(flatten(hparams))))


def _door_log_artifact(
    self: Tracker, artifact_path: str | os.PathLike[str], *, name: str | None = None, type: str | None = None
) -> None:
    if not os.path.exists(artifact_path):
        raise FileNotFoundError(f"artifact path does not exist: {os.fspath(artifact_path)!r}")
    # Waits until the backends have taken the file, so it may be changed or deleted once this returns.
    call = Call("log_artifact", args=(os.fspath(artifact_path),), kwargs={"name": name, "type": type})
    if not self._submit(call, wait=True, timeout=run.FINISH_TIMEOUT_SECS):
        _warn_behind(self, "log_artifact")


def _door_flush(self: Tracker) -> None:
    if run.is_ended(self):
        return
    if not self._submit(Call("flush"), wait=True, timeout=run.FINISH_TIMEOUT_SECS):
        _warn_behind(self, "flush")


def _door_set_status(self: Tracker, status: str) -> None:
    self._submit(Call("set_status", args=(run.check_run_end_status(status),)))


def _door_finish(self: Tracker) -> None:
    run.end(self)


def _warn_behind(tracker: Tracker, what: str) -> None:
    """The warning for a call that waited ``FINISH_TIMEOUT_SECS`` for backends and went on without them."""
    backlog = pipeline.default_dispatcher().backlog(tracker)
    slow = ", ".join(f"{name} ({count} call(s) queued)" for name, count in backlog.items()) or "the dispatcher"
    warn(
        f"jaxtrack: {what} waited {run.FINISH_TIMEOUT_SECS:.0f} s for {slow}, which hangs or is far behind; going on",
        DataLossWarning,
    )


_FRONT_DOORS: dict[str, Callable[..., Any]] = {
    "log": _door_log,
    "log_summary": _door_log_summary,
    "log_hyperparameters": _door_log_hyperparameters,
    "log_artifact": _door_log_artifact,
    "flush": _door_flush,
    "set_status": _door_set_status,
    "finish": _door_finish,
}


def _install_doors(cls: type) -> None:
    """Puts the front door in front of each method ``cls`` implements (once per class, in its own ``__dict__``)."""
    for method in _DOORS:
        implementation = cls.__dict__.get(method)
        if implementation is None or getattr(implementation, "__isabstractmethod__", False):
            continue
        if getattr(implementation, "_jaxtrack_door", False):
            continue
        setattr(cls, method, _with_front_door(method, implementation))


def _with_front_door(method: str, implementation: Callable[..., Any]) -> Callable[..., Any]:
    front = _FRONT_DOORS[method]

    @functools.wraps(implementation)
    def door(self: Tracker, *args: Any, **kwargs: Any) -> Any:
        if serving() is self:
            # The backend calling itself on its own thread (an override calling super(), log_summary
            # calling log): a plain call, made at once. Calls to other trackers take the front door.
            return implementation(self, *args, **kwargs)
        return front(self, *args, **kwargs)

    door._jaxtrack_door = True  # type: ignore[attr-defined]
    return door


_install_doors(Tracker)  # the base class's own flush and set_status, which subclasses may inherit


class NoopTracker(Tracker):
    """A tracker that records nothing: for runs that must not log (tests, non-zero processes).

    Examples:
        >>> tracker = NoopTracker()
        >>> tracker.log({"loss": 1.0}, step=0)
        >>> tracker.finish()
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


def walk(tracker: Tracker) -> list[Tracker]:
    """The tracker and, for composites, every tracker inside it, depth first.

    Examples:
        >>> walk(NoopTracker())
        [NoopTracker(name='noop')]
    """
    found = [tracker]
    for child in getattr(tracker, "trackers", ()):
        found.extend(walk(child))
    return found


__all__ = [
    "NoopTracker",
    "Tracker",
    "walk",
]
