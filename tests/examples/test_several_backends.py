"""Notebook 3: one run in TensorBoard, an offline W&B run and the local store, from the seed's YAML.

The notebook runs in a fresh kernel, and its plain-script version as a
subprocess, each with a temporary directory as its working directory and every
W&B directory pointed there. Each backend is then read back for real: the
local store with ``RunStore``, TensorBoard with its ``EventAccumulator``, the
offline W&B run through its ``run-<id>.wandb`` transaction log.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from jaxtrack.store import RunStore
from support.backends import tb_accumulator, tb_series, tb_values, wandb_offline
from support.notebooks import EXAMPLES, execute, text_outputs
from support.wandb_files import read_run

NOTEBOOK = EXAMPLES / "03_several_backends.ipynb"
SCRIPT = EXAMPLES / "03_several_backends.py"
SECRET = b"not-a-real-key-0123456789"  # the notebook's wandb_api_key
REPORT_STEPS = list(range(20, 201, 20))
CONFIG = {
    "steps": 200,
    "batch_size": 64,
    "hidden": 64,
    "learning_rate": 0.003,
    "log_every": 20,
    "seed": 0,
    "wandb_api_key": "[redacted]",
}


@pytest.fixture
def env(tmp_path, monkeypatch):
    """Every W&B directory under ``tmp_path`` (the notebook's and the script's environment), no store override."""
    wandb_offline(tmp_path, monkeypatch)
    monkeypatch.delenv("JAXTRACK_STORE", raising=False)


def check_recorded(cwd: pathlib.Path) -> str:
    """Asserts that the three backends recorded one and the same run; returns its id."""
    # The local store: the run, its config (credential redacted), summary and history.
    with RunStore(cwd / "runs" / "jaxtrack.db") as store:
        (run,) = store.runs()
        history = {row["step"]: row for row in store.history(run.id)}
        (artifact,) = store.artifacts(run.id)
    run_id = run.id
    assert (run.status, run.project, run.last_step) == ("finished", "jaxtrack-examples", 200)
    assert run.config == CONFIG
    assert sorted(history) == REPORT_STEPS
    loss = [history[step]["train/loss"] for step in REPORT_STEPS]
    accuracy = [history[step]["train/accuracy"] for step in REPORT_STEPS]
    assert loss[-1] < loss[0] / 3  # it learns
    assert accuracy[-1] > 0.85
    final = run.summary["eval/final_accuracy"]
    assert final > 0.85
    assert history[200]["eval/accuracy"] == final
    assert history[200]["weights/hidden"].num == 64 * 64
    assert history[200]["samples"].to_uint8().shape == (8, 8, 8, 1)
    assert artifact["name"] == "config"

    # TensorBoard: the same run id names its directory, and the same values at the same steps.
    events = tb_accumulator(cwd / "runs" / "tensorboard" / run_id)
    tags = set(events.Tags()["tensors"])
    assert {"train/loss", "train/accuracy", "eval/accuracy", "eval/final_accuracy", "weights/hidden", "samples"} <= tags
    tb_loss = tb_series(events, "train/loss")
    assert [step for step, _ in tb_loss] == REPORT_STEPS
    np.testing.assert_allclose([value for _, value in tb_loss], loss, rtol=1e-6)  # float32 in TensorBoard
    assert tb_values(events, "eval/accuracy")[200].item() == pytest.approx(final, rel=1e-6)
    assert tb_values(events, "weights/hidden")[200][:, 2].sum() == 64 * 64  # bucket counts
    assert len(tb_values(events, "samples")[200]) == 2 + 8  # width, height, then one PNG per image

    # W&B: an offline run with the same id, its history rows, config and summary.
    wandb_dir = cwd / "runs" / "wandb"
    files = read_run(wandb_dir)
    assert files.exited
    assert files.run.run_id == run_id
    assert files.wandb_file.name == f"run-{run_id}.wandb"
    assert files.run.project == "jaxtrack-examples"
    rows = [row for row in files.history if "train/loss" in row]
    assert [row["global_step"] for row in rows] == REPORT_STEPS
    np.testing.assert_allclose([row["train/loss"] for row in rows], loss, rtol=1e-6)
    (last,) = [row for row in files.history if "eval/accuracy" in row]
    assert last["global_step"] == 200
    assert last["eval/accuracy"] == pytest.approx(final, rel=1e-6)
    assert last["weights/hidden"]["_type"] == "histogram"
    assert sum(last["weights/hidden"]["values"]) == 64 * 64
    assert last["samples"]["count"] == 8
    assert {k: v for k, v in files.config.items() if k != "_wandb"} == CONFIG
    assert files.summary["eval/final_accuracy"] == pytest.approx(final, rel=1e-6)
    assert [(a.name, a.paths) for a in files.artifacts] == [("config", ("config.yaml",))]

    # The credential reached no file, whatever wrote it (W&B's logs and staging included).
    written = [path for path in cwd.rglob("*") if path.is_file()]
    assert len(written) > 20
    leaks = [str(path.relative_to(cwd)) for path in written if SECRET in path.read_bytes()]
    assert leaks == []
    return run_id


def check_printed(text: str, cwd: pathlib.Path, run_id: str) -> None:
    """What the run prints: the redacted config, and the commands that show and upload the run."""
    (sync_dir,) = (cwd / "runs" / "wandb").glob(f"offline-run-*-{run_id}")
    assert "wandb_api_key: [redacted]" in text
    assert "tensorboard --logdir runs/tensorboard" in text
    assert f"wandb sync {sync_dir.relative_to(cwd)}" in text
    assert f"jaxtrack export {run_id} --store runs/jaxtrack.db --to wandb" in text
    assert SECRET.decode() not in text


def test_notebook_records_one_run_in_every_backend(tmp_path, env):
    notebook = execute(NOTEBOOK.name, tmp_path)
    run_id = check_recorded(tmp_path)
    outputs = list(text_outputs(notebook))
    check_printed("".join(text for _, _, text in outputs), tmp_path, run_id)
    warnings = [text for _, kind, text in outputs if kind == "stderr" and "Warning" in text]
    assert warnings == []


def test_script_records_one_run_in_every_backend(tmp_path, env):
    result = subprocess.run(
        [sys.executable, os.fspath(SCRIPT)], cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr
    run_id = check_recorded(tmp_path)
    check_printed(result.stdout, tmp_path, run_id)
    assert "Warning" not in result.stderr
