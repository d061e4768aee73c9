"""Two real processes on ``jax.distributed`` (CPU, gloo collectives) train one run.

Each test starts two workers (``worker.py``, two host devices each, four in
all) on 127.0.0.1 and checks from here what they recorded: one run, one row
per report, global values equal to a NumPy computation over the whole batch,
one run id, and no files from process 1. Workers that do not finish in time
are killed, so a deadlock fails the test instead of hanging it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
from typing import Any

import numpy as np
import pytest

from jaxtrack.store import RunStore

WORKER_PATH = pathlib.Path(__file__).with_name("worker.py")
WORKER_TIMEOUT_SECS = 90.0
FAILED_PEER_GRACE_SECS = 10.0

_spec = importlib.util.spec_from_file_location("jaxtrack_multihost_worker", WORKER_PATH)
assert _spec is not None and _spec.loader is not None
worker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(worker)

pytestmark = [
    pytest.mark.timeout(3 * WORKER_TIMEOUT_SECS),
    pytest.mark.skipif(sys.platform == "win32", reason="jax.distributed on CPU with gloo: Linux and macOS"),
]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run_pair(scenario: str, root: pathlib.Path) -> dict[str, Any]:
    """Runs both workers of ``scenario`` to the end; each in an empty working directory of its own."""
    shared = root / "shared"
    shared.mkdir()
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2").strip()
    env["JAX_PLATFORMS"] = "cpu"
    port = _free_port()
    procs: list[subprocess.Popen[bytes]] = []
    logs: list[tuple[pathlib.Path, pathlib.Path]] = []
    started = time.monotonic()
    try:
        for index in range(worker.NUM_PROCESSES):
            cwd = root / f"process{index}"
            cwd.mkdir()
            # Output goes to files, not pipes: a full pipe would stall one worker and, through
            # the collectives, the other.
            stdout, stderr = root / f"stdout{index}.txt", root / f"stderr{index}.txt"
            logs.append((stdout, stderr))
            with stdout.open("wb") as out, stderr.open("wb") as err:
                procs.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            str(WORKER_PATH),
                            str(index),
                            str(port),
                            scenario,
                            str(shared),
                            str(root / f"result{index}.json"),
                        ],
                        cwd=cwd,
                        env=env,
                        stdout=out,
                        stderr=err,
                    )
                )
        deadline = started + WORKER_TIMEOUT_SECS
        while any(proc.poll() is None for proc in procs):
            if any(proc.poll() not in (None, 0) for proc in procs):
                # One failed: the other may wait for it in a collective until jax gives up; do not wait as long.
                deadline = min(deadline, time.monotonic() + FAILED_PEER_GRACE_SECS)
            if time.monotonic() > deadline:
                _kill(procs)
                pytest.fail(
                    f"the workers did not finish in time (exit codes {[proc.returncode for proc in procs]})\n"
                    + _tails(logs)
                )
            time.sleep(0.05)
    finally:
        _kill(procs)
    results = []
    for index, proc in enumerate(procs):
        result = root / f"result{index}.json"
        assert proc.returncode == 0 and result.exists(), f"a worker failed (exit {proc.returncode})\n" + _tails(logs)
        results.append(json.loads(result.read_text()))
    return {"results": results, "shared": shared, "root": root}


def _kill(procs: list[subprocess.Popen[bytes]]) -> None:
    """Kills the workers still running, after having them write their threads' stacks to stderr."""
    running = [proc for proc in procs if proc.poll() is None]
    for proc in running:
        proc.send_signal(signal.SIGUSR1)
    if running:
        time.sleep(1.0)
    for proc in running:
        proc.kill()
        proc.wait()


def _tails(logs: list[tuple[pathlib.Path, pathlib.Path]]) -> str:
    parts = []
    for index, (stdout, stderr) in enumerate(logs):
        for path in (stdout, stderr):
            text = path.read_text(errors="replace") if path.exists() else ""
            parts.append(f"--- process {index} {path.name} ---\n{text[-8000:]}")
    return "\n".join(parts)


@pytest.fixture(scope="module")
def train_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _run_pair("train", tmp_path_factory.mktemp("multihost-train"))


def _report_intervals() -> list[tuple[int, range]]:
    """The steps ReportMetrics reports at, each with the training steps (1-based) its interval covers."""
    ends = [*range(worker.REPORT_EVERY, worker.STEPS + 1, worker.REPORT_EVERY)]
    if ends[-1] != worker.STEPS:
        ends.append(worker.STEPS)  # on_end reports the last, partial interval
    return [(end, range(start + 1, end + 1)) for start, end in zip([0, *ends], ends, strict=False)]


def _log_steps() -> list[int]:
    return [*range(worker.LOG_EVERY, worker.STEPS + 1, worker.LOG_EVERY)]


def _history(run: dict[str, Any]) -> tuple[Any, list[dict[str, Any]]]:
    with RunStore(run["shared"] / "store.db") as store:
        runs = store.runs()
        assert len(runs) == 1, [r.id for r in runs]
        return runs[0], store.history(runs[0].id)


def _check_histogram(histogram: Any, values: np.ndarray, where: str) -> None:
    assert histogram.num == values.size, where
    np.testing.assert_allclose(histogram.sum, values.sum(), rtol=1e-4, atol=1e-6, err_msg=where)
    np.testing.assert_allclose(histogram.min, values.min(), rtol=1e-4, atol=1e-6, err_msg=where)
    np.testing.assert_allclose(histogram.max, values.max(), rtol=1e-4, atol=1e-6, err_msg=where)


