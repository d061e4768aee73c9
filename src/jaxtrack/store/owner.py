"""Who writes a run, and whether that writer is still alive: its host, process, PID namespace and heartbeat.

A run being written has one owner, the [`RunWriter`][jaxtrack.store.writer.RunWriter]
that started or resumed it last. The owner stores its host name, its process
id and (on Linux) the inode of its PID namespace with the run, and refreshes the
run's ``heartbeat`` at least every ``HEARTBEAT_SECS`` seconds while it is open.

An owner is judged alive:

- by its heartbeat: alive while the heartbeat is at most ``STALE_AFTER_SECS``
  seconds old (a writer dropped unclosed by a process that goes on, or a
  process id reused after a reboot, is dead once its heartbeat is stale);
- and, when it is a process of this host and this PID namespace, only while
  that process exists (a killed writer reads as dead at once). Elsewhere
  (another host, another container of this host, where the same process id
  names another process) the heartbeat alone decides.

Heartbeats are wall-clock times (``time.time()``), so hosts sharing a store
over a network file system should keep their clocks in step to well within
``STALE_AFTER_SECS``.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time

HEARTBEAT_SECS = 10.0
"""How often an open writer refreshes its run's heartbeat, even while it writes nothing."""

STALE_AFTER_SECS = 60.0
"""A run's writer whose heartbeat is older than this (and that cannot be checked directly) is dead."""


def pid_namespace() -> int | None:
    """The inode of this process's PID namespace (``None`` where the platform has none).

    Examples:
        >>> namespace = pid_namespace()
        >>> namespace is None or namespace > 0
        True
    """
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None


@dataclasses.dataclass(frozen=True)
class Owner:
    """The process that writes a run, as the run records it.

    Examples:
        >>> import os, socket, time
        >>> me = Owner.this_process(heartbeat=time.time())
        >>> me.alive(), me.is_this_process()
        (True, True)
        >>> Owner("another-host", 4242, None, heartbeat=time.time() - 3600).alive()  # silent for an hour
        False
    """

    host: str | None
    pid: int | None
    namespace: int | None
    heartbeat: float | None

    @classmethod
    def this_process(cls, *, heartbeat: float | None = None) -> Owner:
        """This process as an owner, with ``heartbeat`` as its last sign of life."""
        return cls(socket.gethostname(), os.getpid(), pid_namespace(), heartbeat)

    def checkable(self) -> bool:
        """Whether its process id can be checked from here: the same host and the same PID namespace."""
        if self.host != socket.gethostname() or self.pid is None:
            return False
        # A run recorded without a namespace (another platform, an older jaxtrack) is judged by host alone.
        return self.namespace is None or self.namespace == pid_namespace()

    def is_this_process(self) -> bool:
        """Whether it is this very process."""
        return self.checkable() and self.pid == os.getpid()

    def alive(self, *, now: float | None = None, stale_after: float = STALE_AFTER_SECS) -> bool:
        """Whether the owner still runs: its heartbeat is fresh and (where it can be checked) its process exists."""
        if self.checkable() and not _process_exists(self.pid):  # type: ignore[arg-type]  # checkable(): not None
            return False
        if self.heartbeat is None:
            return self.checkable()  # a run of an older jaxtrack, without heartbeats: its process decides
        return (time.time() if now is None else now) - self.heartbeat <= stale_after

    def describe(self) -> str:
        """``host <host>, process <pid>, last heartbeat <n> s ago``, for error messages."""
        if self.heartbeat is None:
            beat = "no heartbeat"
        else:
            beat = f"last heartbeat {max(0.0, time.time() - self.heartbeat):.1f} s ago"
        return f"host {self.host or '?'}, process {self.pid if self.pid is not None else '?'}, {beat}"


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process: it exists
        return True
    return True


__all__ = ["HEARTBEAT_SECS", "STALE_AFTER_SECS", "Owner", "pid_namespace"]
