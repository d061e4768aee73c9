"""The module-level functions: ``log`` and friends, the current tracker, ``init_tracker``, ``finish``.

Each logging function calls the current tracker's own method, so it goes
through the same front door as ``tracker.log(...)``: the values are checked
on the calling thread (an error at the call names the key), then the call is
queued, in order, for the background pipeline (``jaxtrack.pipeline``), which
copies JAX arrays to the host and calls each backend on its own thread.
``flush()``, ``finish()``, leaving a scope and ``log_artifact`` wait (at most
``jaxtrack.run.FINISH_TIMEOUT_SECS``) until the calls before them have reached
the backends.

With no tracker set, every function here (``current_tracker()``, ``log``,
``log_summary``, ``log_hyperparameters``, ``log_artifact``,
``log_configuration``, ``finish``) warns once with
[`NoTrackerWarning`][jaxtrack.NoTrackerWarning] and drops the values: a script
without tracking set up still trains. ``get_tracker`` is a look-up and raises
``KeyError`` instead. ``DEFAULT_TRACKERS`` is what ``init_tracker()`` builds
with no config (the local run store).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any, overload

import yaml

from jaxtrack import pipeline, run
from jaxtrack._paths import safe_file_name
from jaxtrack.errors import NoTrackerWarning, warn
from jaxtrack.ids import new_run_id, validate_run_id
from jaxtrack.multihost import agree_on_run_id
from jaxtrack.pipeline.calls import Call
from jaxtrack.pipeline.lanes import check_delivery_options
from jaxtrack.redaction import redact
from jaxtrack.trackers.base import NoopTracker, Tracker, walk
from jaxtrack.trackers.composite import CompositeTracker
from jaxtrack.trackers.config import TrackerConfig
from jaxtrack.values.checks import check_step_argument, check_values
from jaxtrack.values.convert import flatten, to_plain

DEFAULT_TRACKERS: dict[str, Any] = {"type": "local"}
"""What ``init_tracker()`` builds when given no config (and ``jaxtrack.train`` when no tracker is set)."""

_warned_no_tracker = False


class _CurrentTrackerScope:
    """What ``current_tracker(t)`` returns: ``t`` is already current; leaving a ``with`` restores the previous one."""

    def __init__(self, tracker: Tracker, previous: Tracker | None) -> None:
        self.tracker = tracker
        self._previous = previous

    def __enter__(self) -> Tracker:
        return self.tracker

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        try:
            self.tracker.flush()  # everything logged in the scope is written when it ends (the run goes on)
        finally:
            run.restore(self.tracker, self._previous)


@overload
def current_tracker() -> Tracker: ...
@overload
def current_tracker(tracker: Tracker) -> _CurrentTrackerScope: ...
def current_tracker(tracker: Tracker | None = None) -> Tracker | _CurrentTrackerScope:
    """Gets the current tracker, or sets it.

    ``current_tracker()`` returns the tracker the module functions log to (a
    [`NoopTracker`][jaxtrack.NoopTracker], with a one-time
    [`NoTrackerWarning`][jaxtrack.NoTrackerWarning], if none is set).
    ``current_tracker(t)`` makes ``t`` current at once; used as a context
    manager, it restores the previous tracker on exit, once everything logged
    to ``t`` is written (``t`` is not finished: ``with t:`` is what finishes it).

    Examples:
        >>> import jaxtrack as jt
        >>> with jt.current_tracker(jt.NoopTracker()) as tracker:
        ...     jt.log({"loss": 0.5}, step=0)
        ...     jt.current_tracker() is tracker
        True
    """
    if tracker is None:
        current = run.current()
        if current is None:
            _warn_no_tracker()
            return NoopTracker()
        return current
    if not isinstance(tracker, Tracker):
        raise TypeError(f"current_tracker takes a jaxtrack Tracker, got {tracker!r}")
    for backend in tracker.backends():
        check_delivery_options(backend)  # a bad when_full/max_pending is an error now, not lost reports later
    return _CurrentTrackerScope(tracker, run.set_current(tracker))


def _warn_no_tracker() -> None:
    global _warned_no_tracker
    if not _warned_no_tracker:
        _warned_no_tracker = True
        warn(
            "jaxtrack: no tracker is set, so logged values are dropped; "
            "call jaxtrack.init_tracker() (the local run store) or jaxtrack.current_tracker(tracker) first",
            NoTrackerWarning,
        )


def log(metrics: Mapping[str, Any], *, step: int | None = None, commit: bool | None = None) -> None:
    """Logs ``metrics`` (nested dicts allowed) at ``step`` to the current tracker.

    ``step=None`` continues after the last step (``wandb.log``'s rule);
    ``commit=False`` keeps the step open for more values. JAX arrays are
    copied on their device (so the next step may donate them) and fetched
    off the training thread. Inside a jitted function use
    [`jaxtrack.jit_log`][jaxtrack.jit_log].

    Examples:
        >>> import jaxtrack as jt
        >>> with jt.current_tracker(jt.NoopTracker()):
        ...     jt.log({"train": {"loss": 0.25}}, step=10)
    """
    tracker = run.current()
    if tracker is None:
        check_values(metrics)  # a bad value is an error whether or not a tracker is set
        check_step_argument(step)
        _warn_no_tracker()
        return
    tracker.log(metrics, step=step, commit=commit)


def log_summary(metrics: Mapping[str, Any]) -> None:
    """Logs values that describe the whole run, like W&B's run summary.

    Examples:
        >>> import jaxtrack as jt
        >>> with jt.current_tracker(jt.NoopTracker()):
        ...     jt.log_summary({"best_loss": 0.0})
    """
    tracker = run.current()
    if tracker is None:
        check_values(metrics)
        _warn_no_tracker()
        return
    tracker.log_summary(metrics)


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
    tracker = run.current()
    if tracker is None:
        flatten(hparams)
        _warn_no_tracker()
        return
    tracker.log_hyperparameters(hparams)


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
    tracker = run.current()
    if tracker is None:
        _warn_no_tracker()
        return
    tracker.log_artifact(artifact_path, name=name, type=type)


def log_configuration(config: Any, *, name: str = "config") -> None:
    """Logs a run's configuration: as hyperparameters, and as a YAML artifact called ``name``.

    ``config`` is a dataclass, an ``ml_collections.ConfigDict``, or a mapping.
    Credentials in it are redacted, as by
    [`log_hyperparameters`][jaxtrack.log_hyperparameters].

    Examples:
        >>> import dataclasses, jaxtrack as jt
        >>> @dataclasses.dataclass
        ... class Config:
        ...     lr: float = 1e-3
        ...     layers: tuple = (64, 64)
        >>> with jt.current_tracker(jt.NoopTracker()):
        ...     jt.log_configuration(Config())
    """
    plain = redact(to_plain(_config_to_dict(config)))
    tracker = run.current()
    if tracker is None:
        _warn_no_tracker()
        return
    tracker.log_hyperparameters(plain)
    with tempfile.TemporaryDirectory(prefix="jaxtrack-config-") as directory:
        path = os.path.join(directory, f"{safe_file_name(name)}.yaml")
        with open(path, "w", encoding="utf-8") as file:
            yaml.safe_dump(plain, file, sort_keys=False, allow_unicode=True)
        tracker.log_artifact(path, name=name, type="config")  # waits until the backends took the file


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


def get_tracker(name: str) -> Tracker:
    """Finds a tracker by name in the current tracker, looking inside composites.

    Raises ``KeyError`` naming the trackers that exist when none matches.

    Examples:
        >>> import jaxtrack as jt
        >>> with jt.current_tracker(jt.CompositeTracker([jt.NoopTracker()])):
        ...     jt.get_tracker("noop")
        NoopTracker(name='noop')
    """
    root = run.current()
    if root is None:
        raise KeyError(f"no tracker named {name!r}: no tracker is set (call jaxtrack.init_tracker first)")
    found = walk(root)
    for tracker in found:
        if tracker.name == name:
            return tracker
    raise KeyError(f"no tracker named {name!r}; the current trackers are: {', '.join(repr(t.name) for t in found)}")


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
    deadline = None if timeout is None else time.monotonic() + timeout
    run.wait_for_host_callbacks(deadline)  # jit_log's host callbacks of steps still running log too
    tracker = run.current()
    if tracker is not None and not run.is_ended(tracker):
        tracker._submit(Call("flush"))
    flushed = pipeline.flush(None if deadline is None else max(deadline - time.monotonic(), 0.0))
    run.raise_if_strict()
    return flushed


def finish(*, status: str = "finished", timeout: float | None = None) -> None:
    """Finishes the current tracker (everything is written out) and unsets it.

    ``status`` says how the run ended, for backends that record it (the local
    store's run status, W&B's exit code): ``"finished"``, ``"failed"`` (an
    error) or ``"killed"`` (interrupted, preempted). A backend that has not
    finished within ``timeout`` seconds (default
    ``jaxtrack.run.FINISH_TIMEOUT_SECS``, 60: it hangs, or is far behind) is
    given up on; a [`DataLossWarning`][jaxtrack.DataLossWarning] says which
    backends lost what, as it does for backends that failed or dropped reports.

    Examples:
        >>> import jaxtrack as jt
        >>> _ = jt.current_tracker(jt.NoopTracker())
        >>> jt.finish()
    """
    run.check_run_end_status(status)
    tracker = run.current()
    if tracker is None:
        _warn_no_tracker()
        return
    run.end(tracker, status=status, timeout=timeout)


def init_tracker(spec: Any = None, *, run_id: str | None = None, strict: bool = False) -> Tracker:
    """Builds trackers from a config and makes the result the current tracker.

    With no ``spec``, the default: a ``LocalTracker`` writing to the local run
    store (``runs/jaxtrack.db``, or ``$JAXTRACK_STORE``), which ``jaxtrack
    runs`` / ``jaxtrack show`` read. Otherwise ``spec`` is anything
    [`TrackerConfig.parse`][jaxtrack.trackers.config.TrackerConfig.parse] reads (a config, a dict
    with ``type:``, YAML text) or a list of those, which gives a
    [`CompositeTracker`][jaxtrack.CompositeTracker]; a [`Tracker`][jaxtrack.Tracker] is used as
    is, alone or in the list (``[WandbTracker(wandb.init()), {"type": "local"}]``).
    Every backend made from a config gets the same ``run_id`` (one is made up if not given).
    In a ``jax.distributed`` run every process calls ``init_tracker`` alike:
    all use the id process 0 made up, and a given id is checked to be the same
    on every process (see [`agree_on_run_id`][jaxtrack.multihost.agree_on_run_id]).
    The returned tracker is also a context manager that finishes it.

    A backend that fails is normally reported once, counted, and left behind
    while training goes on (the run's end says what was lost). With
    ``strict=True``, each backend failure is raised instead, as
    [`BackendError`][jaxtrack.BackendError] naming the backend and step, on the
    training thread at the next call into jaxtrack.

    Examples:
        >>> import jaxtrack as jt
        >>> with jt.init_tracker([{"type": "noop"}, "type: noop"], run_id="demo") as tracker:
        ...     jt.log({"loss": 1.0}, step=0)
        >>> type(tracker).__name__
        'CompositeTracker'
    """
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
    current_tracker(tracker)
    if strict:
        run.set_strict(tracker)
    return tracker


__all__ = [
    "DEFAULT_TRACKERS",
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
]
