"""The module-level logging functions, and the current tracker they send to.

The functions return at once: each call is queued, in order, on the
background reporter (``jaxtrack.reporter``), which copies JAX arrays to the
host and calls the tracker off the training thread. Values are checked for
type on the calling thread, so a value no backend can record is a
``TypeError`` right away. ``flush()``, ``finish()``, leaving a
``current_tracker`` scope and ``log_artifact`` wait until the calls before
them have reached the backends.

With no tracker set, every function here (``current_tracker()``, ``log``,
``log_summary``, ``log_hyperparameters``, ``log_artifact``,
``log_configuration``, ``finish``) warns once with
[`NoTrackerWarning`][jaxtrack.tracking.NoTrackerWarning] and does nothing: the values are not recorded, and training goes on.
``get_tracker`` is a look-up and raises ``KeyError`` instead.

``FINISH_TIMEOUT_SECS`` (60) is how long ``finish()`` waits for a backend
that hangs; ``DEFAULT_TRACKERS`` is what ``init_tracker()`` builds with no
config (the local run store).
"""

from __future__ import annotations

import atexit
import dataclasses
import os
import tempfile
import threading
import time
import warnings
import weakref
from collections.abc import Mapping
from types import TracebackType
from typing import Any, overload

import jax
import yaml

from jaxtrack import process_exit, reporter
from jaxtrack._paths import safe_file_name
from jaxtrack.delivery import check_delivery_options
from jaxtrack.multihost import agree_on_run_id
from jaxtrack.redaction import redact
from jaxtrack.run_id import new_run_id, validate_run_id
from jaxtrack.trackers.base import NoopTracker, Tracker, check_run_end_status, check_step, walk
from jaxtrack.trackers.config import TrackerConfig
from jaxtrack.values import check_values, flatten, to_plain


class NoTrackerWarning(UserWarning):
    """Logged values are dropped because no tracker is set (see [`current_tracker`][jaxtrack.tracking.current_tracker]).

    Issued once per process, by the first call that finds no tracker set. A
    script that must not train unrecorded can make it an error.

    Examples:
        >>> import warnings, jaxtrack as jt
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("error", jt.NoTrackerWarning)  # a forgotten init_tracker() now fails
        ...     with jt.current_tracker(jt.NoopTracker()):
        ...         jt.log({"loss": 0.5}, step=0)  # a tracker is set: no warning
    """


_lock = threading.RLock()
_current: Tracker | None = None
_warned_no_tracker = False
_noop = NoopTracker()
# Trackers made current at some point and not finished yet: finished at exit so
# nothing buffered is lost when a script forgets jaxtrack.finish().
_unfinished: weakref.WeakSet[Tracker] = weakref.WeakSet()


class _CurrentTrackerScope:
    """What ``current_tracker(t)`` returns: ``t`` is already current; leaving a ``with`` restores the previous one."""

    def __init__(self, tracker: Tracker, previous: Tracker | None) -> None:
        self.tracker = tracker
        self._previous = previous

    def __enter__(self) -> Tracker:
        return self.tracker

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        global _current
        try:
            if not reporter.call_soon(self.tracker, "flush", wait=True, timeout=FINISH_TIMEOUT_SECS):
                warnings.warn(_behind(self.tracker, "flush"), RuntimeWarning, stacklevel=2)
        finally:
            with _lock:
                if _current is self.tracker:
                    _current = self._previous


@overload
def current_tracker() -> Tracker: ...
@overload
def current_tracker(tracker: Tracker) -> _CurrentTrackerScope: ...
def current_tracker(tracker: Tracker | None = None) -> Tracker | _CurrentTrackerScope:
    """Gets the current tracker, or sets it.

    ``current_tracker()`` returns the tracker the module functions log to (a
    [`NoopTracker`][jaxtrack.trackers.NoopTracker], with a one-time
    [`NoTrackerWarning`][jaxtrack.tracking.NoTrackerWarning], if none is
    set). ``current_tracker(t)`` makes ``t`` current at once; used as a context
    manager, it restores the previous tracker (and flushes ``t``) on exit.

    Examples:
        >>> import jaxtrack as jt
        >>> with jt.current_tracker(jt.NoopTracker()) as tracker:
        ...     jt.log({"loss": 0.5}, step=0)
        ...     jt.current_tracker() is tracker
        True
    """
    global _current
    if tracker is None:
        return _get()
    if not isinstance(tracker, Tracker):
        raise TypeError(f"current_tracker takes a jaxtrack Tracker, got {tracker!r}")
    for backend in walk(tracker):
        check_delivery_options(backend)  # a bad when_full/max_pending is an error now, not lost reports later
    with _lock:
        previous = _current
        _current = tracker
        _unfinished.add(tracker)
    process_exit.install()  # SIGTERM and uncaught errors finish the run, marked killed/failed
    return _CurrentTrackerScope(tracker, previous)


