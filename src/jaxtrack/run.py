"""A run's lifecycle: the current tracker, the one way a run ends, strict mode, and the exits that end runs.

Every way a run can end goes through [`end`][jaxtrack.run.end]:
``jaxtrack.finish()``, ``tracker.finish()``, leaving ``with tracker:``, a CLU
writer's ``close()``, ``jaxtrack.train`` failing, the process exiting, an
uncaught exception and SIGTERM. It writes out everything submitted to the
tracker before it, then ends every backend of the tracker (with its status),
waiting at most the finish timeout for a backend that hangs, and warns with a
``jaxtrack.DataLossWarning`` naming each backend and what it lost.

How the process's end ends runs:

- a normal exit finishes every unfinished tracker as ``finished``;
- an exception nobody catches finishes them as ``failed`` (``killed`` for
  Ctrl-C) before Python prints it, through ``sys.excepthook``;
- SIGTERM (preemption, ``kill``, a scheduler's time limit): when a tracker is
  first used on the main thread and SIGTERM still has its default action,
  jaxtrack handles it: it ends every unfinished tracker as ``killed``, waiting
  at most ``SIGTERM_FINISH_TIMEOUT_SECS`` in all (inside the usual 30-second
  grace of cloud preemption and Kubernetes), then restores the default action
  and re-sends the signal, so the process ends exactly as it would have
  (killed by SIGTERM, exit status 143 in a shell). A handler installed by the
  program or a framework is left alone: call ``jaxtrack.finish(status="killed")``
  from it.

``FINISH_TIMEOUT_SECS`` (60) and ``SIGTERM_FINISH_TIMEOUT_SECS`` (20) are read
when a run ends, so a program may change them. ``RUN_END_STATUSES`` are the
ways a run can end: ``"finished"``, ``"failed"`` and ``"killed"``.

Examples:
    >>> import jaxtrack as jt
    >>> tracker = jt.NoopTracker()
    >>> with tracker:  # current for the block; leaving it ends the run
    ...     jt.current_tracker() is tracker
    True
    >>> is_ended(tracker)
    True
"""

from __future__ import annotations

import atexit
import signal
import sys
import threading
import time
import weakref
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any

from jaxtrack import pipeline
from jaxtrack.errors import BackendError, DataLossWarning, warn
from jaxtrack.pipeline.calls import Call

FINISH_TIMEOUT_SECS = 60.0
"""How long ending a run (and the end of the process) waits for a backend that hangs before giving up on it."""

SIGTERM_FINISH_TIMEOUT_SECS = 20.0
"""How long the SIGTERM handler waits for the backends, in all, before the process ends anyway."""

RUN_END_STATUSES = ("finished", "failed", "killed")
"""How a run can end (``Tracker.set_status``, ``jaxtrack.finish``)."""

_lock = threading.RLock()  # re-entrant: a SIGTERM handler may run while it is held
_current: Any = None
# Trackers used or made current and not ended yet, by id (a user's tracker need not be hashable):
# ended when the process ends, so nothing they were sent is lost when a script forgets finish().
_unfinished: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()
_ENDED = "_jaxtrack_ended"  # set on a tracker (and its backends) once its run ends
_KEEP: Any = object()


def check_run_end_status(status: str) -> str:
    """``status`` if it is one of ``RUN_END_STATUSES``, else a ``ValueError`` naming it.

    Examples:
        >>> check_run_end_status("killed")
        'killed'
    """
    if status not in RUN_END_STATUSES:
        raise ValueError(f"status must be one of {', '.join(map(repr, RUN_END_STATUSES))}, got {status!r}")
    return status


# -- the current tracker ---------------------------------------------------------------------------


def current() -> Any:
    """The current tracker, or ``None`` when none is set.

    ``jaxtrack.current_tracker()`` is the user-facing form, which warns and
    gives a ``NoopTracker`` instead of ``None``.

    Examples:
        >>> from jaxtrack.trackers import NoopTracker
        >>> tracker = NoopTracker()
        >>> _ = set_current(tracker)
        >>> current() is tracker
        True
        >>> end(tracker)  # ending the current tracker's run unsets it
        >>> current() is None
        True
    """
    return _current


