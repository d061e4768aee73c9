"""``jaxtrack plot``: the PNG it writes, read back with matplotlib, and what it says it drew."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image
import numpy as np

from jaxtrack.cli import main
from support.cli import run_cli, run_cli_json

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def read_png(path: str | Path) -> np.ndarray:
    with open(path, "rb") as file:
        assert file.read(8) == PNG_SIGNATURE
    pixels = matplotlib.image.imread(path)
    assert pixels.ndim == 3 and pixels.size > 0
    return pixels


def test_plot_draws_every_scalar_metric_into_run_id_png_by_default(store, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = run_cli(capsys, "plot", "exp-base", "--store", store)
    assert out == f"{tmp_path / 'exp-base.png'}\n"
    all_keys = read_png(tmp_path / "exp-base.png")

    plotted = run_cli_json(capsys, "plot", "exp-base", "train/loss", "-o", "one.png", "--store", store)
    assert plotted["keys"] == ["train/loss"]
    one_key = read_png(tmp_path / "one.png")
    # Five panels in a grid of three columns and two rows, against one panel.
    assert all_keys.shape[0] > one_key.shape[0] and all_keys.shape[1] > one_key.shape[1]

    plotted = run_cli_json(capsys, "plot", "exp-base", "-o", "all.png", "--store", store)
    assert plotted == {
        "path": str(tmp_path / "all.png"),
        "keys": ["epoch", "lr", "train/acc", "train/loss", "val/loss"],
        "runs": ["exp-base"],
        "lines": {key: ["exp-base"] for key in ["epoch", "lr", "train/acc", "train/loss", "val/loss"]},
    }


def test_plot_compares_runs_on_glob_keys(store, capsys, tmp_path):
    output = tmp_path / "compare.png"
    plotted = run_cli_json(
        capsys, "plot", "exp-base", "train/*", "-o", str(output), "--compare", "wide", "--store", store
    )
    assert plotted["path"] == str(output)
    assert plotted["keys"] == ["train/acc", "train/loss"]
    assert plotted["runs"] == ["exp-base", "exp-wide"]
    # exp-wide has no train/acc: no line there, and no error.
    assert plotted["lines"] == {"train/acc": ["exp-base"], "train/loss": ["exp-base", "exp-wide"]}
    read_png(output)


def test_error_when_the_plot_file_cannot_be_written(store, capsys, tmp_path):
    assert main(["plot", "exp-base", "-o", str(tmp_path / "no-such-dir" / "x.png"), "--store", store]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("jaxtrack: error: ") and "no-such-dir" in line