def _get() -> Tracker:
    global _warned_no_tracker
    with _lock:
        if _current is not None:
            return _current
        if not _warned_no_tracker:
            _warned_no_tracker = True
            warnings.warn(
                "jaxtrack: no tracker is set, so logged values are dropped; "
                "call jaxtrack.init_tracker() (the local run store) or jaxtrack.current_tracker(tracker) first",
                NoTrackerWarning,
                stacklevel=3,
            )
        return _noop


def current_or_none() -> Tracker | None:
    """The current tracker, or ``None`` (no warning) when none is set."""
    with _lock:
        return _current


def log(metrics: Mapping[str, Any], *, step: int | None = None, commit: bool | None = None) -> None:
    """Logs ``metrics`` (nested dicts allowed) at ``step`` to the current tracker.

    ``step=None`` continues after the last step (``wandb.log``'s rule, see
    [`StepCounter`][jaxtrack.trackers.StepCounter]); ``commit=False`` keeps the step
    open for more values. JAX arrays are copied to the host by the backend
    where it writes. Inside a jitted function use
    [`jaxtrack.jit_log`][jaxtrack.jit_log].

    Examples:
        >>> import jaxtrack as jt
        >>> with jt.current_tracker(jt.NoopTracker()):
        ...     jt.log({"train": {"loss": 0.25}}, step=10)
    """
    flat = check_values(metrics)
    if isinstance(step, jax.Array):
        # Its value needs a device sync; its type does not.
        if step.ndim != 0 or step.dtype.kind not in "iu":
            raise TypeError(f"step must be an integer scalar, got a JAX array of shape {step.shape} and {step.dtype}")
    elif step is not None:
        check_step(step)
    tracker = _get()
    tracker.validate(flat)  # a value a backend would refuse is an error here, not a report lost later
    reporter.call_soon(tracker, "log", metrics, step=step, commit=commit)
    _raise_if_strict()  # after queueing: the healthy backends still record this report


def log_summary(metrics: Mapping[str, Any]) -> None:
    """Logs values that describe the whole run, like W&B's run summary.

    Examples:
        >>> import jaxtrack as jt
        >>> with jt.current_tracker(jt.NoopTracker()):
        ...     jt.log_summary({"best_loss": 0.0})
    """
    tracker = _get()
    tracker.validate(check_values(metrics))  # a backend's limits hold for its summary too
    reporter.call_soon(tracker, "log_summary", metrics)


def log_hyperparameters(hparams: Mapping[str, Any]) -> None:
    """Logs the run's hyperparameters; nested dicts become ``"a/b"`` keys.

    Values of keys that name credentials (``api_key``, ``password``,
    ``hf_token``...) are replaced by ``"[redacted]"`` before any backend sees
    them (see [`jaxtrack.redaction`][jaxtrack.redaction]).

    Examples:
        >>> import jaxtrack as jt
        >>> with jt.current_tracker(jt.NoopTracker()):
        ...     jt.log_hyperparameters({"optimizer": {"lr": 1e-3}, "batch_size": 32})
    """
    flatten(hparams)  # a malformed mapping is an error here, not on the reporter
    # Redacted here too, so trackers written by users never see a credential.
    reporter.call_soon(_get(), "log_hyperparameters", redact(hparams))


def log_artifact(artifact_path: str | os.PathLike[str], *, name: str | None = None, type: str | None = None) -> None:
    """Stores a file or directory with the run (a W&B artifact, a copy next to TensorBoard's files...).

    Waits until the backends have taken the file (at most 60 seconds for a
    backend that hangs), so it may be changed or deleted once this returns.

    Examples:
        >>> import jaxtrack as jt, tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "notes.txt"
        >>> _ = path.write_text("hello")
        >>> with jt.current_tracker(jt.NoopTracker()):
        ...     jt.log_artifact(path, name="notes", type="text")
    """
    if not os.path.exists(artifact_path):
        raise FileNotFoundError(f"artifact path does not exist: {os.fspath(artifact_path)!r}")
    # Waits, so the file may be changed or deleted once this returns.
    tracker = _get()
    if not reporter.call_soon(
        tracker, "log_artifact", artifact_path, name=name, type=type, wait=True, timeout=FINISH_TIMEOUT_SECS
    ):
        warnings.warn(_behind(tracker, "log_artifact"), RuntimeWarning, stacklevel=2)