def set_current(tracker: Any) -> Any:
    """Makes ``tracker`` current; returns the tracker that was (to restore later), possibly ``None``.

    The tracker is also [registered][jaxtrack.run.register], so the end of the
    process ends its run. ``jaxtrack.current_tracker(t)`` and ``with t:`` call it.

    Examples:
        >>> from jaxtrack.trackers import NoopTracker
        >>> first, second = NoopTracker(), NoopTracker()
        >>> before = set_current(first)
        >>> set_current(second) is first  # the tracker that was current, to restore later
        True
        >>> restore(second, first); restore(first, before)
        >>> end(second); end(first)
    """
    global _current
    with _lock:
        previous, _current = _current, tracker
    register(tracker)
    return previous


def restore(tracker: Any, previous: Any) -> None:
    """Makes ``previous`` current again if ``tracker`` still is (leaving a scope that set it).

    If another tracker was made current meanwhile, it stays current.

    Examples:
        >>> from jaxtrack.trackers import NoopTracker
        >>> outer, inner = NoopTracker(), NoopTracker()
        >>> before = set_current(outer)
        >>> previous = set_current(inner)
        >>> restore(inner, previous)
        >>> current() is outer
        True
        >>> restore(outer, before); end(inner); end(outer)
    """
    global _current
    with _lock:
        if _current is tracker:
            _current = previous


def register(tracker: Any) -> None:
    """Remembers ``tracker`` as unfinished (it is ended when the process ends) and installs the exit hooks.

    A tracker's first call registers it; registering twice, or after its run
    ended, does nothing.

    Examples:
        >>> from jaxtrack.trackers import NoopTracker
        >>> tracker = NoopTracker()
        >>> register(tracker)  # from now on, the process's end ends its run
        >>> end(tracker)
    """
    if id(tracker) not in _unfinished and not is_ended(tracker):  # the common case: known, without the lock
        with _lock:
            _unfinished[id(tracker)] = tracker
        install_exit_hooks()


def is_ended(tracker: Any) -> bool:
    """Whether ``tracker``'s run has ended (``finish``, the end of a ``with`` block, ...).

    Examples:
        >>> from jaxtrack.trackers import NoopTracker
        >>> tracker = NoopTracker()
        >>> is_ended(tracker)
        False
        >>> tracker.finish()
        >>> is_ended(tracker)
        True
    """
    return getattr(tracker, _ENDED, False)


# -- the one way a run ends ------------------------------------------------------------------------


def end(
    tracker: Any,
    *,
    status: str = "finished",
    timeout: float | None = None,
    previous: Any = _KEEP,
) -> None:
    """Ends ``tracker``'s run: everything submitted to it before is written out, then every backend finishes.

    ``status`` is how the run ended (``"finished"``, ``"failed"``,
    ``"killed"``), for backends that record it. Waits at most ``timeout``
    seconds (default ``FINISH_TIMEOUT_SECS``) for backends that hang; a
    warning (``jaxtrack.DataLossWarning``) names what each backend lost. If
    ``tracker`` is current it is unset, or ``previous`` is made current (the
    end of a scope). Ending a run twice is harmless. In strict mode, a backend
    failure not raised yet is raised here, after the run has ended.

    Examples:
        >>> from jaxtrack.trackers import NoopTracker
        >>> tracker = NoopTracker()
        >>> tracker.log({"loss": 0.5}, step=0)
        >>> end(tracker, status="killed")  # the log is written first
        >>> is_ended(tracker)
        True
        >>> end(tracker)  # ending twice is harmless
    """
    global _current
    check_run_end_status(status)
    timeout = FINISH_TIMEOUT_SECS if timeout is None else timeout
    deadline = time.monotonic() + timeout
    if not is_ended(tracker):
        # jit_log's host callbacks of steps still running log to the current tracker: keep it set for them.
        wait_for_host_callbacks(deadline)
    with _lock:
        if _current is tracker:
            _current = None if previous is _KEEP else previous
        if is_ended(tracker):
            return
        backends = tracker.backends()
        for ended in {id(t): t for t in [tracker, *backends]}.values():
            _mark_ended(ended)
        _unfinished.pop(id(tracker), None)
    dispatcher = pipeline.default_dispatcher()
    if status != "finished":
        dispatcher.submit(tracker, Call("set_status", args=(status,)), room=False)
    finished = dispatcher.submit(tracker, Call("finish"), wait=True, deadline=deadline, room=False)
    failure = dispatcher.health.pop_strict(backends)  # strict mode: raised once the run has ended
    lost = [health.describe() for health in (dispatcher.health.take(backend) for backend in backends) if health]
    if not finished:
        backlog = dispatcher.backlog(tracker)
        lost += [
            f"{name}: did not finish within {timeout:.0f} s, {count} call(s) still queued for it"
            for name, count in backlog.items()
        ] or [f"the dispatcher did not finish within {timeout:.0f} s ({dispatcher.pending} call(s) still queued)"]
    dispatcher.forget(tracker)
    if lost:
        warn("jaxtrack: not everything logged reached every backend: " + "; ".join(lost), DataLossWarning)
    if failure is not None:
        raise BackendError(failure.backend, failure.method, failure.step, failure.error) from failure.error


