"""The JSON lines tracker (``type: json_logger``): every value kind read back with ``json`` and pandas, a kill, a logger."""

from __future__ import annotations

import json
import logging
import math
import os
import signal

import numpy as np
import pandas as pd
import pytest

import jaxtrack as jt
from jaxtrack.trackers.jsonl import JsonLinesConfig, JsonLinesTracker
from support.disk import fill, free, small_disk
from support.store import start_jsonl_writer


def read_lines(path) -> list[dict]:
    """Each line of the file parsed on its own, with a parser that takes only standard JSON (no bare NaN)."""

    def reject(constant: str) -> None:
        raise AssertionError(f"{constant} is not JSON")

    with open(path, encoding="utf-8") as file:
        return [json.loads(line, parse_constant=reject) for line in file]


def write_every_kind(path) -> None:
    with JsonLinesTracker(path) as tracker:
        tracker.log_hyperparameters({"opt": {"lr": 0.001}, "layers": [64, 64], "name": "baseline"})
        tracker.log(
            {
                "loss": 0.25,
                "tokens": 2**53 + 1,  # not exact as a float64: must stay an integer
                "ok": True,
                "nan": math.nan,
                "up": math.inf,
                "down": -math.inf,
                "note": 'héllo\n"quoted"',
                "weights": np.array([0.0, 1.0, 1.0, 3.0]),
                "sample": jt.Image(np.full((4, 5, 3), 200, np.uint8), caption="digit"),
                "train": {"acc": np.float32(0.5)},
            },
            step=7,
        )
        tracker.log({"loss": 0.125}, step=8)
        tracker.log_summary({"best": 0.125, "diverged": math.nan})
        (path.parent / "notes.txt").write_text("what this run tried")
        tracker.log_artifact(path.parent / "notes.txt", name="notes", type="text")


def test_every_value_kind_is_standard_json_line_by_line(tmp_path):
    path = tmp_path / "run.jsonl"
    write_every_kind(path)
    records = read_lines(path)
    assert [record["type"] for record in records] == ["hyperparameters", "log", "log", "summary", "artifact", "finish"]
    hparams, first, second, summary, artifact, finish = records
    assert hparams["hyperparameters"] == {"opt/lr": 0.001, "layers": [64, 64], "name": "baseline"}
    assert first["step"] == 7 and isinstance(first["time"], float)
    assert first["loss"] == 0.25 and first["train/acc"] == 0.5
    assert first["tokens"] == 2**53 + 1 and isinstance(first["tokens"], int)
    assert first["ok"] is True
    assert (first["nan"], first["up"], first["down"]) == ("NaN", "Infinity", "-Infinity")
    assert math.isnan(float(first["nan"])) and float(first["up"]) == math.inf and float(first["down"]) == -math.inf
    assert first["note"] == 'héllo\n"quoted"'
    weights = first["weights"]  # a histogram as Levanter writes one: its statistics and buckets
    assert set(weights) == {"min", "max", "num", "sum", "sum_squares", "bucket_limits", "bucket_counts"}
    assert (weights["min"], weights["max"], weights["num"], weights["sum"]) == (0.0, 3.0, 4, 5.0)
    assert sum(weights["bucket_counts"]) == 4 and len(weights["bucket_limits"]) == len(weights["bucket_counts"]) + 1
    assert first["sample"] == {"image": {"shape": [1, 4, 5, 3], "caption": "digit"}}  # described, no pixels
    assert second["step"] == 8 and second["loss"] == 0.125
    assert summary["summary"] == {"best": 0.125, "diverged": "NaN"}
    assert artifact["name"] == "notes" and artifact["artifact_type"] == "text"
    assert artifact["path"] == str(tmp_path / "notes.txt")
    assert finish["status"] == "finished"


