"""How runs end when the process does: SIGTERM, an uncaught exception, or a normal exit.

A normal exit finishes every unfinished tracker (``finished``; see
``jaxtrack.tracking.finish_all``). An exception nobody catches finishes
them as ``failed`` (``killed`` for Ctrl-C) before Python prints it, through
``sys.excepthook``. For SIGTERM (preemption, ``kill``, a scheduler's time
limit): when a tracker first becomes current on the main thread, and SIGTERM
still has its default action, jaxtrack handles SIGTERM: it flushes what was logged
to every backend (waiting at most ``SIGTERM_FINISH_TIMEOUT_SECS``, inside
the usual 30-second grace of cloud preemption and Kubernetes), finishes each
unfinished tracker with status ``killed``, then restores the default action
and re-sends the signal, so the process ends exactly as it would have (killed
by SIGTERM, exit status 143 in a shell). A handler installed by the program
or a framework is left alone: call ``jaxtrack.finish(status="killed")`` from
it.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any

SIGTERM_FINISH_TIMEOUT_SECS = 20.0
"""How long the SIGTERM handler waits for the backends before the process ends anyway."""

_installed = False
_lock = threading.Lock()
_previous_excepthook: Callable[[type[BaseException], BaseException, TracebackType | None], Any] | None = None


def install() -> None:
    """Installs the uncaught-exception hook and, where possible, the SIGTERM handler (once)."""
    global _previous_excepthook
    with _lock:
        if _previous_excepthook is None:
            _previous_excepthook = sys.excepthook
            sys.excepthook = _on_uncaught
    install_sigterm_handler()


def _on_uncaught(kind: type[BaseException], error: BaseException, traceback: TracebackType | None) -> None:
    from jaxtrack import tracking

    try:
        tracking.finish_all(status="killed" if issubclass(kind, KeyboardInterrupt) else "failed")
    finally:
        (_previous_excepthook or sys.__excepthook__)(kind, error, traceback)


def install_sigterm_handler() -> bool:
    """Installs jaxtrack's SIGTERM handler if SIGTERM has its default action; ``True`` if it is installed.

    Only the main thread can install signal handlers; elsewhere this does nothing.

    >>> import signal
    >>> install_sigterm_handler() == (signal.getsignal(signal.SIGTERM) is _on_sigterm)
    True
    """
    global _installed
    with _lock:
        if _installed:
            return signal.getsignal(signal.SIGTERM) is _on_sigterm
        if threading.current_thread() is not threading.main_thread():
            return False
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return False
        signal.signal(signal.SIGTERM, _on_sigterm)
        _installed = True
        return True


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    from jaxtrack import tracking

    try:
        tracking.finish_all(status="killed", timeout=SIGTERM_FINISH_TIMEOUT_SECS)
    finally:
        # The default action again, and the signal again: the process ends as it would have.
        signal.signal(signum, signal.SIG_DFL)
        signal.raise_signal(signum)


__all__ = ["SIGTERM_FINISH_TIMEOUT_SECS", "install", "install_sigterm_handler"]
