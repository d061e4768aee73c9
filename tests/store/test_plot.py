"""The library side of ``jaxtrack plot``: which runs and keys get a line, and the errors it names.

The command line's output is tested in ``tests/cli/test_plot.py``.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.image
import pytest

from jaxtrack.store import RunStore
from jaxtrack.store.plot import plot_runs
from jaxtrack.trackers.local import LocalTracker


def _write(path: Path) -> None:
    for run_id, name, metrics in [
        ("a-1", "same", {"train/loss": 1.0, "train/acc": 0.5}),
        ("b-2", "same", {"train/loss": 2.0}),
        ("texts", None, {"note": "only text"}),
    ]:
        with LocalTracker(path, run_id=run_id, name=name) as tracker:
            tracker.log(metrics, step=0)
            tracker.log(metrics, step=1)


def test_plot_runs_draws_each_key_with_the_runs_that_have_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "runs.db"
    _write(path)
    monkeypatch.chdir(tmp_path)
    with RunStore(path) as store:
        plotted = plot_runs(store, "a-1", compare=["b-2", "a-1"])  # a run compared with itself is drawn once
    assert plotted == {
        "path": str(tmp_path / "a-1.png"),
        "keys": ["train/acc", "train/loss"],
        "runs": ["a-1", "b-2"],
        "lines": {"train/acc": ["a-1"], "train/loss": ["a-1", "b-2"]},
    }
    assert matplotlib.image.imread(plotted["path"]).ndim == 3


def test_plot_runs_names_what_it_cannot_draw(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    _write(path)
    with RunStore(path) as store:
        with pytest.raises(ValueError, match="run 'texts' has no scalar metrics to plot"):
            plot_runs(store, "texts", output=tmp_path / "x.png")
        with pytest.raises(KeyError, match="did you mean 'train/loss'"):
            plot_runs(store, "a-1", ["train/los"], output=tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
