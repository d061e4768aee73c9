"""The local tracker: jaxtrack's default backend, writing a run into the local run store.

[`LocalTracker`][jaxtrack.trackers.local.LocalTracker] (``type: local``) records
a run in an SQLite database that needs no account or server; it is a tracker
over the store's [`RunWriter`][jaxtrack.store.writer.RunWriter], and
[`RunStore`][jaxtrack.store.reader.RunStore] and the ``jaxtrack`` command line read
what it wrote. [`jaxtrack.store`][jaxtrack.store] describes the store: its
tables, the durability of each report, resuming and rewinding a run.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any, cast

from jaxtrack.ids import new_run_id, validate_run_id
from jaxtrack.multihost import per_process, writes
from jaxtrack.redaction import redact_text
from jaxtrack.store.location import default_store_path
from jaxtrack.store.writer import RunWriter
from jaxtrack.trackers.base import Tracker
from jaxtrack.trackers.config import TrackerConfig
from jaxtrack.values import DEFAULT_NUM_BINS, HostValue


class LocalTracker(Tracker):
    """Records a run in a local SQLite store (see [`jaxtrack.store`][jaxtrack.store]).

    Scalars, strings, histograms (from [`Histogram`][jaxtrack.Histogram] values and
    arrays) and [`Image`][jaxtrack.Image] values are kept at their step;
    hyperparameters (credentials redacted) and the summary are merged into
    the run's row; artifacts are copied next to the database, under
    ``artifacts/<n>-<run id>/``, following no link out of a directory artifact
    (see [`RunWriter.add_artifact`][jaxtrack.store.writer.RunWriter.add_artifact]).
    A relative ``path`` is made absolute when the tracker starts. In a
    multi-process JAX run only process 0 writes.

    Args:
        path: the database file (created with its directory if missing); default
            [`default_store_path`][jaxtrack.store.location.default_store_path].
        run_id: the run's id; an existing run with this id is continued.
        name: a human-readable name (default: none; the id is shown); a
            credential in it is redacted.
        project: groups runs in ``jaxtrack runs --project``.
        histogram_bins: buckets of the histogram made from an array value.
        all_processes: in a multi-process run, every process writes a run of its
            own (``<run id>-process<i>``; give each host its own ``path`` unless the
            file system is one SQLite can lock across hosts), not only process 0.
        take_over: continue the run even while another live process writes it
            (that process's later writes are refused and reported as lost); by
            default such a resume is a [`RunInUseError`][jaxtrack.RunInUseError]
            naming the run, the host, the process and its last heartbeat.

    Examples:
        >>> import os, tempfile, jaxtrack as jt
        >>> from jaxtrack.store import RunStore
        >>> from jaxtrack.trackers.local import LocalTracker
        >>> path = os.path.join(tempfile.mkdtemp(), "runs.db")
        >>> with LocalTracker(path, run_id="demo", name="first") as tracker:
        ...     tracker.log({"train": {"loss": 0.5}}, step=1)
        ...     tracker.log({"train": {"loss": 0.25}}, step=2)
        >>> with RunStore(path) as store:
        ...     store.runs()[0].status, store.history("demo")
        ('finished', [{'step': 1, 'train/loss': 0.5}, {'step': 2, 'train/loss': 0.25}])
    """

    name = "local"
    histogram_bins: int

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        run_id: str | None = None,
        name: str | None = None,
        project: str | None = None,
        histogram_bins: int = DEFAULT_NUM_BINS,
        all_processes: bool = False,
        take_over: bool = False,
    ) -> None:
        # Absolute when the run starts: artifacts logged after an os.chdir (Hydra makes one) still go beside it.
        self.path = os.path.abspath(path if path is not None else default_store_path())
        self.run_id = validate_run_id(run_id) if run_id is not None else new_run_id()
        if all_processes:
            self.run_id = per_process(self.run_id)  # process i writes its own run, "<id>-process<i>"
        self.histogram_bins = histogram_bins
        self._status = "finished"
        self._writer: RunWriter | None = None  # None in a process that does not write
        if not writes(all_processes):
            return
        # A name is text the user wrote, as a logged text is: a credential in it is redacted alike.
        name = redact_text(name) if name is not None else None
        self._writer = RunWriter(self.path, run_id=self.run_id, name=name, project=project, take_over=take_over)
        self.resumed_step = self._writer.resumed_step

    # jaxtrack calls these on the tracker's own thread, one at a time, with flat values already
    # normalised and every log's step resolved (see jaxtrack.Tracker).

    def log(self, metrics: Mapping[str, HostValue], *, step: int | None = None, commit: bool | None = None) -> None:
        if self._writer is not None:
            self._writer.write(list(metrics.items()), step=cast(int, step))

    def validate(self, metrics: Mapping[str, Any]) -> None:
        if "step" in metrics:
            raise ValueError("metric name 'step' is reserved by the local store (each row's step); pass step=")

    def log_summary(self, metrics: Mapping[str, HostValue]) -> None:
        if self._writer is not None:
            self._writer.merge_summary(dict(metrics))

    def log_hyperparameters(self, hparams: Mapping[str, Any]) -> None:
        if self._writer is not None:
            self._writer.merge_config(dict(hparams))

    def log_artifact(
        self, artifact_path: str | os.PathLike[str], *, name: str | None = None, type: str | None = None
    ) -> None:
        if self._writer is not None:
            self._writer.add_artifact(artifact_path, name=name, type=type)

    def set_status(self, status: str) -> None:
        self._status = status

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def finish(self) -> None:
        if self._writer is not None:
            self._writer.close(self._status)

    def __repr__(self) -> str:
        return f"LocalTracker(path={self.path!r}, run_id={self.run_id!r})"


@TrackerConfig.register("local")
@dataclasses.dataclass(frozen=True)
class LocalConfig(TrackerConfig):
    """``type: local``: a [`LocalTracker`][jaxtrack.trackers.local.LocalTracker] writing the run into the store at ``path``.

    ``path`` defaults to [`default_store_path`][jaxtrack.store.location.default_store_path] (``$JAXTRACK_STORE`` or
    ``runs/jaxtrack.db``), the store the ``jaxtrack`` command line reads by
    default. The other fields are ``LocalTracker``'s arguments.

    Examples:
        >>> LocalConfig(path="runs/my.db", project="digits").to_dict()
        {'type': 'local', 'path': 'runs/my.db', 'name': None, 'project': 'digits', 'histogram_bins': 64, 'all_processes': False, 'take_over': False}
    """

    path: str | None = None
    name: str | None = None
    project: str | None = None
    histogram_bins: int = DEFAULT_NUM_BINS
    all_processes: bool = False
    take_over: bool = False

    def init(self, run_id: str | None) -> LocalTracker:
        return LocalTracker(
            self.path,
            run_id=run_id,
            name=self.name,
            project=self.project,
            histogram_bins=self.histogram_bins,
            all_processes=self.all_processes,
            take_over=self.take_over,
        )


__all__ = ["LocalConfig", "LocalTracker"]