def log_configuration(config: Any, *, name: str = "config") -> None:
    """Logs a run's configuration: as hyperparameters, and as a YAML artifact called ``name``.

    ``config`` is a dataclass, an ``ml_collections.ConfigDict``, or a mapping.
    Credentials in it are redacted, as by
    [`log_hyperparameters`][jaxtrack.tracking.log_hyperparameters].

    Examples:
        >>> import dataclasses, jaxtrack as jt
        >>> @dataclasses.dataclass
        ... class Config:
        ...     lr: float = 1e-3
        ...     layers: tuple = (64, 64)
        >>> with jt.current_tracker(jt.NoopTracker()):
        ...     jt.log_configuration(Config())
    """
    tracker = _get()
    plain = redact(to_plain(_config_to_dict(config)))
    reporter.call_soon(tracker, "log_hyperparameters", plain)
    with tempfile.TemporaryDirectory(prefix="jaxtrack-config-") as directory:
        path = os.path.join(directory, f"{safe_file_name(name)}.yaml")
        with open(path, "w", encoding="utf-8") as file:
            yaml.safe_dump(plain, file, sort_keys=False, allow_unicode=True)
        # Waits until the backends have taken (copied) the file, as log_artifact does.
        if not reporter.call_soon(
            tracker, "log_artifact", path, name=name, type="config", wait=True, timeout=FINISH_TIMEOUT_SECS
        ):
            warnings.warn(_behind(tracker, "log_configuration"), RuntimeWarning, stacklevel=2)


def get_tracker(name: str) -> Tracker:
    """Finds a tracker by name in the current tracker, looking inside composites.

    Raises ``KeyError`` naming the trackers that exist when none matches.

    Examples:
        >>> import jaxtrack as jt
        >>> with jt.current_tracker(jt.CompositeTracker([jt.NoopTracker()])):
        ...     jt.get_tracker("noop")
        NoopTracker(name='noop')
    """
    with _lock:
        root = _current
    if root is None:
        raise KeyError(f"no tracker named {name!r}: no tracker is set (call jaxtrack.init_tracker first)")
    found = walk(root)
    for tracker in found:
        if tracker.name == name:
            return tracker
    raise KeyError(f"no tracker named {name!r}; the current trackers are: {', '.join(repr(t.name) for t in found)}")


FINISH_TIMEOUT_SECS = 60.0
"""How long ``finish()`` (and the end of the process) waits for a backend that hangs before giving up on it."""


def finish(*, status: str = "finished", timeout: float | None = FINISH_TIMEOUT_SECS) -> None:
    """Finishes the current tracker (everything is written out) and unsets it.

    ``status`` says how the run ended, for backends that record it (the local
    store's run status, W&B's exit code): ``"finished"``, ``"failed"`` (an
    error) or ``"killed"`` (interrupted, preempted). A backend that has not
    finished within ``timeout`` seconds (it hangs, or is far behind) is given
    up on; a warning says which backends lost what, as it does for backends
    that failed or dropped reports.

    Examples:
        >>> import jaxtrack as jt
        >>> _ = jt.current_tracker(jt.NoopTracker())
        >>> jt.finish()
    """
    global _current
    check_run_end_status(status)
    tracker = _get()
    _wait_for_callbacks()  # jit_log callbacks still running log to the current tracker: keep it set for them
    with _lock:
        if _current is tracker:
            _current = None
    try:
        _finish(tracker, status=status, timeout=timeout)
        _raise_if_strict(tracker)
    finally:
        _end_strict(tracker)


def _finish(
    tracker: Tracker, *, status: str = "finished", timeout: float | None = FINISH_TIMEOUT_SECS, stacklevel: int = 3
) -> None:
    _unfinished.discard(tracker)
    _wait_for_callbacks()
    if status != "finished":
        reporter.call_soon(tracker, "set_status", status)
    finished = reporter.call_soon(tracker, "finish", wait=True, timeout=timeout)
    rep = reporter.default_reporter()
    lost = []
    for backend in walk(tracker):  # this run's backends only, not earlier ones of the same name
        for method, count in rep.errors.take(backend).items():
            if method == "dropped":
                lost.append(f"{backend.name}: {count} report(s) dropped as it fell behind")
            else:
                lost.append(f"{backend.name}.{method} failed x{count}")
    if not finished:
        backlog = rep.backlog(tracker)
        lost += [
            f"{name}: did not finish within {timeout:.0f} s, {count} call(s) still queued for it"
            for name, count in backlog.items()
        ] or [f"the reporter did not finish within {timeout:.0f} s ({rep.pending} call(s) still queued)"]
    if lost:
        warnings.warn(
            "jaxtrack: not everything logged reached every backend: " + "; ".join(lost),
            RuntimeWarning,
            stacklevel=stacklevel,  # the user's line: finish(), the end of a `with`, a writer's close()
        )


