"""``jaxtrack export``: a run replayed into TensorBoard event files, an offline W&B run, JSON lines and CSV, read back.

What ``export`` writes is read with TensorBoard's own event accumulator, with
the ``.wandb`` file reader of ``tests/support/wandb_files.py``, and with pandas.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import warnings
from typing import Any

import numpy as np
import pandas as pd
import pytest
import wandb

from jaxtrack.cli import main
from jaxtrack.errors import ArtifactWarning
from jaxtrack.store import RunStore
from jaxtrack.trackers.local import LocalTracker
from jaxtrack.values import Histogram
from support.backends import tb_accumulator, tb_plain_hparams, tb_plugin, tb_scalars, tb_session_start_info, tb_tensors
from support.cli import CONFIG, WIDE_LOSS, run_cli, run_cli_json
from support.links import SECRET, artifact_with_links, assert_copied_without_following_links, secret_files
from support.wandb_files import read_run


def nan_equal(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def test_export_to_tensorboard_replays_config_history_and_summary(store, capsys, tmp_path):
    logdir = tmp_path / "tb" / "exp-base"
    out = run_cli(capsys, "export", "exp-base", "--to", "tensorboard", str(logdir), "--store", store)
    assert "5 steps, 25 values, 3 hyperparameters, 4 summary values, 1 artifact" in out
    assert f"tensorboard --logdir {logdir}" in out

    acc = tb_accumulator(logdir)
    with RunStore(store) as reader:
        for key in ["train/loss", "train/acc", "lr", "epoch", "val/loss"]:
            steps, values = reader.scalars("exp-base", key)
            exported = tb_scalars(acc, key)
            assert [step for step, _ in exported] == steps.tolist()
            np.testing.assert_allclose([value for _, value in exported], values.astype(np.float32))
    assert tb_plain_hparams(tb_session_start_info(logdir)) == {
        "lr": ("number_value", 0.1),
        "wandb/api_key": ("string_value", "[redacted]"),
        "layers": ("string_value", "[64, 64]"),
    }
    ((step, note),) = tb_tensors(acc, "note")
    assert (step, note.item().decode("utf-8")) == (0, "warm-up\nsecond line")
    assert tb_plugin(acc, "weights") == "histograms" and tb_plugin(acc, "sample") == "images"
    assert tb_plugin(acc, "final_weights") == "histograms"  # the summary histogram stays one
    assert tb_scalars(acc, "best_loss") == [(4, 0.5)]
    assert (logdir / "artifacts" / "notes.txt").read_text() == "what this run tried"


def test_export_to_tensorboard_json(store, capsys, tmp_path):
    exported = run_cli_json(capsys, "export", "exp-wide", "--to", "tensorboard", str(tmp_path), "--store", store)
    assert exported == {
        "target": "tensorboard",
        "run": "exp-wide",
        "path": str(tmp_path),
        "steps": 3,
        "values": 3,
        "config": 0,
        "summary": 0,
        "artifacts": 0,
    }
    assert [value for _, value in tb_scalars(tb_accumulator(tmp_path), "train/loss")] == pytest.approx(WIDE_LOSS)


def test_export_to_jsonl_replays_the_run_and_pandas_reads_its_history(store, capsys, tmp_path):
    path = tmp_path / "exp-base.jsonl"
    path.write_text("an older export\n")  # replaced, not appended to
    out = run_cli(capsys, "export", "exp-base", "--to", "jsonl", str(path), "--store", store)
    assert "5 steps, 25 values, 3 hyperparameters, 4 summary values, 1 artifact" in out
    assert f"file: {path}" in out
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [record["type"] for record in records] == ["hyperparameters", *["log"] * 5, "summary", "artifact", "finish"]
    assert records[0]["hyperparameters"] == CONFIG
    assert records[-1]["status"] == "finished"
    assert records[-2]["name"] == "notes" and records[-2]["artifact_type"] == "text"
    assert records[-3]["summary"]["diverged"] == "NaN" and records[-3]["summary"]["peak"] == "Infinity"

    # precise_float: pandas' fast float parser is off in the last digit (0.6000000000000001 for 0.6)
    logs = pd.read_json(path, lines=True, precise_float=True).query("type == 'log'").set_index("step")
    with RunStore(store) as reader:
        history = reader.history("exp-base")
    assert logs.index.tolist() == [row["step"] for row in history]
    assert [record["train/loss"] for record in records[1:6]] == [row["train/loss"] for row in history]  # exact
    for row in history:
        for key, value in row.items():
            exported = logs.loc[row["step"], key] if key != "step" else row["step"]
            if isinstance(value, Histogram):
                assert exported["num"] == value.num and exported["bucket_counts"] == value.bucket_counts.tolist()
            elif key == "sample":
                assert exported == {"image": {"shape": [1, 4, 5, 3], "caption": "digit"}}
            elif isinstance(value, float) and math.isnan(value):
                assert math.isnan(float(exported))  # pandas may turn the string "NaN" into NaN itself
            else:
                assert exported == value, key


def test_export_of_a_failed_run_to_jsonl_ends_failed(store, capsys, tmp_path):
    exported = run_cli_json(capsys, "export", "exp-wide", "--to", "jsonl", str(tmp_path / "w.jsonl"), "--store", store)
    assert exported["target"] == "jsonl" and exported["steps"] == 3 and exported["path"] == str(tmp_path / "w.jsonl")
    frame = pd.read_json(tmp_path / "w.jsonl", lines=True)
    assert frame["loss" if "loss" in frame else "train/loss"].dropna().tolist() == WIDE_LOSS
    assert frame["status"].dropna().tolist() == ["failed"]


def test_export_to_csv_is_the_history_as_pandas_reads_it(store, capsys, tmp_path):
    path = tmp_path / "exp-base.csv"
    out = run_cli(capsys, "export", "exp-base", "--to", "csv", str(path), "--store", store)
    assert "5 rows, 7 columns" in out and f"file: {path}" in out
    frame = pd.read_csv(path)
    assert frame.columns[0] == "step"
    assert sorted(frame.columns[1:]) == ["epoch", "lr", "note", "train/acc", "train/loss", "val/loss"]
    with RunStore(store) as reader:
        history = reader.history("exp-base")
    assert frame["step"].tolist() == [row["step"] for row in history]
    for column in ["epoch", "lr", "train/acc", "train/loss"]:
        assert frame[column].tolist() == [row[column] for row in history]
    val = frame["val/loss"].tolist()  # a step without a value: an empty cell, NaN to pandas, as the logged NaN
    assert math.isnan(val[0]) and val[2] == 0.9 and math.isnan(val[4])
    assert frame["note"].tolist()[0] == "warm-up\nsecond line"  # quoted text keeps its newline
    assert path.read_text().splitlines()[0].startswith('"step","')  # names quoted as text


def test_csv_keeps_bools_infinities_and_quoted_text(tmp_path, capsys):
    db = str(tmp_path / "runs.db")
    with LocalTracker(db, run_id="kinds") as tracker:
        tracker.log({"ok": True, "up": math.inf, "text": 'a, "b"'}, step=0)
        tracker.log({"ok": False, "up": -math.inf, "text": "123"}, step=1)
    run_cli(capsys, "export", "kinds", "--to", "csv", str(tmp_path / "k.csv"), "--store", db)
    frame = pd.read_csv(tmp_path / "k.csv")
    assert frame["ok"].tolist() == [True, False]
    assert frame["up"].tolist() == [math.inf, -math.inf]
    assert frame["text"].tolist()[0] == 'a, "b"'


@pytest.mark.parametrize("target", ["jsonl", "csv"])
def test_export_to_a_file_needs_one_file(store, capsys, target):
    assert main(["export", "exp-base", "--to", target, "--store", store]) == 1
    assert f"--to {target} needs one file: --to {target} FILE" in capsys.readouterr().err


@pytest.fixture
def wandb_dirs(tmp_path, monkeypatch):
    """Every wandb directory under ``tmp_path``, offline by default; wandb's settings singleton reset around."""
    for var in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        path = tmp_path / var.lower()
        path.mkdir()
        monkeypatch.setenv(var, str(path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_MODE", "offline")
    wandb.teardown()
    yield tmp_path
    wandb.teardown()


def test_export_to_wandb_offline_writes_the_same_history_config_and_summary(store, capsys, wandb_dirs):
    target = wandb_dirs / "wandb-runs"
    # No --mode: $WANDB_MODE (offline here) decides.
    out = run_cli(capsys, "export", "exp-base", "--to", "wandb", "--dir", str(target), "--store", store)
    files = read_run(target)
    assert files.exited
    assert f"run directory: {files.run_dir}" in out
    assert f"wandb sync {files.run_dir}" in out
    assert "W&B (offline, project digits): 5 steps, 25 values, 3 hyperparameters, 4 summary values" in out

    assert (files.run.run_id, files.run.display_name, files.run.project) == ("exp-base", "baseline", "digits")
    assert {key: value for key, value in files.config.items() if key != "_wandb"} == CONFIG
    with RunStore(store) as reader:
        history = reader.history("exp-base")
    assert len(files.history) == len(history)
    for stored, row in zip(history, files.history, strict=True):
        assert row["global_step"] == stored["step"]
        assert set(row) - {"_step", "_runtime", "_timestamp"} == set(stored) - {"step"} | {"global_step"}
        for key, value in stored.items():
            if isinstance(value, (int, float, str)) and key != "step":
                assert nan_equal(row[key], value), (key, row[key], value)
    assert files.history[4]["weights"]["_type"] == "histogram"
    assert files.history[4]["sample"]["_type"] == "image-file"
    assert files.summary["best_loss"] == 0.5
    assert files.summary["peak"] == math.inf
    assert files.summary["diverged"] is None  # W&B's summary keeps no NaN (its history does: val/loss above)
    assert files.summary["final_weights"]["_type"] == "histogram"
    (exit_record,) = [r.exit for r in files.records if r.WhichOneof("record_type") == "exit"]
    assert exit_record.exit_code == 0


def test_export_to_wandb_of_a_failed_run_marks_it_failed(store, capsys, wandb_dirs, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "online")  # --mode wins over the environment
    target = wandb_dirs / "wandb-runs"
    exported = run_cli_json(
        capsys,
        "export",
        "wide",
        "--to",
        "wandb",
        "--mode",
        "offline",
        "--project",
        "moved",
        "--dir",
        str(target),
        "--store",
        store,
    )
    files = read_run(target)
    assert exported == {
        "target": "wandb",
        "run": "exp-wide",
        "mode": "offline",
        "project": "moved",
        "entity": None,
        "run_dir": str(files.run_dir),
        "url": None,
        "exit_code": 1,
        "steps": 3,
        "values": 3,
        "config": 0,
        "summary": 0,
        "artifacts": 0,
    }
    assert (files.run.run_id, files.run.project) == ("exp-wide", "moved")
    assert files.column("train/loss") == WIDE_LOSS
    (exit_record,) = [r.exit for r in files.records if r.WhichOneof("record_type") == "exit"]
    assert exit_record.exit_code == 1


def test_wandb_mode_from_the_environment_must_write_a_run(store, capsys, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert main(["export", "exp-base", "--to", "wandb", "--store", store]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert (
        line == "jaxtrack: error: WANDB_MODE is 'disabled', which writes no run: pass --mode online or --mode offline"
    )


# ---- a store written by someone else -------------------------------------------------------------


@pytest.mark.parametrize("listed", ["/etc/passwd", "../../x", "artifacts/out"])
def test_export_of_a_store_listing_an_artifact_outside_its_folder_is_refused_naming_the_path(
    tmp_path, capsys, monkeypatch, listed
):
    monkeypatch.chdir(tmp_path)  # the trackers' git queries stay away from this checkout
    path = tmp_path / "shared" / "deep" / "runs.db"
    (tmp_path / "notes.txt").write_text("notes")
    with LocalTracker(path, run_id="hostile") as tracker:
        tracker.log({"loss": 1.0}, step=0)
        tracker.log_artifact(tmp_path / "notes.txt")
    (tmp_path / "x").write_bytes(SECRET)  # what ../../x names
    (path.parent / "artifacts" / "out").symlink_to(tmp_path / "x")
    with sqlite3.connect(path) as db:
        db.execute("UPDATE artifacts SET path = ?", (listed,))
    logdir = tmp_path / "tb"

    status = main(["export", "hostile", "--to", "tensorboard", str(logdir), "--store", str(path)])
    captured = capsys.readouterr()
    assert status == 1 and captured.out == ""
    assert f"lists an artifact at {listed!r}, outside its artifacts folder" in captured.err
    assert not (logdir / "artifacts").exists() and secret_files(tmp_path / "tb") == []
    assert main(["show", "hostile", "--store", str(path)]) == 1  # no reader lists it either
    assert repr(listed) in capsys.readouterr().err


def test_export_follows_no_link_out_of_a_stored_directory_artifact(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    artifact = artifact_with_links(tmp_path / "sources")
    path = tmp_path / "store" / "runs.db"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ArtifactWarning)  # the store leaves the links out: checked in tests/store
        with LocalTracker(path, run_id="linked") as tracker:
            tracker.log_artifact(artifact.root, name="checkpoint")
    # A link out planted in the stored copy afterwards (a shared store): export must not follow it either.
    with RunStore(path) as store:
        (stored,) = store.artifacts("linked")
    os.symlink(tmp_path / "sources" / "home" / ".ssh" / "id_rsa", os.path.join(stored["path"], "planted_key"))

    with pytest.warns(ArtifactWarning, match="'planted_key' \\(a link pointing outside the artifact\\)"):
        out = run_cli(capsys, "export", "linked", "--to", "tensorboard", str(tmp_path / "tb"), "--store", str(path))
    assert "1 artifact" in out
    assert_copied_without_following_links(tmp_path / "tb" / "artifacts" / "checkpoint", artifact)
    assert secret_files(tmp_path / "tb") == []
