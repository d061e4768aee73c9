"""Replaying a stored run into another backend: the library side of ``jaxtrack export``.

[`replay`][jaxtrack.store.export.replay] logs a run's hyperparameters,
history, summary and artifacts into any [`Tracker`][jaxtrack.Tracker].
[`export_tensorboard`][jaxtrack.store.export.export_tensorboard] and
[`export_wandb`][jaxtrack.store.export.export_wandb] replay a run of a
[`RunStore`][jaxtrack.store.reader.RunStore] into TensorBoard event files or a W&B
run, [`export_jsonl`][jaxtrack.store.export.export_jsonl] into a JSON lines file,
and [`export_csv`][jaxtrack.store.export.export_csv] writes its history as a table;
each returns what it wrote; ``EXPORT_TARGETS`` names them. An export
that the target refuses is an [`ExportError`][jaxtrack.store.export.ExportError].
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from typing import Any

from jaxtrack._optional import import_optional
from jaxtrack.store.codec import from_summary
from jaxtrack.store.reader import RunStore, StoredRun
from jaxtrack.trackers.base import Tracker
from jaxtrack.trackers.jsonl import JsonLinesTracker
from jaxtrack.trackers.tensorboard import TensorboardTracker
from jaxtrack.trackers.wandb import WandbTracker

EXPORT_TARGETS = ("tensorboard", "wandb", "jsonl", "csv")
"""What a run can be exported to (``jaxtrack export --to``)."""


class ExportError(Exception):
    """The target refused the export, or would write no run: the message says why.

    Examples:
        >>> try:
        ...     raise ExportError("W&B could not start the run: no API key")
        ... except ExportError as error:
        ...     print(error)
        W&B could not start the run: no API key
    """


def replay(
    tracker: Tracker,
    run: StoredRun,
    history: Sequence[Mapping[str, Any]],
    artifacts: Sequence[Mapping[str, Any]],
    *,
    config: bool = True,
) -> dict[str, int]:
    """Logs the run's config, history rows, summary and artifacts into ``tracker``; returns how much of each was written.

    ``history`` and ``artifacts`` are the run's, as
    [`RunStore.history`][jaxtrack.store.reader.RunStore.history] and
    [`RunStore.artifacts`][jaxtrack.store.reader.RunStore.artifacts] give them. A
    summary histogram is logged as a histogram again; an artifact whose file
    is gone (a store moved without its ``artifacts/`` directory) is left out.
    ``config=False`` leaves the hyperparameters to the caller (W&B takes them
    when its run starts). The tracker is not finished.

    Examples:
        >>> import os, tempfile
        >>> from jaxtrack.store import RunStore
        >>> from jaxtrack.trackers.local import LocalTracker
        >>> directory = tempfile.mkdtemp()
        >>> with LocalTracker(os.path.join(directory, "a.db"), run_id="r1") as tracker:
        ...     tracker.log_hyperparameters({"lr": 0.1})
        ...     tracker.log({"loss": 1.0}, step=0)
        ...     tracker.log({"loss": 0.5}, step=1)
        >>> with RunStore(os.path.join(directory, "a.db")) as store:
        ...     run = store.run("r1")
        ...     history, artifacts = store.history(run.id), store.artifacts(run.id)
        >>> with LocalTracker(os.path.join(directory, "b.db"), run_id="copy") as copy:
        ...     replay(copy, run, history, artifacts)
        {'steps': 2, 'values': 2, 'config': 1, 'summary': 0, 'artifacts': 0}
        >>> RunStore(os.path.join(directory, "b.db")).history("copy")
        [{'step': 0, 'loss': 1.0}, {'step': 1, 'loss': 0.5}]
    """
    if config and run.config:
        tracker.log_hyperparameters(run.config)
    values = 0
    for row in history:
        metrics = {key: value for key, value in row.items() if key != "step"}
        tracker.log(metrics, step=row["step"])
        values += len(metrics)
    summary = {key: from_summary(value) for key, value in run.summary.items()}
    if summary:
        tracker.log_summary(summary)
    copied = 0
    for artifact in artifacts:
        if os.path.exists(artifact["path"]):  # a store moved without its artifacts/ directory still exports
            tracker.log_artifact(artifact["path"], name=artifact["name"], type=artifact["type"])
            copied += 1
    return {
        "steps": len(history),
        "values": values,
        "config": len(run.config),
        "summary": len(summary),
        "artifacts": copied,
    }


def export_tensorboard(store: RunStore, ref: str, logdir: str | os.PathLike[str]) -> dict[str, Any]:
    """Replays the run ``ref`` names into TensorBoard event files in ``logdir`` (needs ``jaxtrack[tensorboard]``).

    Returns ``target``, ``run`` (its id), ``path`` (``logdir``, absolute) and
    the counts [`replay`][jaxtrack.store.export.replay] returns.

    Examples:
        >>> import os, tempfile
        >>> from jaxtrack.store import RunStore
        >>> from jaxtrack.trackers.local import LocalTracker
        >>> directory = tempfile.mkdtemp()
        >>> with LocalTracker(os.path.join(directory, "runs.db"), run_id="r1") as tracker:
        ...     tracker.log({"loss": 1.0}, step=0)
        >>> with RunStore(os.path.join(directory, "runs.db")) as store:
        ...     exported = export_tensorboard(store, "latest", os.path.join(directory, "tb"))
        >>> exported["run"], exported["steps"], os.listdir(exported["path"])[0].startswith("events.out.tfevents")
        ('r1', 1, True)
    """
    run = store.run(ref)
    history = store.history(run.id)
    artifacts = store.artifacts(run.id)
    tracker = TensorboardTracker(logdir)
    try:
        counts = replay(tracker, run, history, artifacts)
    finally:
        tracker.finish()
    return {"target": "tensorboard", "run": run.id, "path": os.path.abspath(logdir), **counts}


def export_jsonl(store: RunStore, ref: str, path: str | os.PathLike[str]) -> dict[str, Any]:
    """Replays the run ``ref`` names into a JSON lines file at ``path``, as ``type: json_logger`` writes one.

    The file is replaced if it exists. It ends with a ``finish`` record
    holding the run's status. Returns ``target``, ``run`` (its id), ``path``
    (absolute) and the counts [`replay`][jaxtrack.store.export.replay] returns.

    Examples:
        >>> import json, os, tempfile
        >>> from jaxtrack.store import RunStore
        >>> from jaxtrack.trackers.local import LocalTracker
        >>> directory = tempfile.mkdtemp()
        >>> with LocalTracker(os.path.join(directory, "runs.db"), run_id="r1") as tracker:
        ...     tracker.log({"loss": 1.0}, step=0)
        >>> with RunStore(os.path.join(directory, "runs.db")) as store:
        ...     exported = export_jsonl(store, "latest", os.path.join(directory, "r1.jsonl"))
        >>> [json.loads(line)["type"] for line in open(exported["path"])]
        ['log', 'finish']
    """
    run = store.run(ref)
    history = store.history(run.id)
    artifacts = store.artifacts(run.id)
    path = os.path.abspath(path)
    if os.path.lexists(path):
        os.remove(path)  # an export is the run as stored, not appended to an older copy
    tracker = JsonLinesTracker(path, all_processes=True)  # the export's process writes, whatever it is
    try:
        counts = replay(tracker, run, history, artifacts)
        tracker.set_status(run.status)
    except BaseException:
        tracker.set_status("failed")  # a partial copy must not look like the finished run
        raise
    finally:
        tracker.finish()
    return {"target": "jsonl", "run": run.id, "path": path, **counts}


def export_csv(store: RunStore, ref: str, path: str | os.PathLike[str]) -> dict[str, Any]:
    """Writes the history of the run ``ref`` names as a CSV table at ``path``: one row a step, one column a key.

    Columns are ``step`` and then each scalar or text key, in the order
    [`RunStore.history`][jaxtrack.store.reader.RunStore.history] first gives it; a step without a value of a key leaves its cell empty. Text is
    quoted, bools are ``True``/``False`` and NaN and infinities ``nan``,
    ``inf``, ``-inf``, which ``pandas.read_csv`` reads back as such.
    Histograms and images have no cell: export to ``jsonl`` for them. Returns
    ``target``, ``run``, ``path`` (absolute), ``steps``, ``columns`` and ``values``.

    Examples:
        >>> import os, tempfile
        >>> from jaxtrack.store import RunStore
        >>> from jaxtrack.trackers.local import LocalTracker
        >>> directory = tempfile.mkdtemp()
        >>> with LocalTracker(os.path.join(directory, "runs.db"), run_id="r1") as tracker:
        ...     tracker.log({"loss": 1.0, "note": "start"}, step=0)
        ...     tracker.log({"loss": 0.5}, step=1)
        >>> with RunStore(os.path.join(directory, "runs.db")) as store:
        ...     exported = export_csv(store, "latest", os.path.join(directory, "r1.csv"))
        >>> print(open(exported["path"]).read(), end="")
        "step","loss","note"
        0,1.0,"start"
        1,0.5,""
    """
    run = store.run(ref)
    history = store.history(run.id)
    columns: dict[str, None] = {}  # ordered as the history first gives each key
    for row in history:
        for key, value in row.items():
            if key != "step" and isinstance(value, bool | int | float | str):
                columns.setdefault(key, None)
    path = os.path.abspath(path)
    values = 0
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file, quoting=csv.QUOTE_NONNUMERIC)  # text quoted, numbers not
        writer.writerow(["step", *columns])
        for row in history:
            cells = [row.get(key) for key in columns]
            values += sum(cell is not None for cell in cells)
            writer.writerow([row["step"], *("" if cell is None else cell for cell in cells)])
    return {
        "target": "csv",
        "run": run.id,
        "path": path,
        "steps": len(history),
        "columns": len(columns) + 1,
        "values": values,
    }


def export_wandb(
    store: RunStore,
    ref: str,
    *,
    mode: str | None = None,
    project: str | None = None,
    entity: str | None = None,
    directory: str | None = None,
) -> dict[str, Any]:
    """Replays the run ``ref`` names into a W&B run with the same id, name and status (needs ``jaxtrack[wandb]``).

    Args:
        store: the store that holds the run.
        ref: the run: its id, a unique prefix of one, its name, or ``latest``.
        mode: ``online`` or ``offline`` (an offline run is uploaded later with
            ``wandb sync``); default ``$WANDB_MODE``, else ``online``. A
            ``$WANDB_MODE`` that writes no run (``disabled``) is an ``ExportError``.
        project: the W&B project; default the run's project.
        entity: the W&B entity; default yours.
        directory: W&B's directory (default ``$WANDB_DIR``, else ``./wandb``); created if missing.

    Returns:
        ``target``, ``run`` (its id), ``mode``, ``project``, ``entity``,
        ``run_dir`` (the W&B run's directory), ``url`` (``None`` offline),
        ``exit_code`` (0 for a finished run, else 1) and the counts
        [`replay`][jaxtrack.store.export.replay] returns. A W&B run that
        cannot start is an ``ExportError``; one that fails part-way is marked failed.

    Examples:
        >>> with RunStore("runs/jaxtrack.db") as store:  # doctest: +SKIP
        ...     exported = export_wandb(store, "latest", mode="offline")
        >>> print("wandb sync", exported["run_dir"])  # doctest: +SKIP
    """
    run = store.run(ref)
    history = store.history(run.id)
    artifacts = store.artifacts(run.id)
    wandb = import_optional("wandb", extra="wandb", purpose="jaxtrack export --to wandb")
    mode = mode or _wandb_mode_from_environment()
    init: dict[str, Any] = {
        "id": run.id,
        "name": run.display_name,
        "project": project or run.project,
        "entity": entity,
        "config": run.config,
        "mode": mode,
        "dir": directory,
        "resume": "allow",
        # This process only copies the run: its console output, system metrics and git
        # checkout are not the run's.
        "settings": wandb.Settings(console="off", x_disable_stats=True, disable_git=True, silent=True),
    }
    if directory is not None:
        os.makedirs(directory, exist_ok=True)
    try:
        tracker = WandbTracker(**{key: value for key, value in init.items() if value is not None})
    except wandb.errors.Error as error:
        raise ExportError(f"W&B could not start the run: {error}") from None
    try:
        counts = replay(tracker, run, history, artifacts, config=False)  # the config went to wandb.init
        counts["config"] = len(run.config)
        tracker.set_status(run.status)
        wandb_run = tracker.run
        run_dir = os.path.abspath(wandb_run.settings.sync_dir)
        url = None if wandb_run.offline else wandb_run.url  # an offline run's url is None, with a warning
        project, entity = wandb_run.project, wandb_run.entity
    except BaseException:
        tracker.set_status("failed")  # a partial copy must not look like a finished run
        raise
    finally:
        tracker.finish()
    return {
        "target": "wandb",
        "run": run.id,
        "mode": mode,
        "project": project,
        "entity": entity or None,
        "run_dir": run_dir,
        "url": url,
        "exit_code": 0 if run.status == "finished" else 1,  # as WandbTracker.set_status maps it
        **counts,
    }


def _wandb_mode_from_environment() -> str:
    # "dryrun" and "run" are W&B's old names of offline and online. Any other mode (such as
    # "disabled") would export nothing, which is not what the export is asked to do.
    given = os.environ.get("WANDB_MODE") or "online"
    mode = {"dryrun": "offline", "run": "online"}.get(given, given)
    if mode not in ("online", "offline"):
        raise ExportError(f"WANDB_MODE is {mode!r}, which writes no run: pass --mode online or --mode offline")
    return mode


__all__ = [
    "EXPORT_TARGETS",
    "ExportError",
    "export_csv",
    "export_jsonl",
    "export_tensorboard",
    "export_wandb",
    "replay",
]
