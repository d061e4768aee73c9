"""The console tracker writes one line per report through logging."""

from __future__ import annotations

import logging

import numpy as np
import pytest

import jaxtrack as jt


def test_console_lines(caplog, tmp_path):
    caplog.set_level(logging.INFO, logger="test.console")
    console = jt.ConsoleTracker(logger="test.console")
    console.log({"loss": 0.123456789, "train": {"acc": 1}}, step=10)
    console.log({"w": np.array([1.0, 3.0]), "note": "ok", "img": jt.Image(np.zeros((2, 4, 4, 3)))})
    console.log_summary({"best": 0.5})
    console.log_hyperparameters({"opt": {"lr": 0.001}, "layers": [64, 64]})
    (tmp_path / "f.txt").write_text("x")
    console.log_artifact(tmp_path / "f.txt", name="f", type="text")
    console.finish()
    lines = [r.getMessage() for r in caplog.records if r.name == "test.console"]
    assert lines[0] == "step 10 | loss 0.123457 | train/acc 1"
    assert lines[1] == "step 11 | w histogram(n=2, mean=2, min=1, max=3) | note ok | img image[2, 4, 4, 3]"
    assert lines[2] == "summary | best 0.5"
    assert lines[3] == "hyperparameters | opt/lr 0.001 | layers [64, 64]"
    assert lines[4].startswith("artifact f (text): ") and lines[4].endswith("f.txt")


def test_console_level_and_precision(caplog):
    caplog.set_level(logging.DEBUG, logger="test.console.debug")
    console = jt.TrackerConfig.parse(
        {"type": "console", "logger": "test.console.debug", "level": "DEBUG", "precision": 2}
    ).init(None)
    console.log({"loss": 0.123456}, step=1)
    console.flush()  # written on the console's own thread: flush returns once it is
    (record,) = [r for r in caplog.records if r.name == "test.console.debug"]
    assert record.levelno == logging.DEBUG and record.getMessage() == "step 1 | loss 0.12"


def test_console_bad_level():
    with pytest.raises(ValueError, match="LOUD"):
        jt.ConsoleTracker(level="LOUD")
