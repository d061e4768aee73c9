"""The README's main job: the digits example trains with the default trackers and says how to look at the run."""

from __future__ import annotations

import importlib.util
import pathlib

import numpy as np
from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator
from tensorboard.util import tensor_util

from jaxtrack.trackers.local import RunStore

EXAMPLE = pathlib.Path(__file__).parents[2] / "examples" / "train_digits.py"


def _load_example():
    spec = importlib.util.spec_from_file_location("train_digits", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_trains_into_the_local_store_and_tensorboard(tmp_path, capsys):
    example = _load_example()
    run_id = example.main(["--steps", "120", "--log-every", "20", "--logdir", str(tmp_path)])
    run_dir = str(tmp_path / "tensorboard" / run_id)
    out = capsys.readouterr().out
    store = tmp_path / "jaxtrack.db"
    assert f"show {run_id} --store {store}" in out
    assert f"plot {run_id} 'train/*' 'eval/*' --store {store}" in out
    assert f"tensorboard --logdir {tmp_path}/tensorboard" in out

    with RunStore(store) as runs:
        run = runs.run(run_id)
        assert (run.status, run.name, run.project, run.last_step) == ("finished", "digits-mlp", "examples", 120)
        assert run.config["steps"] == 120
        history = runs.history(run_id, keys=["train/loss"])
        assert [row["step"] for row in history] == [20, 40, 60, 80, 100, 120]
        assert history[-1]["train/loss"] < history[0]["train/loss"]
        assert run.summary["eval/final_accuracy"] > 0.8

    events = EventAccumulator(run_dir, size_guidance={"tensors": 0})
    events.Reload()
    tags = set(events.Tags()["tensors"])
    assert {"train/loss", "train/accuracy", "eval/accuracy", "weights/hidden", "samples"} <= tags
    assert "_hparams_/session_start_info" in tags
    loss = [(e.step, tensor_util.make_ndarray(e.tensor_proto).item()) for e in events.Tensors("train/loss")]
    assert [step for step, _ in loss] == [20, 40, 60, 80, 100, 120]
    assert loss[-1][1] < loss[0][1]  # it learns
    final = tensor_util.make_ndarray(events.Tensors("eval/final_accuracy")[0].tensor_proto).item()
    assert final > 0.8
    assert np.isfinite(final)