def test_pandas_reads_the_file_one_row_a_record_one_column_a_metric(tmp_path):
    path = tmp_path / "run.jsonl"
    write_every_kind(path)
    frame = pd.read_json(path, lines=True)
    logs = frame[frame["type"] == "log"].set_index("step")
    assert logs.index.tolist() == [7, 8]
    assert logs["loss"].tolist() == [0.25, 0.125]
    assert logs.loc[7, "tokens"] == 2**53 + 1
    assert logs.loc[7, "note"] == 'héllo\n"quoted"'
    assert bool(logs.loc[7, "ok"]) is True
    assert pd.to_numeric(logs["up"]).loc[7] == math.inf  # the strings of non-finite numbers convert back
    assert math.isnan(pd.to_numeric(logs["nan"]).loc[7])
    assert logs.loc[7, "weights"]["num"] == 4
    assert frame[frame["type"] == "finish"]["status"].tolist() == ["finished"]


def test_a_failed_run_ends_with_its_status(tmp_path):
    path = tmp_path / "run.jsonl"
    with pytest.raises(RuntimeError), JsonLinesTracker(path) as tracker:
        tracker.log({"loss": 1.0}, step=0)
        raise RuntimeError("boom")
    last = read_lines(path)[-1]
    assert (last["type"], last["status"]) == ("finish", "failed")


def test_a_resumed_file_is_appended_to(tmp_path):
    path = tmp_path / "run.jsonl"
    for step in (0, 1):
        with JsonLinesTracker(path) as tracker:
            tracker.log({"loss": float(step)}, step=step)
    assert [(record["type"], record.get("step")) for record in read_lines(path)] == [
        ("log", 0),
        ("finish", None),
        ("log", 1),
        ("finish", None),
    ]


def test_sigkill_mid_run_leaves_only_whole_lines(tmp_path):
    path = tmp_path / "run.jsonl"
    writer = start_jsonl_writer(path, ready_step=50, cwd=tmp_path)
    try:
        assert writer.stdout is not None
        assert writer.stdout.readline() == "ready\n", f"the writer exited early (exit {writer.poll()})"
        os.killpg(writer.pid, signal.SIGKILL)  # while it goes on logging 64 KiB lines without waiting
        assert writer.wait(timeout=60) == -signal.SIGKILL
    finally:
        if writer.poll() is None:
            os.killpg(writer.pid, signal.SIGKILL)
            writer.wait()
    # One write a line puts each in the file whole, but Linux may stop a long write for SIGKILL part-way:
    # then the torn tail is the last line only, and the next tracker on the file cuts it off.
    data = path.read_bytes()
    if not data.endswith(b"\n"):
        with pytest.warns(jt.DataLossWarning, match="cut short"):
            JsonLinesTracker(path).finish()
        path.write_bytes(path.read_bytes().rsplit(b"\n", 2)[0] + b"\n")  # without that finish record
    assert path.read_bytes().endswith(b"\n")
    records = read_lines(path)  # every line parses
    assert len(records) > 50
    assert [record["step"] for record in records] == list(range(len(records)))
    assert all(record["i"] == record["step"] and len(record["text"]) == 64 * 1024 for record in records)
    assert len(pd.read_json(path, lines=True)) == len(records)


def test_a_full_disk_fails_reports_but_leaves_only_whole_lines(tmp_path):
    with small_disk(tmp_path, size="1m") as disk:
        path = disk / "run.jsonl"
        tracker = JsonLinesTracker(path)
        tracker.log({"i": 0}, step=0)
        tracker.flush()
        fill(disk)
        free(disk, 6000)  # room for part of the next line only
        with pytest.warns(jt.DataLossWarning):
            for step in range(1, 4):
                tracker.log({"i": step, "text": "x" * 5000}, step=step)
            tracker.finish()
        data = path.read_bytes()
        assert tracker._fd is None  # closed although its finish record did not fit
    assert data.endswith(b"\n")
    records = [json.loads(line) for line in data.decode().splitlines()]
    assert [(record["type"], record.get("i")) for record in records][:2] == [("log", 0), ("log", 1)]
    assert all(record["type"] != "log" or record["i"] in (0, 1) for record in records)


