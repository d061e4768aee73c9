"""The README's main job: the digits example trains and leaves a TensorBoard run behind."""

from __future__ import annotations

import importlib.util
import pathlib

import numpy as np
from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator
from tensorboard.util import tensor_util

EXAMPLE = pathlib.Path(__file__).parents[2] / "examples" / "train_digits.py"


def _load_example():
    spec = importlib.util.spec_from_file_location("train_digits", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_trains_and_writes_a_tensorboard_run(tmp_path, capsys):
    example = _load_example()
    run_dir = example.main(["--steps", "120", "--log-every", "20", "--logdir", str(tmp_path)])
    assert pathlib.Path(run_dir).parent == tmp_path / "tensorboard"
    out = capsys.readouterr().out
    assert run_dir in out and f"tensorboard --logdir {tmp_path}/tensorboard" in out

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
