"""``CompositeTracker``: several backends as one, e.g. TensorBoard and W&B at once."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from jaxtrack.trackers.base import Tracker


class CompositeTracker(Tracker):
    """Sends everything to several trackers, e.g. TensorBoard and W&B at once.

    A call to the composite reaches each backend through the backend's own
    queue and thread, so a slow or failing backend costs only itself; the step
    of a call without one is decided once, so every backend records the same
    step. Composites may nest. ``loggers`` is ``trackers`` under Levanter's name.

    Examples:
        >>> import jaxtrack as jt
        >>> both = CompositeTracker([jt.NoopTracker(), jt.NoopTracker()])
        >>> both.log({"loss": 1.0}, step=0)
        >>> len(both.trackers), len(both.backends())
        (2, 2)
        >>> both.finish()
    """

    name = "composite"

    def __init__(self, trackers: Sequence[Tracker]) -> None:
        for tracker in trackers:
            if not isinstance(tracker, Tracker):
                raise TypeError(f"CompositeTracker takes Tracker instances, got {tracker!r}")
        self.trackers: list[Tracker] = list(trackers)
        self._members: tuple[Tracker, ...] | None = None  # the members _backends was worked out for
        self._backends: list[Tracker] = []
        resumed = [t.resumed_step for t in self.trackers if t.resumed_step is not None]
        if resumed:
            self.resumed_step = max(resumed)

    @property
    def loggers(self) -> list[Tracker]:
        """The member trackers (Levanter's name for ``trackers``)."""
        return self.trackers

    def backends(self) -> list[Tracker]:
        """Every backend inside, nested composites expanded, each once, in order."""
        members = tuple(self.trackers)
        if self._members == members:
            return self._backends  # asked at every call: worked out once per membership
        found: dict[int, Tracker] = {}
        for tracker in members:
            for backend in tracker.backends():
                found.setdefault(id(backend), backend)
        backends = list(found.values())
        if not any(isinstance(tracker, CompositeTracker) for tracker in members):  # a nested one may change
            self._members, self._backends = members, backends
        return backends

    # A call to a composite is split into one call per backend by the pipeline, which calls the
    # backends themselves: these run only if a backend's own thread calls the composite directly.

    def log(self, metrics: Mapping[str, Any], *, step: int | None = None, commit: bool | None = None) -> None:
        raise AssertionError("unreachable: the pipeline delivers a composite's calls to its backends")

    def log_summary(self, metrics: Mapping[str, Any]) -> None:
        raise AssertionError("unreachable: the pipeline delivers a composite's calls to its backends")

    def log_hyperparameters(self, hparams: Mapping[str, Any]) -> None:
        raise AssertionError("unreachable: the pipeline delivers a composite's calls to its backends")

    def log_artifact(
        self, artifact_path: str | os.PathLike[str], *, name: str | None = None, type: str | None = None
    ) -> None:
        raise AssertionError("unreachable: the pipeline delivers a composite's calls to its backends")

    def finish(self) -> None:
        raise AssertionError("unreachable: the pipeline delivers a composite's calls to its backends")

    def __repr__(self) -> str:
        return f"CompositeTracker({self.trackers!r})"


__all__ = ["CompositeTracker"]
