"""Notebook 2: a CLU / Flax-examples loop ported to jaxtrack, first behind ``as_metric_writer``, then in full.

The notebook runs once, top to bottom in a fresh kernel, with a temporary
directory as its working directory. Its two runs are then read back for real:
the local store with ``RunStore``, the TensorBoard event files with
TensorBoard's ``EventAccumulator``; the CLU ``LoggingWriter`` behind
``from_metric_writer`` through the lines it logged.
"""

from __future__ import annotations

import importlib.util
import pathlib
import re

import numpy as np
import pytest

from jaxtrack.store import RunStore
from support.backends import tb_accumulator, tb_series
from support.notebooks import EXAMPLES, execute, image_outputs, text_outputs

NOTEBOOK = EXAMPLES / "02_porting_from_clu.ipynb"
NUM_STEPS = 300
TRAIN_STEPS = list(range(25, NUM_STEPS + 1, 25))  # config.log_every_steps
EVAL_STEPS = list(range(50, NUM_STEPS + 1, 50))  # config.eval_every_steps
PROGRESS_STEPS = list(range(50, NUM_STEPS + 1, 50))  # CLU's ReportProgress(every_steps=50)
CONFIG = {
    "learning_rate": 0.003,
    "batch_size": 64,
    "num_train_steps": NUM_STEPS,
    "log_every_steps": 25,
    "eval_every_steps": 50,
    "seed": 0,
}
METRICS = ["train/loss", "train/accuracy", "eval/loss", "eval/accuracy"]


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """The notebook run in a fresh directory: ``(executed notebook, that directory)``."""
    cwd = tmp_path_factory.mktemp("porting_from_clu")
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.delenv("JAXTRACK_STORE", raising=False)
        notebook = execute(NOTEBOOK.name, cwd)
    return notebook, cwd


@pytest.fixture(scope="module")
def runs(executed):
    """The two runs in the local store, by name: the CLU loop (step 1) and the jaxtrack loop (step 2)."""
    _, cwd = executed
    with RunStore(cwd / "runs" / "jaxtrack.db") as store:
        found = {run.name: run for run in store.runs()}
        assert sorted(found) == ["clu-loop", "jaxtrack-loop"]
        yield {
            name: {
                "run": run,
                "keys": set(store.keys(run.id)),
                "series": {key: store.scalars(run.id, key) for key in store.keys(run.id)},
            }
            for name, run in found.items()
        }


def test_both_runs_finished_with_the_config_and_the_same_metrics_at_the_same_steps(runs):
    for name, recorded in runs.items():
        run = recorded["run"]
        assert (run.status, run.project, run.last_step) == ("finished", "porting-from-clu", NUM_STEPS), name
        assert run.config == CONFIG, name  # write_hparams(config.to_dict()) / log_configuration(config)
        assert set(METRICS) <= recorded["keys"], name
        for key in METRICS:
            steps, _ = recorded["series"][key]
            assert steps.tolist() == (TRAIN_STEPS if key.startswith("train/") else EVAL_STEPS), (name, key)

    # Timing, each loop its own way: CLU's ReportProgress through the writer, jaxtrack's ReportMetrics.
    clu, ours = runs["clu-loop"]["series"], runs["jaxtrack-loop"]["series"]
    for key in ("steps_per_sec", "uptime"):
        assert clu[key][0].tolist() == PROGRESS_STEPS, key
    assert ours["train/steps_per_sec"][0].tolist() == TRAIN_STEPS
    assert np.all(ours["train/steps_per_sec"][1] > 0)
    assert "train/steps_per_sec" not in clu and "uptime" not in ours


def test_the_model_learns(runs):
    for name, recorded in runs.items():
        series = recorded["series"]
        train_loss = series["train/loss"][1]
        assert train_loss[-1] < 0.25 * train_loss[0], name
        assert series["eval/loss"][1][-1] < series["eval/loss"][1][0], name
        assert series["train/accuracy"][1][-1] > 0.9, name
        assert series["eval/accuracy"][1][-1] > 0.9, name


def test_what_the_clu_writer_wrote_equals_what_jaxtrack_reported(runs):
    # Same batches from the same initial parameters: CLU's merged collection and jit_log's interval mean agree.
    clu, ours = runs["clu-loop"]["series"], runs["jaxtrack-loop"]["series"]
    for key in METRICS:
        np.testing.assert_array_equal(clu[key][0], ours[key][0], err_msg=key)
        np.testing.assert_allclose(clu[key][1], ours[key][1], rtol=1e-5, err_msg=key)


def test_both_runs_are_in_tensorboard_as_in_the_store(executed, runs):
    _, cwd = executed
    for name, recorded in runs.items():
        events = tb_accumulator(cwd / "runs" / "tensorboard" / recorded["run"].id)
        assert set(METRICS) <= set(events.Tags()["tensors"]), name
        assert "_hparams_/session_start_info" in events.Tags()["tensors"], name
        for key in METRICS:
            steps, values = recorded["series"][key]
            tb = tb_series(events, key)
            assert [step for step, _ in tb] == steps.tolist(), (name, key)
            # TensorBoard stores scalars as float32.
            np.testing.assert_allclose([value for _, value in tb], values, rtol=1e-6, err_msg=f"{name} {key}")


def test_the_notebook_shows_its_results_and_no_errors_or_warnings(executed, runs):
    notebook, _ = executed
    outputs = list(text_outputs(notebook))
    stdout = "".join(text for _, kind, text in outputs if kind == "stdout")
    stderr = "".join(text for _, kind, text in outputs if kind == "stderr")
    assert len(image_outputs(notebook)) >= 1  # the comparison plot

    if importlib.util.find_spec("tensorflow") is None:
        assert "from clu import metric_writers -> ModuleNotFoundError: No module named 'tensorflow'" in stdout
    # The comparison table: every metric at the same steps in both runs.
    for key in METRICS:
        (row,) = [line for line in stdout.splitlines() if line.startswith(f"{key} ")]
        assert " True " in row, row
    clu_id, our_id = runs["clu-loop"]["run"].id, runs["jaxtrack-loop"]["run"].id
    assert f"jaxtrack plot {clu_id} 'train/*' 'eval/*' --compare {our_id}" in stdout

    # from_metric_writer: the CLU LoggingWriter got the hyperparameters and the final evaluation, through absl.
    final_accuracy = runs["jaxtrack-loop"]["series"]["eval/accuracy"][1][-1]
    assert "[Hyperparameters] {'learning_rate': 0.003, 'batch_size': 64}" in stderr
    assert f"[{NUM_STEPS}] eval/accuracy={final_accuracy:.6g}, eval/loss=" in stderr
    # Those absl INFO lines are all that goes to stderr: no warning, no traceback.
    for line in stderr.splitlines():
        assert re.match(r"INFO:absl:|I\d{4} ", line), line
    assert "Traceback" not in stdout and "Warning" not in stdout


def test_the_notebook_writes_only_under_its_working_directory(executed):
    _, cwd = executed
    written = {path.relative_to(cwd).parts[0] for path in pathlib.Path(cwd).iterdir()}
    assert written == {"runs"}
