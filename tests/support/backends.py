"""Each backend built on a temporary directory, and what it recorded read back for real.

For tests that check a value end to end, whatever the backend: the local
store through :class:`~jaxtrack.RunStore`, TensorBoard's event files through
its own ``plugin_event_accumulator``, an offline W&B run through its
``run-<id>.wandb`` transaction log (:mod:`wandb_files`), the console through
the lines it logs. Nothing is mocked.
"""

from __future__ import annotations

import os
import pathlib
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest
from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import metadata as hparams_metadata
from tensorboard.plugins.hparams import plugin_data_pb2
from tensorboard.util import tensor_util

from jaxtrack import pipeline
from jaxtrack.store import RunStore
from support.wandb_files import find_wandb_files, parse_records

# ---- the local store ------------------------------------------------------------------------------


def local_spec(store: str | os.PathLike[str], **options: Any) -> dict[str, Any]:
    """The ``init_tracker`` config of a local store at ``store``."""
    return {"type": "local", "path": os.fspath(store), **options}


def local_history(store: str | os.PathLike[str], run_id: str) -> dict[int, dict[str, Any]]:
    """The run's history rows by step, without the ``step`` column."""
    with RunStore(store) as runs:
        return {row["step"]: {k: v for k, v in row.items() if k != "step"} for row in runs.history(run_id)}


def local_superseded(store: str | os.PathLike[str], run_id: str) -> list[dict[str, Any]]:
    """The scalar and text values a rewind took out of the run's history."""
    with RunStore(store) as runs:
        return runs.superseded(run_id)


# ---- TensorBoard ----------------------------------------------------------------------------------


def tb_spec(logdir: str | os.PathLike[str], **options: Any) -> dict[str, Any]:
    """The ``init_tracker`` config of TensorBoard event files under ``logdir/<run id>``."""
    return {"type": "tensorboard", "logdir": os.fspath(logdir), **options}


def tb_accumulator(logdir: str | os.PathLike[str]) -> EventAccumulator:
    """The run at ``logdir`` as TensorBoard's server loads it (every event kept, purges applied).

    ``Reload()`` it again to read what was written since: it reads on from where it stopped.
    """
    accumulator = EventAccumulator(os.fspath(logdir), size_guidance={"tensors": 0})
    accumulator.Reload()
    return accumulator


def tb_values(accumulator: EventAccumulator, tag: str) -> dict[int, np.ndarray]:
    """Every value of ``tag`` by step (the last one of a step wins), as TensorBoard decodes it."""
    if tag not in accumulator.Tags()["tensors"]:
        return {}
    return {event.step: tensor_util.make_ndarray(event.tensor_proto) for event in accumulator.Tensors(tag)}


def tb_series(accumulator: EventAccumulator, tag: str) -> list[tuple[int, Any]]:
    """``(step, value)`` of a scalar or text tag, in the order TensorBoard keeps them (texts decoded)."""
    series = []
    for event in accumulator.Tensors(tag):
        array = tensor_util.make_ndarray(event.tensor_proto)
        item = array.item()
        series.append((event.step, item.decode("utf-8") if isinstance(item, bytes) else item))
    return series


HPARAMS_TAG = hparams_metadata.SESSION_START_INFO_TAG  # "_hparams_/session_start_info"


def tb_tensors(accumulator: EventAccumulator, tag: str) -> list[tuple[int, np.ndarray]]:
    """Every event of ``tag`` as ``(step, array)``, in TensorBoard's order (purged ones left out)."""
    return [(event.step, tensor_util.make_ndarray(event.tensor_proto)) for event in accumulator.Tensors(tag)]