def _mark_ended(tracker: Any) -> None:
    try:
        object.__setattr__(tracker, _ENDED, True)
    except (AttributeError, TypeError):  # a tracker with __slots__: it is still ended in the pipeline
        pass


def wait_for_host_callbacks(deadline: float | None) -> None:
    """Waits (at most until ``deadline``, a ``time.monotonic()`` time) for steps still running whose ``jit_log`` host callbacks log.

    What ``jax.effects_barrier()`` waits for, bounded: the runtime tokens of
    the computations this thread dispatched (JAX keeps them per thread) are
    waited for on a helper thread, so a device that hangs cannot keep a run
    from ending.

    Examples:
        >>> import time
        >>> wait_for_host_callbacks(time.monotonic() + 10)  # nothing running: returns at once
    """
    if "jax" not in sys.modules:
        return
    import jax

    try:
        from jax._src import dispatch

        tokens = dispatch.runtime_tokens  # this thread's: JAX keeps them in a threading.local
        pending = [*tokens.current_tokens.values(), *tokens.output_runtime_tokens.values()]
    except (ImportError, AttributeError):  # another JAX: its own barrier, on this thread
        jax.effects_barrier()
        return
    if not pending:
        return
    waiter = threading.Thread(
        target=lambda: [token.block_until_ready() for token in pending], name="jaxtrack-effects", daemon=True
    )
    try:
        waiter.start()
    except RuntimeError:  # no new threads while the interpreter shuts down
        return
    waiter.join(None if deadline is None else max(deadline - time.monotonic(), 0.0))


def end_all(*, status: str, timeout: float | None = None) -> None:
    """Ends every unfinished tracker (at exit, on SIGTERM), waiting at most ``timeout`` seconds in all.

    A backend that hangs costs at most ``timeout`` once: the trackers after
    it are given what is left of it, at least a second each. Called by the
    exit hooks; a program rarely needs it.

    Examples:
        >>> end_all(status="killed", timeout=SIGTERM_FINISH_TIMEOUT_SECS)  # doctest: +SKIP
    """
    global _current
    timeout = FINISH_TIMEOUT_SECS if timeout is None else timeout
    deadline = time.monotonic() + timeout
    with _lock:
        _current = None
        trackers = list(_unfinished.values())
    for tracker in trackers:
        try:
            end(tracker, status=status, timeout=max(deadline - time.monotonic(), 1.0))
        except BackendError:
            pass  # strict mode: the warning at its end already names the failure
        except Exception as error:  # noqa: BLE001 - exit must go on; say what was not written
            warn(f"jaxtrack: ending {tracker!r} failed: {error}", DataLossWarning)


# -- strict mode -----------------------------------------------------------------------------------