def _behind(tracker: Tracker, what: str) -> str:
    """The warning for a call that waited ``FINISH_TIMEOUT_SECS`` for backends and went on without them."""
    backlog = reporter.default_reporter().backlog(tracker)
    slow = ", ".join(f"{name} ({count} call(s) queued)" for name, count in backlog.items()) or "the reporter"
    return f"jaxtrack: {what} waited {FINISH_TIMEOUT_SECS:.0f} s for {slow}, which hangs or is far behind; going on"


class BackendError(RuntimeError):
    """A backend failed to record data, raised on the training thread in strict mode (``init_tracker(strict=True)``).

    It is raised at the next ``log``, ``flush`` or ``finish`` after the
    failure; the other backends still get every call.

    Examples:
        >>> import warnings, jaxtrack as jt
        >>> from jaxtrack.tracking import BackendError
        >>> class Broken(jt.NoopTracker):
        ...     name = "broken"
        ...     def log(self, metrics, *, step=None, commit=None):
        ...         raise OSError("disk full")
        >>> _ = jt.init_tracker(Broken(), strict=True)
        >>> jt.log({"loss": 1.0}, step=0)
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     try:
        ...         jt.finish()
        ...     except BackendError as error:
        ...         print(error)
        tracker 'broken' failed in log (strict mode): OSError: disk full
        >>> print(caught[0].message)
        jaxtrack: not everything logged reached every backend: broken.log failed x1
    """


# The tracker started in strict mode and the reporter's failure count then (else None):
# a backend failure after it is raised on the training thread at the next call.
_strict: tuple[Tracker, int] | None = None


def _raise_if_strict(tracker: Tracker | None = None) -> None:
    global _strict
    strict = _strict
    if strict is None or strict[0] is not (tracker if tracker is not None else _current):
        return
    errors = reporter.default_reporter().errors
    if errors.total > strict[1]:
        _strict = (strict[0], errors.total)
        (name, method), error = next(reversed(errors.last.items()))
        raise BackendError(
            f"tracker {name!r} failed in {method} (strict mode): {type(error).__name__}: {error}"
        ) from error


def _end_strict(tracker: Tracker) -> None:
    global _strict
    if _strict is not None and _strict[0] is tracker:
        _strict = None


def flush(timeout: float | None = None) -> bool:
    """Waits until every call made so far has reached the backends, and has them write it out.

    Returns ``False`` if ``timeout`` (seconds) ran out first.

    Examples:
        >>> import jaxtrack as jt
        >>> with jt.current_tracker(jt.NoopTracker()):
        ...     jt.log({"loss": 1.0}, step=0)
        ...     jt.flush()
        True
    """
    _wait_for_callbacks()
    with _lock:
        tracker = _current
    if tracker is not None:
        reporter.call_soon(tracker, "flush")
    flushed = reporter.default_reporter().flush(timeout)
    _raise_if_strict()
    return flushed


def _wait_for_callbacks() -> None:
    # jit_log's host-callback fallback queues its values when the device runs
    # the step; wait for steps still running so their values are not missed.
    jax.effects_barrier()


def release(tracker: Tracker) -> None:
    """Finishes ``tracker`` and, if it is the current tracker, unsets it (what leaving ``with tracker:`` does).

    Its callers (``Tracker.__exit__``, a CLU writer's ``close``) call it for
    the user: a warning about lost reports points at the user's line.
    """
    global _current
    _wait_for_callbacks()
    with _lock:
        if _current is tracker:
            _current = None
    _finish(tracker, stacklevel=4)


