"""RunStore on real stores: look-ups by run and key, history, statistics, reading while a run writes.

The stores are written with ``LocalTracker``, as users write them, and read
back through :class:`~jaxtrack.store.RunStore`: no mocks.
"""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import numpy as np
import pytest

import jaxtrack as jt
from jaxtrack.store import RunStore
from jaxtrack.trackers.local import LocalTracker
from support.store import read_history, read_run

# ---- 1. history and statistics -------------------------------------------------------------------


def test_history_keys_limit_the_columns_and_rows(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    with LocalTracker(path, run_id="cols") as tracker:
        tracker.log({"train/loss": 1.0, "lr": 0.1}, step=0)
        tracker.log({"eval/loss": 2.0}, step=1)
        tracker.log({"train/loss": 0.5, "lr": 0.05}, step=2)
    assert read_history(path, "cols", ["train/loss"]) == [
        {"step": 0, "train/loss": 1.0},
        {"step": 2, "train/loss": 0.5},
    ]
    assert read_history(path, "cols", ["eval/loss", "lr"]) == [
        {"step": 0, "lr": 0.1},
        {"step": 1, "eval/loss": 2.0},
        {"step": 2, "lr": 0.05},
    ]


def test_metric_stats_leave_nans_out_of_min_and_max(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    with LocalTracker(path, run_id="stats") as tracker:
        for step, value in enumerate([3.0, float("nan"), 1.0, 2.0]):
            tracker.log({"loss": value, "note": f"n{step}"}, step=step)
        tracker.log({"only_nan": float("nan")}, step=4)
    with RunStore(path) as store:
        stats = store.metric_stats("stats")
    assert stats["loss"] == {"count": 4, "min": 1.0, "max": 3.0, "last_step": 3, "last": 2.0}
    assert stats["note"] == {"count": 4, "last_step": 3, "last": "n3"}
    assert stats["only_nan"]["count"] == 1 and stats["only_nan"]["min"] is None
    assert math.isnan(stats["only_nan"]["last"])


def test_reader_sees_each_report_as_soon_as_flush_returns(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    with LocalTracker(path, run_id="live") as tracker, RunStore(path) as store:
        for step in range(3):
            tracker.log({"loss": float(step)}, step=step)
            tracker.flush()  # the report is committed once flush returns (log only queues it)
            assert store.history("live")[-1] == {"step": step, "loss": float(step)}
            assert store.run("live").status == "running"
    assert read_run(path, "live").status == "finished"


# ---- 2. look-ups and errors ----------------------------------------------------------------------


def test_run_store_on_a_missing_path_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "missing.db"
    with pytest.raises(FileNotFoundError, match=r"missing\.db"):
        RunStore(missing)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        RunStore(tmp_path / "nowhere")  # not a file either
    assert not missing.parent.exists()  # reading creates nothing


def _three_runs(path: Path) -> None:
    for run_id, name in (("alpha-1", "first"), ("alpha-10", "second"), ("beta", "first")):
        with LocalTracker(path, run_id=run_id, name=name) as tracker:
            tracker.log({"loss": 1.0}, step=0)


def test_run_look_up_by_id_latest_prefix_and_name(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    _three_runs(path)
    with RunStore(path) as store:
        assert [run.id for run in store.runs()] == ["alpha-1", "alpha-10", "beta"]
        assert store.run("alpha-1").id == "alpha-1"  # an exact id wins over being a prefix of another
        assert store.run("latest").id == "beta"
        assert store.run("alpha-1").display_name == "first"
        assert store.run("b").id == "beta"  # a unique prefix
        assert store.run("second").id == "alpha-10"  # a name
        assert store.run("first").id == "beta"  # a name shared by runs: the latest
        assert store.history("b") == [{"step": 0, "loss": 1.0}]  # look-ups work wherever a run is named
        with pytest.raises(KeyError, match="ambiguous") as ambiguous:
            store.run("alpha")
        assert "alpha-1" in str(ambiguous.value) and "alpha-10" in str(ambiguous.value)
        with pytest.raises(KeyError, match="'gamma'") as unknown:
            store.run("gamma")
        assert all(run_id in str(unknown.value) for run_id in ("alpha-1", "alpha-10", "beta"))
        with pytest.raises(KeyError, match="did you mean 'beta'"):
            store.history("betta")


def test_run_look_up_in_a_store_without_runs(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    LocalTracker(path, run_id="gone").finish()
    db = sqlite3.connect(path)
    db.execute("DELETE FROM runs")
    db.commit()
    db.close()
    with RunStore(path) as store:
        assert store.runs() == []
        with pytest.raises(KeyError, match="has no runs"):
            store.run("latest")


def test_runs_filtered_by_project(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    for run_id, project in (("a", "vision"), ("b", "text"), ("c", "vision")):
        LocalTracker(path, run_id=run_id, project=project).finish()
    with RunStore(path) as store:
        assert [run.id for run in store.runs(project="vision")] == ["a", "c"]
        assert store.runs(project="audio") == []


def test_select_keys_with_names_globs_and_kinds(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    with LocalTracker(path, run_id="keys") as tracker:
        tracker.log(
            {"train": {"loss": 1.0, "acc": 0.5}, "eval": {"loss": 2.0}, "note": "hi", "w": np.arange(3.0)}, step=0
        )
    with RunStore(path) as store:
        assert store.keys("keys") == {
            "eval/loss": "scalar",
            "note": "text",
            "train/acc": "scalar",
            "train/loss": "scalar",
            "w": "histogram",
        }
        assert store.select_keys("keys", ["train/*"]) == ["train/acc", "train/loss"]
        assert store.select_keys("keys", ["*/loss"]) == ["eval/loss", "train/loss"]
        assert store.select_keys("keys", ["note", "train/loss", "train/*"]) == ["note", "train/loss", "train/acc"]
        assert store.select_keys("keys", ["*"], kind="scalar") == ["eval/loss", "train/acc", "train/loss"]
        assert store.select_keys("keys", ["[nw]*"]) == ["note", "w"]
        with pytest.raises(KeyError, match="did you mean 'train/loss'"):
            store.select_keys("keys", ["train/los"])
        with pytest.raises(KeyError, match="'test/\\*'"):
            store.select_keys("keys", ["test/*"])
        with pytest.raises(KeyError, match="no text key 'train/loss'"):
            store.select_keys("keys", ["train/loss"], kind="text")
        with pytest.raises(KeyError, match="no scalar key 'note'"):
            store.scalars("keys", "note")
        with pytest.raises(KeyError, match="no histogram key 'train/loss'"):
            store.histograms("keys", "train/loss")
        steps, histograms = store.histograms("keys", "w")
        assert steps.tolist() == [row["step"] for row in store.history("keys", keys=["w"])]
        assert all(isinstance(h, jt.Histogram) for h in histograms)