def set_strict(tracker: Any) -> None:
    """From now on, a failure of any backend of ``tracker`` is raised on the caller's thread (``BackendError``).

    What ``jaxtrack.init_tracker(..., strict=True)`` turns on. The failure is
    raised by the next call into jaxtrack after it happened (see
    [`raise_if_strict`][jaxtrack.run.raise_if_strict]), or when the run ends.

    Examples:
        >>> import warnings, jaxtrack as jt
        >>> class NoSummaries(jt.NoopTracker):
        ...     name = "no-summaries"
        ...     def log_summary(self, metrics): raise ValueError("no summaries here")
        >>> tracker = NoSummaries()
        >>> set_strict(tracker)
        >>> tracker.log_summary({"best_loss": 0.1})  # fails later, on the backend's thread
        >>> try:
        ...     tracker.flush()  # the next call into jaxtrack raises it
        ... except jt.BackendError as error:
        ...     print(error.backend, error.method, repr(error.__cause__))
        no-summaries log_summary ValueError('no summaries here')
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore", jt.DataLossWarning)  # "no-summaries.log_summary failed x1"
        ...     end(tracker)
    """
    pipeline.default_dispatcher().health.watch_strict(tracker.backends())


def raise_if_strict() -> None:
    """Raises the next strict-mode backend failure not raised yet (the lowest step first), naming its backend, method and step.

    Every door calls it after submitting, so a failure surfaces on the
    training thread at the next call into jaxtrack.

    Examples:
        >>> raise_if_strict()  # no strict-mode failure pending: nothing happens
    """
    failure = pipeline.default_dispatcher().health.pop_strict()
    if failure is not None:
        raise BackendError(failure.backend, failure.method, failure.step, failure.error) from failure.error


# -- the process's end -----------------------------------------------------------------------------

_hooks_lock = threading.Lock()
_sigterm_installed = False
_previous_excepthook: Callable[[type[BaseException], BaseException, TracebackType | None], Any] | None = None


def install_exit_hooks() -> None:
    """Installs the uncaught-exception hook and, where possible, the SIGTERM handler (once each).

    [`register`][jaxtrack.run.register] calls it, so the first tracker used
    installs them; the hook calls the ``sys.excepthook`` that was there before.

    Examples:
        >>> install_exit_hooks()  # a second call changes nothing
    """
    global _previous_excepthook
    with _hooks_lock:
        if _previous_excepthook is None:
            _previous_excepthook = sys.excepthook
            sys.excepthook = _on_uncaught
    install_sigterm_handler()


def install_sigterm_handler() -> bool:
    """Installs jaxtrack's SIGTERM handler if SIGTERM has its default action; ``True`` if it is installed.

    Only the main thread can install signal handlers; elsewhere this does nothing.

    Examples:
        >>> import signal
        >>> install_sigterm_handler() == (signal.getsignal(signal.SIGTERM) is _on_sigterm)
        True
    """
    global _sigterm_installed
    with _hooks_lock:
        if _sigterm_installed:
            return signal.getsignal(signal.SIGTERM) is _on_sigterm
        if threading.current_thread() is not threading.main_thread():
            return False
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return False
        signal.signal(signal.SIGTERM, _on_sigterm)
        _sigterm_installed = True
        return True


def _on_uncaught(kind: type[BaseException], error: BaseException, traceback: TracebackType | None) -> None:
    try:
        end_all(status="killed" if issubclass(kind, KeyboardInterrupt) else "failed")
    finally:
        (_previous_excepthook or sys.__excepthook__)(kind, error, traceback)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    try:
        end_all(status="killed", timeout=SIGTERM_FINISH_TIMEOUT_SECS)
    finally:
        # The default action again, and the signal again: the process ends as it would have.
        signal.signal(signum, signal.SIG_DFL)
        signal.raise_signal(signum)


@atexit.register
def _on_exit() -> None:
    end_all(status="finished")


__all__ = [
    "FINISH_TIMEOUT_SECS",
    "RUN_END_STATUSES",
    "SIGTERM_FINISH_TIMEOUT_SECS",
    "check_run_end_status",
    "current",
    "end",
    "end_all",
    "install_exit_hooks",
    "install_sigterm_handler",
    "is_ended",
    "raise_if_strict",
    "register",
    "restore",
    "set_current",
    "set_strict",
    "wait_for_host_callbacks",
]
