"""``Checkpoint``: saves the training state periodically with Orbax, without holding up the training thread.

A checkpoint is the whole training state (a pytree: params, optimizer state,
step counters, ...) written to ``directory/<step>`` so a run can stop and
later resume where it was. Saving is asynchronous: Orbax copies the arrays
off the device, then writes them in a background thread while training goes
on. ``on_end`` waits for the writes still pending, so none is lost.

Needs ``pip install 'jaxtrack[checkpoint]'`` (Orbax).
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Iterable
from typing import Any

from jaxtrack._optional import import_optional
from jaxtrack.callbacks.base import PeriodicCallback


def _orbax() -> Any:
    # Imported here, not at the top: orbax (and tensorstore) are heavy and
    # optional, and `import jaxtrack` must stay light.
    return import_optional("orbax.checkpoint", extra="checkpoint", purpose="Checkpoint")


class Checkpoint(PeriodicCallback):
    """Saves ``state`` (passed by keyword to the hook) when its schedule is due; restores the latest.

    The schedule is CLU's (``every_steps``, ``every_secs``, ``on_steps``);
    ``keep`` is how many checkpoints stay on disk (the oldest go first;
    ``None`` keeps all). Saving is asynchronous: the hook returns once the
    arrays are copied off the device, so the step may then donate or
    overwrite them. ``on_end`` saves the final state too (unless that step is
    saved already) and waits until every write is complete.

    Examples:
        >>> import tempfile, jax.numpy as jnp
        >>> from jaxtrack.callbacks.checkpoint import Checkpoint
        >>> directory = tempfile.mkdtemp()
        >>> checkpoint = Checkpoint(directory, every_steps=2, keep=2)
        >>> state = {"w": jnp.zeros(3), "count": jnp.int32(0)}
        >>> for step in range(1, 6):
        ...     state = {"w": state["w"] + 1, "count": state["count"] + 1}
        ...     checkpoint(step, state=state)
        >>> checkpoint.on_end(5, state=state)  # saves step 5, waits for the writes
        >>> checkpoint.all_steps()  # step 2 was pruned: keep=2
        [4, 5]

        A restarted run resumes from the latest checkpoint, restored into the
        structure (and shardings) of a template state; the schedule then goes on
        from that step (the next save is at 6, not at once):

        >>> resumed = Checkpoint(directory, every_steps=2)
        >>> state, step = resumed.restore({"w": jnp.zeros(3), "count": jnp.int32(0)})
        >>> step, state["w"].tolist(), int(state["count"])
        (5, [5.0, 5.0, 5.0], 5)
        >>> resumed.close()
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        every_steps: int | None = None,
        every_secs: float | None = None,
        on_steps: Iterable[int] | None = None,
        keep: int | None = 3,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(every_steps=every_steps, every_secs=every_secs, on_steps=on_steps, clock=clock)
        self.directory = _checked_directory(directory)
        if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 1):
            raise ValueError(f"keep must be a positive number of checkpoints (or None for all), got {keep!r}")
        self.keep = keep
        self._manager_: Any = None  # opened on first use, so constructing one costs nothing

    # -- the callback -------------------------------------------------------

    def on_step(self, step: int, **context: Any) -> None:
        # Checked at every step, not only when due: a loop that forgets the
        # state should fail at its first step, not at the first save hours in.
        self._require_state(context)
        super().on_step(step, **context)

    def run(self, step: int, **context: Any) -> None:
        """Starts saving ``context["state"]`` at ``step``; returns before the write completes."""
        self._save(step, self._require_state(context))

    def on_end(self, step: int, *, state: Any = None, **context: Any) -> None:
        """Saves ``state`` at ``step`` if given and not saved yet, waits for all writes, and closes."""
        try:
            if state is not None and step not in self.all_steps():
                self._save(step, state)
        finally:
            # Even when that last save fails, the earlier ones still in flight are finished.
            self.close()

    # -- saving and restoring -----------------------------------------------

    @property
    def latest_step(self) -> int | None:
        """The step of the latest checkpoint (one still being written included), or ``None``."""
        step = self._manager().latest_step()
        return None if step is None else int(step)

    def all_steps(self) -> list[int]:
        """The steps with a checkpoint, oldest first (ones still being written included)."""
        return sorted(int(step) for step in self._manager().all_steps())

    def restore(self, state: Any) -> tuple[Any, int | None]:
        """Returns ``(restored_state, step)`` for the latest checkpoint, or ``(state, None)`` if there is none.

        ``state`` is the template: the restored pytree has its structure, and
        its arrays its shapes, dtypes and shardings. Only the template's
        metadata is used, so its buffers may have been donated already.
        """
        import jax

        ocp = _orbax()
        manager = self._manager()
        manager.wait_until_finished()  # a save of this run still in flight is the latest
        step = manager.latest_step()
        if step is None:
            return state, None
        # Abstract arrays (shape, dtype, sharding) tell Orbax where to put each
        # restored array; other leaves (Python numbers, say) pass as they are.
        target = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
        restored = manager.restore(step, args=ocp.args.StandardRestore(target))
        self.schedule.skip_before(int(step) + 1)
        return restored, int(step)

    def wait_until_finished(self) -> None:
        """Blocks until the checkpoints being written are complete (and raises if a write failed)."""
        if self._manager_ is not None:
            self._manager_.wait_until_finished()

    def close(self) -> None:
        """Waits for pending writes, then releases Orbax's resources; a later use opens it again."""
        manager, self._manager_ = self._manager_, None
        if manager is not None:
            try:
                manager.wait_until_finished()
            finally:
                manager.close()

    def _save(self, step: int, state: Any) -> None:
        ocp = _orbax()
        saved = self._manager().save(step, args=ocp.args.StandardSave(state))
        if not saved:
            # Orbax silently skips a step at or before its latest one: a run
            # started from scratch in an old run's directory would save nothing.
            warnings.warn(
                f"Checkpoint did not save step {step}: {self.directory} already holds step {self.latest_step}; "
                "restore from it, or use another directory",
                RuntimeWarning,
                stacklevel=3,
            )

    def _manager(self) -> Any:
        if self._manager_ is None:
            ocp = _orbax()
            options = ocp.CheckpointManagerOptions(max_to_keep=self.keep, enable_async_checkpointing=True, create=True)
            self._manager_ = ocp.CheckpointManager(self.directory, options=options)
        return self._manager_

    def _require_state(self, context: dict[str, Any]) -> Any:
        if "state" not in context:
            raise TypeError(f"{self!r} saves the training state: call it with state=..., e.g. hook(step, state=state)")
        return context["state"]

    def __repr__(self) -> str:
        return f"Checkpoint({self.directory!r}, {self.schedule!r}, keep={self.keep!r})"


def _checked_directory(directory: str | os.PathLike[str]) -> str:
    if not isinstance(directory, str | os.PathLike):
        raise TypeError(f"Checkpoint directory must be a path, got {directory!r}")
    path = os.fspath(directory)
    if not path:
        raise ValueError("Checkpoint directory must not be empty")
    if "://" in path:
        return path  # a remote location (gs://...), which Orbax opens itself
    # Absolute, so a later chdir in the training script does not move the checkpoints.
    path = os.path.abspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise NotADirectoryError(f"Checkpoint directory {path!r} exists and is not a directory")
    return path


__all__ = [
    "Checkpoint",
]
