"""The library side of ``jaxtrack export``: a stored run replayed into another tracker, as the tracker receives it.

The command line's output is tested in ``tests/cli/test_export.py``; here the
replay itself is checked through a recording tracker and a second local store.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from jaxtrack.store import RunStore, StoredRun
from jaxtrack.store.export import ExportError, export_wandb, replay
from jaxtrack.trackers.local import LocalTracker
from jaxtrack.values import Histogram
from support.recording import RecordingTracker


def _write(path: Path) -> None:
    artifact = path.parent / "notes.txt"
    artifact.write_text("notes")
    with LocalTracker(path, run_id="source", name="src") as tracker:
        tracker.log_hyperparameters({"lr": 0.1})
        tracker.log({"loss": 1.0, "note": "a"}, step=0)
        tracker.log({"loss": 0.5, "w": np.arange(5.0)}, step=3)
        tracker.log_summary({"best": 0.5, "final_w": np.arange(4.0)})
        tracker.log_artifact(artifact, name="notes", type="text")


def _written_and_read_back(path: Path) -> tuple[StoredRun, list[dict[str, Any]], list[dict[str, Any]]]:
    """The run ``_write`` writes, with its history and artifacts, as ``jaxtrack export`` reads them."""
    _write(path)
    with RunStore(path) as store:
        run = store.run("source")
        return run, store.history(run.id), store.artifacts(run.id)


def test_replay_logs_config_history_summary_and_artifacts_in_order(tmp_path: Path) -> None:
    run, history, artifacts = _written_and_read_back(tmp_path / "runs.db")
    recorder = RecordingTracker()
    counts = replay(recorder, run, history, artifacts)
    assert counts == {"steps": 2, "values": 4, "config": 1, "summary": 2, "artifacts": 1}
    assert recorder.hparams == [{"lr": 0.1}]
    assert [(step, sorted(metrics)) for step, metrics, _ in recorder.logs] == [
        (0, ["loss", "note"]),
        (3, ["loss", "w"]),
    ]
    (summary,) = recorder.summaries
    assert summary["best"] == 0.5 and isinstance(summary["final_w"], Histogram)  # a histogram again, not a dict
    assert [artifact[1:] for artifact in recorder.artifacts] == [("notes", "text", b"notes")]
    assert recorder.finished == 0  # the caller finishes the tracker
    not_configured = RecordingTracker()
    assert replay(not_configured, run, history, artifacts, config=False)["config"] == 1  # counted, not logged
    assert not_configured.hparams == []


def test_replay_leaves_out_artifacts_whose_files_are_gone(tmp_path: Path) -> None:
    run, history, artifacts = _written_and_read_back(tmp_path / "runs.db")
    Path(artifacts[0]["path"]).unlink()
    assert replay(RecordingTracker(), run, history, artifacts)["artifacts"] == 0


def test_export_wandb_refuses_a_mode_that_writes_no_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "runs.db"
    _write(path)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    with RunStore(path) as store, pytest.raises(ExportError, match="WANDB_MODE is 'disabled'"):
        export_wandb(store, "source")
