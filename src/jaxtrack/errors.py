"""Every exception and warning jaxtrack raises, in one place.

Each is also importable from the top level (``jaxtrack.BackendError``, ...).
They are grouped by what went wrong, so one ``except`` names one problem:

- [`BackendError`][jaxtrack.errors.BackendError]: a backend failed to record
  something (raised on the training thread only in strict mode);
- [`FinishedTrackerError`][jaxtrack.errors.FinishedTrackerError]: a call to a
  tracker whose run has ended;
- [`TrackerConfigError`][jaxtrack.errors.TrackerConfigError]: a tracker config
  that cannot be used;
- [`MissingExtraError`][jaxtrack.errors.MissingExtraError]: an optional package
  a backend needs is not installed;
- [`StoreError`][jaxtrack.errors.StoreError]: a local run store that cannot be
  opened, read or written (full, locked, read-only, corrupt, not a store);
- [`NestedTransformError`][jaxtrack.errors.NestedTransformError]: ``jit_log``
  inside a transformation whose values cannot leave it;
- [`StopTraining`][jaxtrack.errors.StopTraining]: raised by a callback to end
  training cleanly (a signal, not a failure);
- [`UnsafePathError`][jaxtrack.errors.UnsafePathError]: a path that would
  read or write outside where it belongs (a planted link, a hostile store);
- [`NoTrackerWarning`][jaxtrack.errors.NoTrackerWarning] and
  [`DataLossWarning`][jaxtrack.errors.DataLossWarning]: values dropped, and why;
- [`CredentialWarning`][jaxtrack.errors.CredentialWarning]: a credential was
  written by a backend before jaxtrack could redact it.
- [`ArtifactWarning`][jaxtrack.errors.ArtifactWarning]: parts of an artifact
  left out (links out of it, loops, special files).

Examples:
    >>> import jaxtrack as jt
    >>> issubclass(jt.BackendError, RuntimeError), issubclass(jt.DataLossWarning, RuntimeWarning)
    (True, True)
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import Any


class BackendError(RuntimeError):
    """A backend failed to record a call: ``backend`` (its name), ``method``, ``step`` and the error as ``__cause__``.

    Without strict mode a backend's failure is logged once, counted, and
    reported when its run finishes, while training and the other backends go
    on. With ``init_tracker(..., strict=True)`` each failure is raised as a
    ``BackendError`` on the training thread, at the next call into jaxtrack
    after it happened, the one at the lowest step first.

    Examples:
        >>> import warnings, jaxtrack as jt
        >>> class Broken(jt.NoopTracker):
        ...     name = "broken"
        ...     def log(self, metrics, *, step=None, commit=None):
        ...         raise OSError("disk full")
        >>> _ = jt.init_tracker(Broken(), strict=True)
        >>> jt.log({"loss": 1.0}, step=7)
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     try:
        ...         jt.finish()
        ...     except jt.BackendError as error:
        ...         print(error)
        ...         print(error.backend, error.method, error.step)
        tracker 'broken' failed in log at step 7 (strict mode): OSError: disk full
        broken log 7
        >>> print(caught[0].message)
        jaxtrack: not everything logged reached every backend: broken.log failed x1 at step 7 (last error: OSError: disk full)
    """

    def __init__(self, backend: str, method: str, step: int | None, error: BaseException) -> None:
        self.backend = backend
        self.method = method
        self.step = step
        where = f" at step {step}" if step is not None else ""
        super().__init__(
            f"tracker {backend!r} failed in {method}{where} (strict mode): {type(error).__name__}: {error}"
        )
        self.__cause__ = error


TrackerError = BackendError
"""The name ``BackendError`` had before jaxtrack 0.2, kept so ``except jaxtrack.TrackerError`` still works."""


class FinishedTrackerError(RuntimeError):
    """A call to a tracker whose run has finished: make a new tracker (or resume the run by id) to log more.

    Raised on the caller's thread, at the call, so nothing is silently dropped.

    Examples:
        >>> import jaxtrack as jt
        >>> tracker = jt.NoopTracker()
        >>> tracker.finish()
        >>> try:
        ...     tracker.log({"loss": 1.0}, step=0)
        ... except jt.FinishedTrackerError as error:
        ...     print(error)
        NoopTracker(name='noop') is finished: log was not recorded; start a new tracker (or resume the run by its id) to log more
    """

    def __init__(self, tracker: Any, method: str) -> None:
        super().__init__(
            f"{tracker!r} is finished: {method} was not recorded; "
            "start a new tracker (or resume the run by its id) to log more"
        )


class RunInUseError(RuntimeError):
    """A run another live process is writing: resuming it would mix two writers' values.

    Raised when a tracker starts (before training), naming the run, the store,
    and the writer that holds it (host, process, last heartbeat). Finish that
    process first, wait until its heartbeat is stale (it died), or pass
    ``take_over=True`` to take the run from it.

    Examples:
        >>> import os, tempfile
        >>> from jaxtrack.store import RunWriter
        >>> path = os.path.join(tempfile.mkdtemp(), "runs.db")
        >>> first = RunWriter(path, run_id="busy")
        >>> try:
        ...     RunWriter(path, run_id="busy")
        ... except RunInUseError as error:
        ...     print(str(error).split(":")[0])
        run 'busy' is being written by another writer
        >>> first.close()
    """


class RunTakenOverError(RuntimeError):
    """A writer whose run another process took over (``take_over=True``): its later writes are refused.

    Nothing of it is written after the take-over; each refused write is
    counted and reported as lost, naming the process that took the run.

    Examples:
        >>> import os, tempfile
        >>> from jaxtrack.store import RunWriter
        >>> path = os.path.join(tempfile.mkdtemp(), "runs.db")
        >>> old = RunWriter(path, run_id="moved")
        >>> new = RunWriter(path, run_id="moved", take_over=True)
        >>> try:
        ...     old.write([("loss", 1.0)], step=0)
        ... except RunTakenOverError as error:
        ...     print(str(error).split(" (")[0])
        run 'moved' of store ... was taken over by another writer
        >>> new.close()
    """


class TrackerConfigError(ValueError):
    """A tracker config that cannot be used: unknown type, unknown field, or a wrong value.

    Raised before any backend starts; the message names the offending type or
    field and lists what is valid.

    Examples:
        >>> import jaxtrack as jt
        >>> try:
        ...     jt.TrackerConfig.parse({"type": "tensorboard", "log_dir": "logs"})
        ... except jt.TrackerConfigError as error:
        ...     print(error)
        unknown field 'log_dir' for tracker type 'tensorboard' (did you mean 'logdir'?); valid fields: logdir, flush_secs, filename_suffix, histogram_bins, all_processes
    """


class MissingExtraError(ImportError):
    """An optional package a backend needs is not installed.

    The message names the extra to install, e.g. ``pip install
    'jaxtrack[wandb]'`` (also ``[tensorboard]``, ``[clu]``, ``[checkpoint]``,
    ``[progress]``, ``[plot]``). It is an ``ImportError``, so code that falls
    back when a package is missing catches it as it would the import's error.

    Examples:
        >>> import tempfile, jaxtrack as jt
        >>> from jaxtrack.trackers import ConsoleTracker, TensorboardTracker
        >>> try:
        ...     tracker = TensorboardTracker(tempfile.mkdtemp())
        ... except jt.MissingExtraError:  # "... pip install 'jaxtrack[tensorboard]'"
        ...     tracker = ConsoleTracker()
        >>> tracker.finish()
    """


class StoreError(ValueError):
    """A local run store that cannot be used: the message names the file, what is wrong and what to do.

    ``path`` is the database file and ``reason`` one of ``"full"`` (its disk
    is full), ``"locked"`` (another process held it past the timeout),
    ``"read-only"`` (it cannot be written), ``"corrupt"``, ``"io"`` (the disk
    failed a read or write), ``"not-a-store"`` (another program's file or a
    newer jaxtrack's store) or ``"other"``. Raised when a tracker opens the
    store (before training starts) and by a write that fails while the run
    goes on (counted and reported by the pipeline, as any backend failure).
    A ``ValueError``, as a store that cannot be opened always was.

    Examples:
        >>> import os, tempfile, jaxtrack as jt
        >>> from jaxtrack.store import RunStore
        >>> path = os.path.join(tempfile.mkdtemp(), "notes.db")
        >>> with open(path, "w") as file:
        ...     _ = file.write("not a database " * 100)
        >>> try:
        ...     RunStore(path)
        ... except jt.StoreError as error:
        ...     print(error.reason, error.path == path)
        not-a-store True
    """

    def __init__(self, message: str, *, path: str, reason: str = "other") -> None:
        super().__init__(message)
        self.path = path
        self.reason = reason


class NestedTransformError(RuntimeError):
    """``jit_log`` was called inside a transformation nested in the traced step (scan, grad, vmap...).

    The values of a nested transformation cannot leave it into the step's
    accumulator. The message says what to do instead: use
    [`jaxtrack.scan`][jaxtrack.scan] / [`jaxtrack.fori_loop`][jaxtrack.fori_loop] for loop bodies; for a
    differentiated function, return the values as aux (``has_aux=True``) and
    ``jit_log`` them after the grad.

    Examples:
        >>> import jax, jax.numpy as jnp, jaxtrack as jt
        >>> @jt.jit
        ... def step(x):
        ...     def body(total, xi):
        ...         jt.jit_log({"xi": xi})  # in a bare lax.scan body
        ...         return total + xi, None
        ...     return jax.lax.scan(body, 0.0, x)[0]
        >>> try:
        ...     step(jnp.ones(3))
        ... except jt.NestedTransformError:
        ...     print("use jt.scan for the loop")
        use jt.scan for the loop
    """


class StopTraining(Exception):
    """Raised by a callback to end training cleanly (NaN seen, no more improvement, ...).

    In your own loop, catch it, then finish as usual; ``reason`` says why and
    ``step`` is where (if the callback said). [`jaxtrack.train`][jaxtrack.train] catches it and
    ends the run normally.

    Examples:
        >>> import itertools, jaxtrack as jt
        >>> def stop_at_3(step, **context):
        ...     if step == 3:
        ...         raise jt.StopTraining("enough", step=step)
        >>> try:
        ...     for step in range(1, 10):
        ...         stop_at_3(step)
        ... except jt.StopTraining as stop:
        ...     print(stop.reason, stop.step)
        enough 3
        >>> with jt.current_tracker(jt.NoopTracker()):
        ...     jt.train(lambda state, batch: state + batch, 0, itertools.repeat(1), 10, callbacks=[stop_at_3])
        3
    """

    def __init__(self, reason: str, *, step: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.step = step


class UnsafePathError(OSError):
    """A path jaxtrack would write to or copy from leads outside where it belongs; the message names it.

    Raised when a store's ``artifacts`` folder (or a run's folder in it) is a
    link to somewhere else, so the store would write outside its own folder,
    and when a store's artifacts table names a file outside that folder
    (``/etc/passwd``, ``../../x``: a store written by someone else), so
    reading or exporting it would copy that file. It is an ``OSError``, so
    code that handles a store it cannot use catches it too.

    Examples:
        >>> import jaxtrack as jt
        >>> issubclass(jt.UnsafePathError, OSError)
        True
    """


class NoTrackerWarning(UserWarning):
    """Logged values are dropped because no tracker is set (see [`current_tracker`][jaxtrack.current_tracker]).

    Issued once per process, by the first call that finds no tracker set. A
    script that must not train unrecorded can make it an error.

    Examples:
        >>> import warnings, jaxtrack as jt
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("error", jt.NoTrackerWarning)  # a forgotten init_tracker() now fails
        ...     with jt.current_tracker(jt.NoopTracker()):
        ...         jt.log({"loss": 0.5}, step=0)  # a tracker is set: no warning
    """


class DataLossWarning(RuntimeWarning):
    """Not everything logged reached every backend: the message names each backend and what it lost.

    Issued when a run ends (``finish``, the end of a ``with`` block, the
    process's exit or SIGTERM) if a backend raised, dropped reports as it fell
    behind, hung, or did not finish in time; and when a backend is declared
    hung. A script that must not lose data can make it an error.

    Examples:
        >>> import warnings, jaxtrack as jt
        >>> warnings.simplefilter("error", jt.DataLossWarning)  # doctest: +SKIP
    """


class CredentialWarning(UserWarning):
    """A credential reached a backend before jaxtrack could redact it; the message names where (never the value).

    Issued when a ``WandbTracker`` is given a W&B run started elsewhere whose
    config holds a credential: W&B wrote it when the run started. Everything
    that passes through jaxtrack is redacted (see [`jaxtrack.redaction`][jaxtrack.redaction]).

    Examples:
        >>> import warnings, jaxtrack as jt
        >>> warnings.simplefilter("error", jt.CredentialWarning)  # doctest: +SKIP
    """


class ArtifactWarning(UserWarning):
    """Part of a directory artifact was left out of the copy: the message names each part and why.

    Links inside an artifact are never followed: one that points outside it
    (a private key, ``/etc/shadow``), a broken one, or one to a directory
    holding it (a loop) is left out, as are FIFOs, sockets and devices.
    Links that stay inside the artifact are kept as links (W&B, which stores
    no links, gets the file a link names). A script that must store every
    part can make it an error.

    Examples:
        >>> import warnings, jaxtrack as jt
        >>> warnings.simplefilter("error", jt.ArtifactWarning)  # doctest: +SKIP
    """


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def warn(message: str, category: type[Warning]) -> None:
    """Issues ``message`` pointing at the user's line: the innermost caller outside the jaxtrack package.

    Examples:
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     warn("jaxtrack: an example", DataLossWarning)
        >>> caught[0].category.__name__, caught[0].filename.endswith("errors.py")
        ('DataLossWarning', False)
    """
    level, frame = 1, sys._getframe(1)
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE_DIR + os.sep):
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    warnings.warn(message, category, stacklevel=level + 1 if frame is not None else 2)


__all__ = [
    "ArtifactWarning",
    "BackendError",
    "CredentialWarning",
    "DataLossWarning",
    "FinishedTrackerError",
    "MissingExtraError",
    "NestedTransformError",
    "NoTrackerWarning",
    "RunInUseError",
    "RunTakenOverError",
    "StopTraining",
    "StoreError",
    "TrackerConfigError",
    "TrackerError",
    "UnsafePathError",
]