def test_a_torn_last_line_is_cut_off_when_the_file_is_opened_again(tmp_path):
    path = tmp_path / "run.jsonl"
    path.write_bytes(b'{"type": "log", "step": 0}\n{"type": "log", "st')  # a kill mid-write left half a line
    with pytest.warns(jt.DataLossWarning, match="19 bytes of a line cut short"):
        tracker = JsonLinesTracker(path)
    tracker.log({"loss": 1.0}, step=1)
    tracker.finish()
    assert [(record["type"], record.get("step")) for record in read_lines(path)] == [
        ("log", 0),
        ("log", 1),
        ("finish", None),
    ]
    path.write_bytes(b'{"type": "l')  # a first line torn: nothing is left of it
    with pytest.warns(jt.DataLossWarning):
        JsonLinesTracker(path).finish()
    assert [record["type"] for record in read_lines(path)] == ["finish"]


def test_config_from_yaml_and_dict_through_init_tracker(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tracker = jt.init_tracker("type: json_logger\npath: logs/run.jsonl\n")
    try:
        assert isinstance(tracker, JsonLinesTracker) and tracker.name == "json_logger"
        assert tracker.path == str(tmp_path / "logs" / "run.jsonl")  # absolute at start
        os.chdir(tmp_path.parent)  # a later chdir (Hydra makes one) does not move the file
        jt.log({"loss": 0.5}, step=3)
    finally:
        jt.finish()
    assert [record["type"] for record in read_lines(tmp_path / "logs" / "run.jsonl")] == ["log", "finish"]
    config = jt.TrackerConfig.parse({"type": "json_logger", "path": "x.jsonl", "histogram_bins": 8})
    assert config == JsonLinesConfig(path="x.jsonl", histogram_bins=8)
    assert config.to_dict()["type"] == "json_logger"


def test_logger_mode_logs_one_json_object_a_report(caplog):
    caplog.set_level(logging.DEBUG, logger="test.jsonl")
    tracker = jt.TrackerConfig.parse({"type": "json_logger", "logger": "test.jsonl", "level": "DEBUG"}).init(None)
    tracker.log({"loss": 0.5, "nan": math.nan}, step=1)
    tracker.log_summary({"best": 0.5})
    tracker.finish()
    records = [record for record in caplog.records if record.name == "test.jsonl"]
    assert all(record.levelno == logging.DEBUG for record in records)
    lines = [json.loads(record.getMessage()) for record in records]
    assert [line["type"] for line in lines] == ["log", "summary", "finish"]
    assert lines[0]["loss"] == 0.5 and lines[0]["nan"] == "NaN" and lines[0]["step"] == 1


def test_default_is_the_json_logger_logger(caplog):
    caplog.set_level(logging.INFO, logger="jaxtrack.json_logger")
    tracker = JsonLinesTracker()
    tracker.log({"loss": 0.5}, step=0)
    tracker.finish()
    assert [json.loads(r.getMessage())["type"] for r in caplog.records if r.name == "jaxtrack.json_logger"] == [
        "log",
        "finish",
    ]


@pytest.mark.parametrize("key", ["step", "time", "type"])
def test_a_metric_named_as_a_record_key_is_refused_at_the_call(tmp_path, key):
    tracker = JsonLinesTracker(tmp_path / "run.jsonl")
    try:
        with pytest.raises(ValueError, match=f"'{key}' is reserved by json_logger"):
            tracker.log({key: 1.0}, step=0)
    finally:
        tracker.finish()


def test_path_and_logger_together_are_refused(tmp_path):
    with pytest.raises(ValueError, match="a file \\(path\\) or a logger, not both"):
        JsonLinesTracker(tmp_path / "run.jsonl", logger="x")


def test_only_process_zero_writes_unless_all_processes(tmp_path, monkeypatch):
    from jaxtrack import multihost

    monkeypatch.setattr(multihost, "process_index", lambda: 1)
    JsonLinesTracker(tmp_path / "run.jsonl").finish()
    assert not (tmp_path / "run.jsonl").exists()
    everyone = JsonLinesTracker(tmp_path / "run.jsonl", all_processes=True)
    everyone.log({"loss": 1.0}, step=0)
    everyone.finish()
    assert [record["type"] for record in read_lines(tmp_path / "run-process1.jsonl")] == ["log", "finish"]