def test_both_processes_finish_with_the_run_id_process_0_made_up(train_run: dict[str, Any]) -> None:
    first, second = train_run["results"]
    assert [first["process"], second["process"]] == [0, 1]
    assert first["run_id"] and first["run_id"] == second["run_id"]
    run, _ = _history(train_run)
    assert run.id == first["run_id"]
    assert run.sessions == 2  # resumed by that id in the second session
    assert run.status == "finished"
    # Which process writes, by default and for a backend that writes on every process.
    assert [first["writes"], second["writes"]] == [True, False]
    assert [first["writes_all_processes"], second["writes_all_processes"]] == [True, True]
    assert [first["per_process"], second["per_process"]] == ["run", "run-process1"]


def test_one_row_per_report_with_the_global_values(train_run: dict[str, Any]) -> None:
    per_example, _ = worker.reference()
    _, history = _history(train_run)
    intervals = _report_intervals()
    expected_steps = sorted([end for end, _ in intervals] + _log_steps() + list(worker.EVAL_STEPS))
    assert [row["step"] for row in history] == expected_steps
    rows = {row["step"]: row for row in history}
    for end, steps in intervals:
        row = rows[end]
        assert set(row) == {"step", "loss", "worst", "per_example_max"}, row
        losses = [per_example[s - 1] for s in steps]
        where = f"report at step {end}"
        np.testing.assert_allclose(row["loss"], np.mean([e.mean() for e in losses]), rtol=1e-4, err_msg=where)
        np.testing.assert_allclose(row["worst"], np.max(losses), rtol=1e-4, err_msg=where)
        _check_histogram(row["per_example_max"], np.max(losses, axis=0), where)


def test_jt_log_of_an_array_sharded_over_both_processes_records_the_global_values(train_run: dict[str, Any]) -> None:
    per_example, _ = worker.reference()
    assert train_run["results"][0]["logged_fully_addressable"] is False  # no process held it whole
    _, history = _history(train_run)
    rows = {row["step"]: row for row in history}
    for step in _log_steps():
        row = rows[step]
        assert set(row) == {"step", "eval/per_example", "eval/mean"}, row
        _check_histogram(row["eval/per_example"], per_example[step - 1], f"jt.log at step {step}")
        np.testing.assert_allclose(row["eval/mean"], per_example[step - 1].mean(), rtol=1e-4)


def test_replicate_sharded_gives_every_process_the_whole_array(train_run: dict[str, Any]) -> None:
    per_example, _ = worker.reference()
    for result in train_run["results"]:
        replicated = result["replicated"]
        assert replicated["keys"] == ["b", "a"]
        assert replicated["fully_replicated"] == [True, True]
        assert replicated["untouched"] == 1.0
        np.testing.assert_allclose(replicated["values"], per_example[-1], rtol=1e-4, atol=1e-7)


def test_jit_log_fallback_records_the_global_values(train_run: dict[str, Any]) -> None:
    _, trained = worker.reference()
    xs, ys, _ = worker.data()
    _, history = _history(train_run)
    rows = {row["step"]: row for row in history}
    for i, step in enumerate(worker.EVAL_STEPS):
        assert set(rows[step]) == {"step", "fallback/loss"}
        expected = np.mean((xs[i] @ trained - ys[i]) ** 2)
        np.testing.assert_allclose(rows[step]["fallback/loss"], expected, rtol=1e-4)


def test_only_process_0_writes(train_run: dict[str, Any]) -> None:
    first, second = train_run["results"]
    root, shared = train_run["root"], train_run["shared"]
    assert list((root / "process1").iterdir()) == []
    assert list((root / "process0").iterdir()) == []
    assert {path.name for path in shared.iterdir()} <= {"store.db", "store.db-wal", "store.db-shm", "tb"}
    # TensorBoard: one event file per session of the run, each written by process 0.
    [logdir] = (shared / "tb").iterdir()
    assert logdir.name == first["run_id"]
    event_files = sorted(logdir.glob("events.out.tfevents.*"))
    assert len(event_files) == 2, event_files
    assert all(f".{first['pid']}." in path.name for path in event_files), (event_files, first["pid"])
    assert not any(f".{second['pid']}." in path.name for path in event_files)


def test_tensorboard_has_the_reported_losses(train_run: dict[str, Any]) -> None:
    from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    [logdir] = (train_run["shared"] / "tb").iterdir()
    accumulator = EventAccumulator(os.fspath(logdir), size_guidance={"tensors": 0})
    accumulator.Reload()
    tb_losses = {
        event.step: tensor_util.make_ndarray(event.tensor_proto).item() for event in accumulator.Tensors("loss")
    }
    _, history = _history(train_run)
    stored = {row["step"]: row["loss"] for row in history if "loss" in row}
    assert sorted(tb_losses) == sorted(stored) == [end for end, _ in _report_intervals()]
    for step, loss in stored.items():
        np.testing.assert_allclose(tb_losses[step], loss, rtol=1e-6)


@pytest.mark.xfail(
    strict=True,
    reason="jit_log's host-callback fallback runs on the process of the computation's first device only; "
    "with a mesh that starts on process 1's devices, process 0 (the one that writes) never gets the values",
)
def test_jit_log_fallback_reaches_process_0_whatever_the_mesh_order(train_run: dict[str, Any]) -> None:
    first, _ = train_run["results"]
    assert first["fallback_backwards_mesh_steps"] == [0, 1]


def test_different_run_ids_fail_on_every_process_without_hanging(tmp_path: pathlib.Path) -> None:
    run = _run_pair("mismatch", tmp_path)
    for result in run["results"]:
        assert "different run ids" in result["error"], result
        assert "'run-of-process-0'" in result["error"] and "'run-of-process-1'" in result["error"]
    assert list(run["shared"].iterdir()) == []  # no tracker was built
