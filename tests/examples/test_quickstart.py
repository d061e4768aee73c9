"""Notebook 1, the Quickstart, and its plain-script version (the `make demo` job).

Both run with a temporary directory as their working directory: the script as
`python examples/01_quickstart.py` in a subprocess, the notebook top to bottom
in a fresh kernel. What they recorded is then read back for real: the local
store with ``RunStore``, the Orbax checkpoints on disk, the plot as a PNG; the
commands the script prints are run as printed.
"""

from __future__ import annotations

import io
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys

import matplotlib.image
import numpy as np
import pytest

from jaxtrack.store import RunStore
from support.notebooks import EXAMPLES, execute, image_outputs, text_outputs

NOTEBOOK = EXAMPLES / "01_quickstart.ipynb"
SCRIPT = EXAMPLES / "01_quickstart.py"
FIRST_STEPS, ALL_STEPS = 200, 300  # trained to step 200, then resumed from its checkpoint up to 300
TRAIN_STEPS = list(range(25, ALL_STEPS + 1, 25))
EVAL_STEPS = list(range(50, ALL_STEPS + 1, 50))
CONFIG = {
    "num_steps": ALL_STEPS,  # 200 at first, updated when training goes on
    "batch_size": 64,
    "width": 128,
    "learning_rate": 0.003,
    "report_every": 25,
    "eval_every": 50,
    "checkpoint_every": 100,
    "seed": 0,
}


@pytest.fixture(autouse=True)
def _default_store(monkeypatch):
    monkeypatch.delenv("JAXTRACK_STORE", raising=False)  # the default store, runs/jaxtrack.db in the cwd


def check_recorded_run(cwd: pathlib.Path) -> str:
    """Asserts what the quickstart recorded under ``cwd``; returns the run id."""
    with RunStore(cwd / "runs" / "jaxtrack.db") as store:
        (run,) = store.runs()
        assert (run.status, run.last_step, run.sessions) == ("finished", ALL_STEPS, 1)
        assert run.config == CONFIG
        (artifact,) = store.artifacts(run.id)
        assert (artifact["name"], artifact["type"]) == ("config", "config")  # log_configuration's YAML
        assert os.path.exists(artifact["path"])

        keys = store.keys(run.id)
        in_graph = ["loss", "accuracy", "grad_norm", "logits/mean", "logits/std", "logits/min", "logits/max"]
        assert {f"train/{key}" for key in in_graph} | {"eval/loss", "eval/accuracy"} <= set(keys)
        for key in in_graph:
            steps, values = store.scalars(run.id, f"train/{key}")
            assert steps.tolist() == TRAIN_STEPS, key
            assert np.isfinite(values).all(), key
        for key in ("eval/loss", "eval/accuracy"):
            assert store.scalars(run.id, key)[0].tolist() == EVAL_STEPS, key

        loss = dict(zip(*store.scalars(run.id, "train/loss"), strict=True))
        assert loss[ALL_STEPS] < loss[FIRST_STEPS] < loss[TRAIN_STEPS[0]] / 5  # it learns
        # Resumed from the step-200 checkpoint, not from the fresh model it was given: the first
        # interval after the restart is already far better than the first interval of all.
        assert loss[FIRST_STEPS + 25] < loss[TRAIN_STEPS[0]] / 5
        _, eval_loss = store.scalars(run.id, "eval/loss")
        assert eval_loss[-1] < eval_loss[0]
        logits_min, logits_max = (
            store.scalars(run.id, "train/logits/min")[1],
            store.scalars(run.id, "train/logits/max")[1],
        )
        assert (logits_min < logits_max).all()

        final_accuracy = run.summary["eval/final_accuracy"]
        assert final_accuracy > 0.8
        # The summary evaluates the model jt.train returned, which the periodic evaluation also saw at step 300.
        assert final_accuracy == pytest.approx(store.scalars(run.id, "eval/accuracy")[1][-1])
        assert run.summary["eval/final_loss"] == pytest.approx(eval_loss[-1])

    checkpoints = cwd / "runs" / "checkpoints" / run.id
    assert sorted(int(path.name) for path in checkpoints.iterdir() if path.name.isdigit()) == [100, 200, 300]
    return run.id


def check_plot(png: bytes | pathlib.Path, *, side_by_side: bool = True) -> None:
    pixels = matplotlib.image.imread(io.BytesIO(png) if isinstance(png, bytes) else png, format="png")
    height, width = pixels.shape[:2]
    assert min(height, width) > 200
    if side_by_side:
        assert width > 2 * height  # the quickstart's two panels: loss, accuracy
    assert pixels.std() > 0.05  # curves drawn, not a blank canvas


def test_the_script_trains_records_plots_and_prints_commands_that_work(tmp_path):
    venv_bin = os.path.dirname(sys.executable)
    # As `make demo` runs it: the virtual environment not activated, so `jaxtrack` is not on the PATH.
    path = os.pathsep.join(
        entry for entry in os.environ.get("PATH", "").split(os.pathsep) if entry and os.path.abspath(entry) != venv_bin
    )
    env = {**os.environ, "PATH": path}
    done = subprocess.run(
        [sys.executable, str(SCRIPT)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    for stream in (done.stdout, done.stderr):
        assert "Warning" not in stream and "Traceback" not in stream, stream

    run_id = check_recorded_run(tmp_path)
    check_plot(tmp_path / "runs" / "quickstart.png")

    out = done.stdout
    assert f"Run {run_id} is in the local store {os.path.join('runs', 'jaxtrack.db')}. Look at it with:" in out
    assert out.rstrip().endswith(f"Its loss and accuracy curves are in {os.path.join('runs', 'quickstart.png')}")
    told = out[out.index("Look at it with:") :].splitlines()[1:]
    commands = [shlex.split(line) for line in told if line.startswith("  ")]
    assert [command[1:] for command in commands] == [
        ["show", run_id],
        ["plot", run_id, "train/*", "eval/*", "-o", f"{run_id}.png"],
        ["runs"],
    ]
    if shutil.which("jaxtrack", path=path) is None:  # else a `jaxtrack` elsewhere on the PATH is printed
        assert all(os.path.samefile(tmp_path / command[0], os.path.join(venv_bin, "jaxtrack")) for command in commands)

    # Each command runs as printed, in the directory the script ran in.
    shown = {}
    for command in commands:
        ran = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert ran.returncode == 0, (command, ran.stderr)
        shown[command[1]] = ran.stdout
    assert run_id in shown["runs"] and "finished" in shown["runs"]
    assert run_id in shown["show"]
    assert "eval/final_accuracy" in shown["show"] and "train/grad_norm" in shown["show"]
    check_plot(tmp_path / f"{run_id}.png", side_by_side=False)  # `jaxtrack plot` stacks its panels


def test_the_notebook_trains_records_and_plots_the_run_inline(tmp_path):
    notebook = execute(NOTEBOOK.name, tmp_path)

    run_id = check_recorded_run(tmp_path)
    (plot,) = image_outputs(notebook)  # the figure, shown once
    check_plot(plot)
    check_plot(tmp_path / "runs" / "quickstart.png")

    outputs = list(text_outputs(notebook))
    stderr = [text for _, kind, text in outputs if kind == "stderr"]
    assert not any("Warning" in text or "Traceback" in text for text in stderr), stderr
    stdout = "".join(text for _, kind, text in outputs if kind == "stdout")
    assert f"Recording run {run_id} in" in stdout
    assert re.search(rf"^ +\S*jaxtrack show {run_id}$", stdout, re.MULTILINE), stdout
    assert "resumed from step 200" in stdout
