"""Notebook 4: data-parallel training over 8 simulated devices, global metrics, in-graph gradient histograms.

The notebook runs top to bottom in a fresh kernel with a temporary directory as
its working directory; what it recorded is read back from the local store with
``RunStore``: the global loss and accuracy at every report, and the gradient
histograms whose bucket counts add up to every gradient element of every step
of the interval. A second run starts JAX with the wrong number of devices and
checks that the notebook stops with its friendly explanation.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from nbclient.exceptions import CellExecutionError

from jaxtrack.store import RunStore
from support.notebooks import execute, image_outputs, text_outputs

NOTEBOOK = "04_data_parallel.ipynb"
REPORT_EVERY = 25
TRAIN_STEPS = list(range(REPORT_EVERY, 201, REPORT_EVERY))
EVAL_STEPS = [50, 100, 150, 200]
# Every gradient leaf of the 64 -> 128 -> 10 MLP, and its number of elements.
GRADIENT_SIZES = {"layer0/w": 64 * 128, "layer0/b": 128, "layer1/w": 128 * 10, "layer1/b": 10}
NUM_BINS, LOW, HIGH = 32, -0.04, 0.04


@pytest.fixture
def cpu_kernel_env(monkeypatch):
    """The kernel inherits this environment: CPU devices only, no store chosen elsewhere."""
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.delenv("JAX_NUM_CPU_DEVICES", raising=False)
    monkeypatch.delenv("JAXTRACK_STORE", raising=False)
    return monkeypatch


def _output(outputs: list[str], pattern: str) -> re.Match[str]:
    for text in outputs:
        match = re.search(pattern, text, re.MULTILINE)
        if match:
            return match
    raise AssertionError(f"no output matches {pattern!r}:\n" + "\n".join(outputs))


def test_notebook_trains_over_8_devices_and_records_global_metrics_and_gradient_histograms(tmp_path, cpu_kernel_env):
    notebook = execute(NOTEBOOK, tmp_path)
    outputs = [text for _, kind, text in text_outputs(notebook) if kind != "stderr"]

    # Nothing went to stderr: no traceback, no warning, no log line a reader would take for one.
    stderr = [text for _, kind, text in text_outputs(notebook) if kind == "stderr"]
    assert stderr == []
    assert not [o for cell in notebook.cells for o in cell.get("outputs", []) if o.output_type == "error"]

    # It ran on 8 devices, with each batch of 128 split 16 per device.
    devices = _output(outputs, r"^(\d+) devices: \[(.*)\]$")
    assert devices.group(1) == "8"
    assert devices.group(2).count("CpuDevice") == 8
    assert "shard shapes: " + str([(16, 64)] * 8) in "\n".join(outputs)
    assert "P('data',)" in _output(outputs, r"^NamedSharding\(.*\)$").group(0)

    # The explicit check: the reported loss is the whole batch's, not device 0's.
    reported = float(_output(outputs, r"^jit_log's loss: +([\d.]+)$").group(1))
    whole = float(_output(outputs, r"^NumPy over all 128 examples: +([\d.]+)$").group(1))
    device_0 = float(_output(outputs, r"^NumPy over device 0's 16: +([\d.]+)$").group(1))
    assert reported == pytest.approx(whole, rel=1e-4)
    assert abs(device_0 - whole) > 1e-3  # one device's share differs: the check can tell them apart

    run_id = _output(outputs, r"^run (\S+) is in runs/jaxtrack\.db$").group(1)
    with RunStore(tmp_path / "runs" / "jaxtrack.db") as store:
        [run] = store.runs()
        assert (run.id, run.name, run.status, run.last_step) == (run_id, "digits-data-parallel", "finished", 200)
        assert run.config == {"batch_size": 128, "devices": 8, "steps": 200}
        kinds = store.keys(run_id)

        # Global loss and accuracy at every report; it learns.
        steps, loss = store.scalars(run_id, "train/loss")
        assert steps.tolist() == TRAIN_STEPS
        assert np.all(np.isfinite(loss)) and loss[-1] < loss[0] / 5
        assert np.all(np.diff(loss) < 0)  # interval means of a steadily learning MLP
        steps, accuracy = store.scalars(run_id, "train/accuracy")
        assert steps.tolist() == TRAIN_STEPS
        assert np.all((accuracy >= 0) & (accuracy <= 1)) and accuracy[-1] > 0.9
        steps, eval_accuracy = store.scalars(run_id, "eval/accuracy")
        assert steps.tolist() == EVAL_STEPS
        assert eval_accuracy[-1] > 0.9
        assert store.scalars(run_id, "train/grad_norm")[0].tolist() == TRAIN_STEPS

        # reduce="stats" on the ReLU activations.
        for stat in ("mean", "std", "min", "max"):
            assert kinds[f"train/hidden/{stat}"] == "scalar"
        assert np.all(store.scalars(run_id, "train/hidden/min")[1] == 0.0)
        assert np.all(store.scalars(run_id, "train/hidden/max")[1] > 0.0)

        # Gradient histograms: fixed buckets, every finite element of every step of the interval counted once.
        names = [f"train/grads/{leaf}" for leaf in GRADIENT_SIZES]
        assert {key for key, kind in kinds.items() if kind == "histogram"} == set(names)
        history = store.history(run_id, keys=names)
        assert [row["step"] for row in history] == TRAIN_STEPS
        for row in history:
            for leaf, size in GRADIENT_SIZES.items():
                histogram = row[f"train/grads/{leaf}"]
                np.testing.assert_allclose(histogram.bucket_limits, np.linspace(LOW, HIGH, NUM_BINS + 1), rtol=1e-6)
                assert len(histogram.bucket_counts) == NUM_BINS
                assert int(histogram.bucket_counts.sum()) == size * REPORT_EVERY, (row["step"], leaf)
                assert histogram.num == size * REPORT_EVERY
                assert histogram.min <= histogram.sum / histogram.num <= histogram.max
        # The output layer's gradients shrink as it learns: fewer land in the out-of-range edge buckets.
        first, last = (
            int(row["train/grads/layer1/w"].bucket_counts[[0, -1]].sum()) for row in (history[0], history[-1])
        )
        assert last < first / 10

    # The plot is there, as a PNG.
    images = image_outputs(notebook)
    assert images and all(image.startswith(b"\x89PNG") and len(image) > 10_000 for image in images)


def test_notebook_stops_with_an_explanation_when_jax_did_not_get_8_devices(tmp_path, cpu_kernel_env):
    # As if JAX had been initialised before the first cell: the device count is fixed elsewhere.
    cpu_kernel_env.setenv("JAX_NUM_CPU_DEVICES", "2")
    with pytest.raises(CellExecutionError) as error:
        execute(NOTEBOOK, tmp_path)
    message = str(error.value)
    assert "JAX started with 2 CPU device(s), not 8" in message
    assert "Restart the kernel and run the notebook from the top" in message
    assert not (tmp_path / "runs").exists()  # it stopped before recording anything
