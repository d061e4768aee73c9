"""The ``jaxtrack`` command line, run on real stores written by ``LocalTracker``.

Most commands are called in-process through ``main(argv)``; the console
script and ``python -m jaxtrack`` are run once each as real processes. What
``plot`` writes is read back with matplotlib, what ``export`` writes with
TensorBoard's own event accumulator and with the ``.wandb`` file reader of
``tests/wandb_files.py``.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import matplotlib.image
import numpy as np
import pytest
import wandb

from jaxtrack.cli import main
from jaxtrack.store import RunStore
from jaxtrack.trackers.local import LocalTracker
from jaxtrack.values import Image
from support.backends import tb_accumulator, tb_plain_hparams, tb_plugin, tb_scalars, tb_session_start_info, tb_tensors
from support.wandb_files import read_run

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

TRAIN_LOSS = [1.0, 0.8, 0.6, 0.7, 0.5]
TRAIN_ACC = [0.1, 0.2, 0.3, 0.4, 0.9]
WIDE_LOSS = [2.0, 1.5, 1.2]
CONFIG = {"lr": 0.1, "wandb/api_key": "[redacted]", "layers": [64, 64]}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Three runs: ``exp-base`` (finished, every kind of value, NaNs), ``exp-wide`` (failed), ``solo-7`` (no name)."""
    directory = tmp_path_factory.mktemp("store")
    path = str(directory / "runs.db")
    with pytest.MonkeyPatch.context() as patch:
        # Away from this checkout: the trackers' git queries must not touch the repository under test.
        patch.chdir(directory)
        write_runs(path)
    return path


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


def cell_end(line: str, text: str) -> int:
    """Where ``text`` ends in ``line``: a right-aligned cell ends where its column's header ends."""
    return line.index(text) + len(text)


