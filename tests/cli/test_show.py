"""``jaxtrack show RUN``: a run's identity, config, summary and metric statistics, as text and as JSON."""

from __future__ import annotations

from support.cli import CONFIG, run_cli, run_cli_json


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