def tb_scalars(accumulator: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    """``(step, value)`` of a scalar tag; fails if a value of it is not a scalar."""
    series = []
    for step, array in tb_tensors(accumulator, tag):
        assert array.shape == (), f"{tag} at step {step} is not a scalar: shape {array.shape}"
        series.append((step, array.item()))
    return series


def tb_plugin(accumulator: EventAccumulator, tag: str) -> str:
    """The plugin (dashboard) that shows ``tag``: ``scalars``, ``histograms``, ``text``, ``images``..."""
    return accumulator.SummaryMetadata(tag).plugin_data.plugin_name


def tb_session_start_info(logdir: str | os.PathLike[str]) -> Any:
    """The hyperparameters as the HParams plugin finds them: the tag's summary metadata content."""
    acc = tb_accumulator(logdir)
    assert HPARAMS_TAG in acc.Tags()["tensors"]
    content = acc.PluginTagToContent(hparams_metadata.PLUGIN_NAME)[HPARAMS_TAG]
    plugin_data = plugin_data_pb2.HParamsPluginData.FromString(content)
    assert plugin_data.WhichOneof("data") == "session_start_info"
    return hparams_metadata.parse_session_start_info_plugin_data(content)


def tb_plain_hparams(info: Any) -> dict[str, tuple[str, Any]]:
    """``{name: (kind, value)}`` of a session start info's hyperparameters."""
    return {
        key: (value.WhichOneof("kind"), getattr(value, value.WhichOneof("kind"))) for key, value in info.hparams.items()
    }


# ---- W&B ------------------------------------------------------------------------------------------


def wandb_offline(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    """Points every wandb directory under ``tmp_path``, offline and silent; returns the runs' ``dir``."""
    import wandb

    dirs = {
        "WANDB_DIR": tmp_path / "wandb-runs",
        "WANDB_CACHE_DIR": tmp_path / "wandb-cache",
        "WANDB_CONFIG_DIR": tmp_path / "wandb-config",
        "WANDB_DATA_DIR": tmp_path / "wandb-data",
    }
    for var, path in dirs.items():
        path.mkdir(exist_ok=True)
        monkeypatch.setenv(var, str(path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_MODE", "offline")
    wandb.teardown()  # wandb reads the environment once into a process-wide singleton
    return dirs["WANDB_DIR"]


def wandb_history(runs_dir: str | os.PathLike[str], *, timeout: float = 30.0) -> list[dict[str, Any]]:
    """The history rows of the one offline run under ``runs_dir``, once its ``exit`` record is written.

    Rows only: a key logged as a number in one row and as a histogram in
    another is fine here, where :func:`wandb_files.read_run` (which also
    rebuilds the summary) cannot nest the histogram's fields under a number.
    Media values are rebuilt as dicts of their fields.
    """
    import json

    deadline = time.monotonic() + timeout
    while True:  # wandb-core writes the file after finish() returns: wait for its exit record
        (path,) = find_wandb_files(runs_dir) or (None,)
        records = parse_records(path.read_bytes()) if path is not None else []
        if any(r.WhichOneof("record_type") == "exit" for r in records):
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"no finished W&B run under {os.fspath(runs_dir)!r} after {timeout} s")
        time.sleep(0.05)
    rows = []
    for record in records:
        if record.WhichOneof("record_type") != "history":
            continue
        row: dict[str, Any] = {}
        for item in record.history.item:
            *parents, last = [item.key] if item.key else list(item.nested_key)
            node = row
            for part in parents:
                node = node.setdefault(part, {})
            node[last] = json.loads(item.value_json)
        rows.append(row)
    return rows


# ---- files and failures ---------------------------------------------------------------------------


def files_under(root: str | os.PathLike[str], *, skip: str | os.PathLike[str] | None = None) -> set[str]:
    """Every file and directory under ``root`` (relative paths), leaving out the tree at ``skip``."""
    root = pathlib.Path(root)
    skipped = pathlib.Path(skip).resolve() if skip is not None else None
    found = set()
    for dirpath, dirnames, filenames in os.walk(root):
        here = pathlib.Path(dirpath)
        if skipped is not None:
            dirnames[:] = [d for d in dirnames if (here / d).resolve() != skipped]
        for name in [*dirnames, *filenames]:
            found.add(str((here / name).relative_to(root)))
    return found


def all_inside(root: str | os.PathLike[str]) -> bool:
    """Whether every file under ``root``, links followed, resolves to a path inside ``root``."""
    base = pathlib.Path(root).resolve()
    for dirpath, dirnames, filenames in os.walk(base):
        for name in [*dirnames, *filenames]:
            if not (pathlib.Path(dirpath) / name).resolve().is_relative_to(base):
                return False
    return True


def delivery_errors() -> dict[tuple[str, str], int]:
    """Failed and lost calls counted so far, by ``(tracker name, method or loss reason)`` (a copy)."""
    return dict(pipeline.default_dispatcher().health.counts)


def new_errors(before: Mapping[tuple[str, str], int]) -> dict[tuple[str, str], int]:
    """Failed and lost calls counted since ``before`` was taken with :func:`delivery_errors`."""
    now = delivery_errors()
    return {key: count - before.get(key, 0) for key, count in now.items() if count != before.get(key, 0)}