def nan_equal(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


# ---- runs ----------------------------------------------------------------------------------------


def test_runs_lists_every_run_oldest_first_with_status_steps_and_chosen_metrics(store, capsys):
    header, *rows = run_cli(capsys, "runs", "--store", store, "--keys", "train/loss", "train/*").splitlines()
    assert header.split() == ["id", "name", "status", "steps", "train/loss", "train/acc", "duration", "started"]
    assert [row.split()[0] for row in rows] == ["exp-base", "exp-wide", "solo-7"]
    base, wide, solo = rows
    assert base.split()[:7] == ["exp-base", "baseline", "finished", "4", "0.5", "0.9", "0.0s"]
    assert wide.split()[:6] == ["exp-wide", "wide", "failed", "2", "1.2", "0.0s"]
    assert solo.split()[:4] == ["solo-7", "finished", "0", "0.0s"]
    # The numbers are right-aligned under their headers, and a run without a metric leaves its cell empty.
    assert cell_end(base, " 0.5") == cell_end(header, "train/loss") == cell_end(wide, " 1.2")
    assert cell_end(base, " 0.9") == cell_end(header, "train/acc")
    assert wide[cell_end(header, "train/loss") : cell_end(header, "train/acc")].strip() == ""
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$", base)


def test_runs_by_default_show_losses_then_accuracies_and_nan(store, capsys):
    header, base, _, solo = run_cli(capsys, "runs", "--store", store).splitlines()
    assert header.split()[4:8] == ["train/loss", "val/loss", "train/acc", "loss"]
    assert base.split()[4:7] == ["0.5", "nan", "0.9"]
    assert cell_end(solo, "0.3") == cell_end(header, "  loss")


def test_runs_json_gives_identity_times_and_last_values(store, capsys):
    listed = run_cli_json(capsys, "runs", "--store", store)
    assert [(r["id"], r["name"], r["project"], r["status"], r["last_step"]) for r in listed] == [
        ("exp-base", "baseline", "digits", "finished", 4),
        ("exp-wide", "wide", "digits", "failed", 2),
        ("solo-7", None, "other", "finished", 0),
    ]
    assert listed[0]["metrics"] == {"train/loss": 0.5, "val/loss": None, "train/acc": 0.9}
    assert listed[1]["metrics"] == {"train/loss": 1.2}
    with RunStore(store) as reader:
        stored = reader.run("exp-wide")
    assert (listed[1]["start_time"], listed[1]["end_time"]) == (stored.start_time, stored.end_time)
    assert listed[1]["duration"] == pytest.approx(stored.end_time - stored.start_time)


def test_runs_of_a_project_with_store_given_before_the_command(store, capsys):
    listed = run_cli_json(capsys, "--store", store, "runs", "--project", "other")
    assert [r["id"] for r in listed] == ["solo-7"]
    assert run_cli(capsys, "--store", store, "runs", "--project", "none") == f"no runs of project 'none' in {store}\n"


def test_store_defaults_to_the_environment_variable(store, capsys, monkeypatch):
    monkeypatch.setenv("JAXTRACK_STORE", store)
    assert [r["id"] for r in run_cli_json(capsys, "runs")] == ["exp-base", "exp-wide", "solo-7"]


# ---- show ----------------------------------------------------------------------------------------


def test_show_prints_identity_config_summary_and_metric_statistics(store, capsys):
    out = run_cli(capsys, "show", "exp-base", "--store", store)
    lines = [line.split() for line in out.splitlines()]
    assert ["run", "exp-base", "(baseline)"] in lines
    assert ["project", "digits"] in lines
    assert ["status", "finished"] in lines
    assert ["last", "step", "4"] in lines
    assert ["sessions", "1"] in lines
    # config
    assert ["lr", "0.1"] in lines
    assert ["wandb/api_key", "[redacted]"] in lines
    assert "hunter2" not in out
    assert ["layers", "[64,", "64]"] in lines
    # summary: NaN and infinity as Python prints them, a histogram described
    assert ["best_loss", "0.5"] in lines
    assert ["diverged", "nan"] in lines
    assert ["peak", "inf"] in lines
    assert "final_weights  histogram of 4 values in [0, 3], mean 1.5 (64 buckets)" in out
    # metrics: kind, count, last, step, min, max
    assert ["train/loss", "scalar", "5", "0.5", "4", "0.5", "1"] in lines
    assert ["train/acc", "scalar", "5", "0.9", "4", "0.1", "0.9"] in lines
    assert ["epoch", "scalar", "5", "4", "4", "0", "4"] in lines
    assert ["val/loss", "scalar", "2", "nan", "4", "0.9", "0.9"] in lines
    assert "note        text           1  warm-up ..." in out
    assert "histogram of 100 values in [-1, 3], mean 1 (64 buckets)" in out
    assert "image 4x5x3 'digit'" in out
    assert "array(" not in out and "[[" not in out


def test_show_json_has_null_for_nan_and_describes_arrays(store, capsys):
    shown = run_cli_json(capsys, "show", "exp-base", "--store", store)
    assert (shown["id"], shown["name"], shown["status"], shown["sessions"]) == ("exp-base", "baseline", "finished", 1)
    assert shown["config"] == CONFIG
    assert shown["summary"]["best_loss"] == 0.5
    assert shown["summary"]["diverged"] is None and shown["summary"]["peak"] is None
    assert shown["summary"]["final_weights"]["type"] == "histogram"
    assert shown["summary"]["final_weights"]["num"] == 4
    metrics = shown["metrics"]
    assert metrics["train/loss"] == {"kind": "scalar", "count": 5, "last": 0.5, "last_step": 4, "min": 0.5, "max": 1.0}
    assert metrics["val/loss"] == {"kind": "scalar", "count": 2, "last": None, "last_step": 4, "min": 0.9, "max": 0.9}
    assert metrics["epoch"]["last"] == 4 and isinstance(metrics["epoch"]["last"], int)
    assert metrics["note"] == {"kind": "text", "count": 1, "last": "warm-up\nsecond line", "last_step": 0}
    weights = metrics["weights"]["last"]
    assert (weights["type"], weights["num"], weights["min"], weights["max"]) == ("histogram", 100, -1.0, 3.0)
    assert metrics["sample"]["last"] == {
        "type": "image",
        "count": 1,
        "height": 4,
        "width": 5,
        "channels": 3,
        "caption": "digit",
    }
    assert shown["system"]["jaxtrack"]


def test_show_finds_runs_by_prefix_name_and_latest(store, capsys):
    assert run_cli_json(capsys, "show", "solo", "--store", store)["id"] == "solo-7"
    assert run_cli_json(capsys, "show", "wide", "--store", store)["id"] == "exp-wide"
    assert run_cli_json(capsys, "show", "latest", "--store", store)["id"] == "solo-7"
    failed = run_cli_json(capsys, "show", "exp-wide", "--store", store)
    assert failed["status"] == "failed" and failed["config"] == {} and failed["summary"] == {}


# ---- plot ----------------------------------------------------------------------------------------


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


# ---- export --------------------------------------------------------------------------------------


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


# ---- errors --------------------------------------------------------------------------------------


@pytest.fixture
def not_a_store(tmp_path: Path) -> str:
    path = tmp_path / "notes.db"
    path.write_text("these are not the runs you are looking for\n" * 100)
    return str(path)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["runs", "--store", "{missing}"], "no run store at"),
        (["show", "exp-base", "--store", "{not_a_store}"], "is not a jaxtrack run store"),
        (["show", "exp-bsae", "--store", "{store}"], "no run 'exp-bsae' in .*; did you mean 'exp-base'\\?"),
        (["show", "exp", "--store", "{store}"], "run 'exp' is ambiguous in .*: it starts exp-base, exp-wide"),
        (
            ["plot", "exp-base", "train/los", "--store", "{store}"],
            "has no scalar key 'train/los'; did you mean 'train/loss'\\?",
        ),
        (["plot", "exp-base", "note", "--store", "{store}"], "has no scalar key 'note'"),
        (["plot", "exp-base", "--compare", "nope", "--store", "{store}"], "no run 'nope'"),
        (["export", "exp-base", "--to", "tensorboard", "--store", "{store}"], "--to tensorboard needs one directory"),
        (["export", "exp-base", "--to", "mlflow", "x", "--store", "{store}"], "unknown export target 'mlflow'"),
        (["export", "exp-base", "--to", "wandb", "x", "--store", "{store}"], "--to wandb takes no directory"),
    ],
)
def test_errors_are_one_line_with_status_1(argv, message, store, not_a_store, tmp_path, capsys):
    paths = {"store": store, "not_a_store": not_a_store, "missing": str(tmp_path / "missing.db")}
    assert main([arg.format(**paths) for arg in argv]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.splitlines()
    assert line.startswith("jaxtrack: error: ")
    assert re.search(message, line), line
    assert "Traceback" not in captured.err


def test_error_when_the_plot_file_cannot_be_written(store, capsys, tmp_path):
    assert main(["plot", "exp-base", "-o", str(tmp_path / "no-such-dir" / "x.png"), "--store", store]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("jaxtrack: error: ") and "no-such-dir" in line


@pytest.mark.parametrize(
    ("module", "argv", "extra"),
    [
        ("matplotlib", ["plot", "exp-base"], "jaxtrack[plot]"),
        ("wandb", ["export", "exp-base", "--to", "wandb"], "jaxtrack[wandb]"),
    ],
)
def test_missing_optional_package_names_its_extra(module, argv, extra, store, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, module, None)  # as if it were not installed
    assert main([*argv, "--store", store]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("jaxtrack: error: ") and f"pip install '{extra}'" in line


def test_wandb_mode_from_the_environment_must_write_a_run(store, capsys, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert main(["export", "exp-base", "--to", "wandb", "--store", store]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert (
        line == "jaxtrack: error: WANDB_MODE is 'disabled', which writes no run: pass --mode online or --mode offline"
    )


@pytest.mark.parametrize(
    "argv",
    [[], ["show"], ["frobnicate"], ["export", "exp-base"], ["export", "exp-base", "--to", "wandb", "--mode", "cloud"]],
)
def test_usage_errors_exit_with_status_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "usage: jaxtrack" in capsys.readouterr().err


# ---- the installed entry points ------------------------------------------------------------------


def test_python_dash_m_and_console_script_run_the_command_line(store):
    module = subprocess.run(
        [sys.executable, "-m", "jaxtrack", "runs", "--store", store, "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert module.returncode == 0, module.stderr
    assert [run["id"] for run in json.loads(module.stdout)] == ["exp-base", "exp-wide", "solo-7"]

    script = shutil.which("jaxtrack", path=os.path.dirname(sys.executable))
    if script is None:
        pytest.skip("the jaxtrack console script is not installed next to this Python")
    failed = subprocess.run([script, "show", "nope", "--store", store], capture_output=True, text=True, timeout=120)
    assert failed.returncode == 1
    assert failed.stdout == ""
    (line,) = failed.stderr.splitlines()
    assert line.startswith("jaxtrack: error: no run 'nope'")


def test_importing_the_command_line_loads_no_backend_package():
    script = (
        "import sys, jaxtrack.cli\n"
        "print(sorted(m for m in ('matplotlib', 'tensorboard', 'wandb', 'PIL') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