def init_tracker(spec: Any = None, *, run_id: str | None = None, strict: bool = False) -> Tracker:
    """Builds trackers from a config and makes the result the current tracker.

    With no ``spec``, the default: a [`LocalTracker`][jaxtrack.LocalTracker] writing
    to the local run store (``runs/jaxtrack.db``, or ``$JAXTRACK_STORE``),
    which ``jaxtrack runs`` / ``jaxtrack show`` read. Otherwise ``spec`` is
    anything [`TrackerConfig.parse`][jaxtrack.trackers.TrackerConfig.parse] reads (a config, a dict
    with ``type:``, YAML text) or a list of those, which gives a
    [`CompositeTracker`][jaxtrack.CompositeTracker]; a [`Tracker`][jaxtrack.Tracker] is used as
    is, alone or in the list (``[WandbTracker(wandb.init()), {"type": "local"}]``).
    Every backend made from a config gets the same ``run_id`` (one is made up if not given).
    In a ``jax.distributed`` run every process calls ``init_tracker`` alike:
    all use the id process 0 made up, and a given id is checked to be the same
    on every process (see [`agree_on_run_id`][jaxtrack.multihost.agree_on_run_id]).
    The returned tracker is also a context manager that finishes it.

    A backend that fails is normally reported once, counted, and left behind
    while training goes on (``finish()`` says what was lost). With
    ``strict=True``, a backend failure is raised instead, as
    [`BackendError`][jaxtrack.tracking.BackendError], on the training thread at the next ``log``,
    ``flush`` or ``finish``.

    Examples:
        >>> import jaxtrack as jt
        >>> with jt.init_tracker([{"type": "noop"}, "type: noop"], run_id="demo") as tracker:
        ...     jt.log({"loss": 1.0}, step=0)
        >>> type(tracker).__name__
        'CompositeTracker'
    """
    from jaxtrack.trackers.base import CompositeTracker

    if spec is None:
        spec = DEFAULT_TRACKERS
    if isinstance(spec, Tracker):
        tracker = spec
    else:
        # A list may hold trackers built in code next to configs; every config is checked before any starts.
        given = list(spec) if isinstance(spec, (list, tuple)) else []
        parsed = TrackerConfig.parse([item for item in given if not isinstance(item, Tracker)] if given else spec)
        # In a jax.distributed run every process gets the same id (process 0's, if none is given).
        run_id = agree_on_run_id(validate_run_id(run_id) if run_id is not None else None, new_run_id)
        if isinstance(parsed, list):
            configs = iter(parsed)
            entries = [item if isinstance(item, Tracker) else next(configs) for item in given] if given else parsed
            backends: list[Tracker] = []
            try:
                for entry in entries:
                    backends.append(entry if isinstance(entry, Tracker) else entry.init(run_id))
            except BaseException:
                for backend in backends:
                    if not any(backend is item for item in given):  # finish what was started here, not the caller's
                        backend.finish()
                raise
            tracker = CompositeTracker(backends)
        else:
            tracker = parsed.init(run_id)
    global _strict
    _strict = (tracker, reporter.default_reporter().errors.total) if strict else None
    current_tracker(tracker)
    return tracker


DEFAULT_TRACKERS: dict[str, Any] = {"type": "local"}
"""What ``init_tracker()`` builds when given no config (and ``jaxtrack.train`` when no tracker is set)."""


def _config_to_dict(config: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return dataclasses.asdict(config)
    to_dict = getattr(config, "to_dict", None)
    if callable(to_dict):  # ml_collections.ConfigDict / FrozenConfigDict, and look-alikes
        result = to_dict()
        if isinstance(result, Mapping):
            return dict(result)
    if isinstance(config, Mapping):
        return dict(config)
    raise TypeError(
        f"log_configuration takes a dataclass instance, an ml_collections.ConfigDict or a mapping, got {type(config).__name__}"
    )


@atexit.register
def _finish_at_exit() -> None:
    try:
        _wait_for_callbacks()
    except Exception:  # noqa: BLE001 - the runtime may be going away; deliver what is queued
        pass
    finish_all(status="finished")


def finish_all(*, status: str, timeout: float = FINISH_TIMEOUT_SECS) -> None:
    """Finishes every tracker made current and not finished yet (at exit, on SIGTERM), waiting at most ``timeout``.

    A backend that hangs costs at most ``timeout`` once: the trackers after
    it are given what is left of it, at least a second each.
    """
    global _current
    deadline = time.monotonic() + timeout
    if not reporter.default_reporter().flush(timeout):
        warnings.warn(
            f"jaxtrack: backends did not take everything logged within {timeout:.0f} s; "
            f"{reporter.default_reporter().pending} call(s) are lost",
            RuntimeWarning,
            stacklevel=2,
        )
    with _lock:
        _current = None
    for tracker in list(_unfinished):
        try:
            _finish(tracker, status=status, timeout=max(deadline - time.monotonic(), 1.0))
        except Exception as error:  # noqa: BLE001 - exit must go on; say what was not written
            warnings.warn(f"jaxtrack: finishing {tracker!r} failed: {error}", RuntimeWarning, stacklevel=2)


__all__ = [
    "BackendError",
    "NoTrackerWarning",
    "current_tracker",
    "finish",
    "flush",
    "get_tracker",
    "init_tracker",
    "log",
    "log_artifact",
    "log_configuration",
    "log_hyperparameters",
    "log_summary",
    "new_run_id",
    "validate_run_id",
]
