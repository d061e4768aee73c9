"""The runs the command line tests read, and ``main(argv)`` run in-process with what it printed.

``write_runs`` writes three runs with the same values every time:
``exp-base`` (finished, every kind of value, NaNs), ``exp-wide`` (failed),
``solo-7`` (no name).
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import numpy as np
import pytest

from jaxtrack.cli import main
from jaxtrack.trackers.local import LocalTracker
from jaxtrack.values import Image

TRAIN_LOSS = [1.0, 0.8, 0.6, 0.7, 0.5]
TRAIN_ACC = [0.1, 0.2, 0.3, 0.4, 0.9]
WIDE_LOSS = [2.0, 1.5, 1.2]
CONFIG = {"lr": 0.1, "wandb/api_key": "[redacted]", "layers": [64, 64]}


def write_runs(path: str) -> None:
    """The runs of the ``store`` fixture, with the same values every time."""
    with LocalTracker(path, run_id="exp-base", name="baseline", project="digits") as tracker:
        tracker.log_hyperparameters({"lr": 0.1, "wandb": {"api_key": "hunter2"}, "layers": [64, 64]})
        for step, (loss, acc) in enumerate(zip(TRAIN_LOSS, TRAIN_ACC, strict=True)):
            metrics: dict[str, Any] = {"train": {"loss": loss, "acc": acc}, "lr": 0.1, "epoch": step}
            if step == 0:
                metrics["note"] = "warm-up\nsecond line"
            if step == 2:
                metrics["val/loss"] = 0.9
            if step == 4:
                metrics["val/loss"] = math.nan
                metrics["weights"] = np.linspace(-1.0, 3.0, 100)
                metrics["sample"] = Image(np.full((4, 5, 3), 200, np.uint8), caption="digit")
            tracker.log(metrics, step=step)
        tracker.log_summary({"best_loss": 0.5, "diverged": math.nan, "peak": math.inf, "final_weights": np.arange(4.0)})
        notes = os.path.join(os.path.dirname(path), "notes.txt")
        with open(notes, "w") as file:
            file.write("what this run tried")
        tracker.log_artifact(notes, name="notes", type="text")
    with LocalTracker(path, run_id="exp-wide", name="wide", project="digits") as tracker:
        for step, loss in enumerate(WIDE_LOSS):
            tracker.log({"train/loss": loss}, step=step)
        tracker.set_status("failed")
    with LocalTracker(path, run_id="solo-7", project="other") as tracker:
        tracker.log({"loss": 0.3}, step=0)


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """``main(argv)``, which must succeed; returns what it printed."""
    status = main(list(argv))
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert captured.err == ""
    return captured.out


def run_cli_json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    """``main([*argv, "--json"])`` parsed as strict JSON: a NaN or Infinity literal fails the test."""

    def reject(constant: str) -> None:
        raise AssertionError(f"{constant} in the JSON output")

    return json.loads(run_cli(capsys, *argv, "--json"), parse_constant=reject)
