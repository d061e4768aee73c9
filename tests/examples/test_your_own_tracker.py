"""Notebook 5: a JSON-lines tracker written in the notebook, registered as ``type: jsonl``, used next to the local store.

The notebook runs in a fresh kernel with a temporary directory as its working
directory. Its ``metrics.jsonl`` files are then read back with the ``json``
module and compared with the same run in the local store, read with ``RunStore``.
"""

from __future__ import annotations

import json
import os
import pathlib
import re

import pytest
import yaml

from jaxtrack.store import RunStore
from support.notebooks import EXAMPLES, execute, image_outputs, text_outputs

NOTEBOOK = EXAMPLES / "05_your_own_tracker.ipynb"
CONFIG = {"steps": 200, "batch_size": 64, "hidden": 64, "learning_rate": 0.003, "log_every": 25}
TRAIN_STEPS = list(range(25, 201, 25))
EVAL_STEPS = [50, 100, 150, 200]


def read_jsonl(path: pathlib.Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """The notebook run once, in a fresh directory: ``(working directory, executed notebook)``."""
    cwd = tmp_path_factory.mktemp("notebook5")
    saved = os.environ.pop("JAXTRACK_STORE", None)
    try:
        notebook = execute(NOTEBOOK.name, cwd)
    finally:
        if saved is not None:
            os.environ["JAXTRACK_STORE"] = saved
    return cwd, notebook


@pytest.fixture(scope="module")
def outputs(executed):
    _, notebook = executed
    return list(text_outputs(notebook))


def printed(outputs, kind: str = "stdout") -> str:
    return "".join(text for _, k, text in outputs if k == kind)


def test_every_report_is_in_the_jsonl_file_as_the_local_store_has_it(executed):
    cwd, _ = executed
    with RunStore(cwd / "runs" / "jaxtrack.db") as store:
        (run,) = store.runs(project="your-own-tracker")
        history = {row.pop("step"): row for row in store.history(run.id)}
        (artifact,) = store.artifacts(run.id)
    assert run.status == "finished"
    assert run.config == CONFIG

    records = read_jsonl(cwd / "runs" / "jsonl" / run.id / "metrics.jsonl")
    logs = [r for r in records if r["type"] == "log"]
    train = {r["step"]: r["values"] for r in logs if "train/loss" in r["values"]}
    evals = {r["step"]: r["values"] for r in logs if "eval/loss" in r["values"]}
    assert sorted(train) == TRAIN_STEPS
    assert sorted(evals) == EVAL_STEPS
    for step, values in train.items():
        assert set(values) == {"train/loss", "train/accuracy", "train/grad_norm"}
        for key, value in values.items():
            assert value == history[step][key], (step, key)  # exactly the stored value
    for step, values in evals.items():
        assert values == {key: history[step][key] for key in ("eval/loss", "eval/accuracy")}
    assert train[200]["train/loss"] < train[25]["train/loss"] / 3  # it learns
    assert evals[200]["eval/accuracy"] > 0.85

    # The array logged at the last step: a histogram of every weight, as the store's.
    (weights,) = [r["values"]["weights/w1"]["histogram"] for r in logs if "weights/w1" in r["values"]]
    stored = history[200]["weights/w1"]
    assert weights["num"] == stored.num == 64 * 64
    assert sum(weights["bucket_counts"]) == 64 * 64
    assert weights["bucket_counts"] == stored.bucket_counts.tolist()
    assert weights["mean"] == pytest.approx(stored.mean)

    # Hyperparameters, the config artifact (a copy beside the file), the summary, the status.
    (hparams,) = [r["values"] for r in records if r["type"] == "hyperparameters"]
    assert hparams == CONFIG
    (copied,) = [r for r in records if r["type"] == "artifact"]
    assert (copied["name"], copied["artifact_type"]) == ("config", "config")
    assert yaml.safe_load((cwd / "runs" / "jsonl" / run.id / copied["path"]).read_text()) == CONFIG
    assert artifact["name"] == "config"
    (summary,) = [r["values"] for r in records if r["type"] == "summary"]
    assert summary == run.summary
    assert summary["eval/final_accuracy"] == evals[200]["eval/accuracy"]

    # The run was finished, then resumed once: the resumed log continues after step 200.
    finishes = [i for i, r in enumerate(records) if r["type"] == "finish"]
    assert [records[i]["status"] for i in finishes] == ["finished", "finished"]
    assert finishes[-1] == len(records) - 1
    resumed = records[finishes[0] + 1 : finishes[1]]
    assert [(r["type"], r["step"], r["values"]) for r in resumed] == [("log", 201, {"note": "resumed"})]
    assert history[201] == {"note": "resumed"}
    assert all(r["type"] == "log" or "step" not in r for r in records)


def test_the_tracker_is_called_in_order_on_its_own_thread_with_flat_host_values_and_int_steps(executed, outputs):
    cwd, _ = executed
    text = printed(outputs)
    # Flat keys, the JAX scalar a Python float, the None value left out; every step an int, resolved by jaxtrack.
    assert "[jaxtrack-jsonl] log({'train/loss': 0.25, 'lr': 0.001}, step=10)" in text
    assert "[jaxtrack-jsonl] log({'note': 'no step given'}, step=11)" in text
    # A call made on the tracker itself takes the same front door: queued behind jt.log's, on the same thread.
    assert "[jaxtrack-jsonl] log({'note': 'called directly'}, step=12)" in text
    assert set(re.findall(r"^\[([^\]]+)\] log\(", text, re.MULTILINE)) == {"jaxtrack-jsonl"}
    # tracker.flush() returned once all four calls were written.
    assert "[MainThread] after flush: 4 records in metrics.jsonl" in text
    demo = read_jsonl(cwd / "runs" / "jsonl-demo" / "demo" / "metrics.jsonl")
    assert [(r["type"], r.get("step"), r["values"] if "values" in r else r["status"]) for r in demo] == [
        ("log", 10, {"train/loss": 0.25, "lr": 0.001}),
        ("log", 11, {"note": "no step given"}),
        ("log", 12, {"note": "called directly"}),
        ("summary", None, {"best_loss": 0.25}),
        ("finish", None, "finished"),
    ]
    # Once `with tracker:` has finished the run, the front door refuses calls.
    assert (
        "FinishedTrackerError: ShowCalls(name='jsonl') is finished: log was not recorded; "
        "start a new tracker (or resume the run by its id) to log more" in text
    )


def test_validate_refuses_an_image_at_the_call_before_anything_is_queued(executed, outputs):
    cwd, _ = executed
    assert (
        "TypeError: metric 'samples': the jsonl tracker does not record images; log them to another backend"
        in printed(outputs)
    )
    refused = read_jsonl(cwd / "runs" / "jsonl-demo" / "refused" / "metrics.jsonl")
    assert [r["type"] for r in refused] == ["finish"]  # not even the valid "loss" of that call


def test_config_errors_name_the_field_the_value_and_the_type(outputs):
    text = printed(outputs)
    assert (
        "unknown field 'directroy' for tracker type 'jsonl' (did you mean 'directory'?); "
        "valid fields: directory, max_pending" in text
    )
    assert "TrackerConfigError: jsonl.max_pending must be an integer, got 'lots' (str)" in text
    assert "TrackerConfigError: unknown tracker type 'jsnol' (did you mean 'jsonl'?)" in text
    assert "[JsonlConfig(directory='runs/jsonl', max_pending=10000), LocalConfig(path='runs/jaxtrack.db'" in text


def test_a_failing_tracker_is_reported_once_counted_and_the_other_backend_gets_everything(executed, outputs):
    cwd, _ = executed
    errors, text = printed(outputs, "stderr"), printed(outputs)
    # Once per tracker instance (the lenient run, then the strict one), not once per failed call.
    assert errors.count("jaxtrack: tracker 'jsonl-disk-full' failed in log at step 0; training goes on") == 2
    assert "not everything logged reached every backend: jsonl-disk-full.log failed x5" in errors
    assert "the local store still got steps [0, 1, 2, 3, 4]" in text
    with RunStore(cwd / "runs" / "jaxtrack.db") as store:
        (other,) = [run for run in store.runs() if run.project is None]
        assert [row["step"] for row in store.history(other.id)] == [0, 1, 2, 3, 4]
    assert "BackendError: tracker 'jsonl-disk-full' failed in log at step 0 (strict mode): OSError: [Errno 28]" in text
    assert "backend='jsonl-disk-full', method='log', step=0, cause=OSError(28, 'No space left on device')" in text
    # The only warnings are the two that report the lost calls.
    warnings = [text for _, kind, text in outputs if kind == "stderr" and "Warning" in text]
    assert len(warnings) == 2 and all("jsonl-disk-full.log failed" in text for text in warnings)


def test_the_entry_point_is_found_and_a_broken_one_names_its_package(outputs):
    text = printed(outputs)
    assert "'jsonl-broken', 'jsonl-packaged'" in text
    assert "PackagedJsonlConfig(directory='runs/jsonl', max_pending=10000)" in text
    assert (
        "tracker type 'jsonl-broken' comes from the entry point 'jaxtrack_jsonl_missing.tracker:JsonlConfig' "
        "(package jaxtrack-jsonl), which failed to load: ModuleNotFoundError" in text
    )


def test_the_loss_is_plotted_from_the_file(executed):
    _, notebook = executed
    (plot,) = image_outputs(notebook)
    assert plot.startswith(b"\x89PNG") and len(plot) > 10_000
