"""One process of a two-process ``jax.distributed`` run on CPU, started by ``test_multihost.py``.

Run as ``python worker.py PROCESS_ID PORT SCENARIO OUT_DIR RESULT_FILE`` with two
host devices per process (``--xla_force_host_platform_device_count=2``); when done
it writes its result as JSON to RESULT_FILE (not only to stdout, where Gloo's own
lines can land in the middle of it). Importing it only defines the shared data and its
NumPy reference, which the tests use to check what the run recorded.

Scenarios:

``train``
    Trains a linear model on a batch sharded over the 4 devices of both
    processes with ``jt.jit`` + ``jt.jit_log`` + ``ReportMetrics`` into the
    local store and TensorBoard (run id made up), ``jt.log``-s the sharded
    per-example losses now and then, then resumes the run by its id and logs
    through ``jit_log``'s host-callback fallback. Last, it logs through the
    fallback over a mesh whose first device is process 1's, into an in-memory
    tracker, and says which process received the values.
``mismatch``
    Each process gives ``init_tracker`` a different run id.
"""

from __future__ import annotations

import json
import os
import pathlib
import sys
from typing import Any

import numpy as np

NUM_PROCESSES = 2
LOCAL_DEVICES = 2
STEPS = 24
BATCH = 8  # global: 2 rows per device, 4 per process
FEATURES = 3
LEARNING_RATE = 0.1
REPORT_EVERY = 5  # ReportMetrics: steps 5, 10, 15, 20, and 24 at the end
LOG_EVERY = 7  # jt.log of the sharded per-example losses: steps 7, 14, 21
EVAL_STEPS = (25, 26)  # the resumed session: jit_log's fallback, evaluating the trained model on batches 0, 1


def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The global batches ``xs[i]``, ``ys[i]`` and the initial weights, the same in every process."""
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(STEPS, BATCH, FEATURES)).astype(np.float32)
    noise = rng.normal(size=(STEPS, BATCH)).astype(np.float32) * np.float32(0.1)
    ys = xs @ np.array([1.0, -2.0, 0.5], np.float32) + noise
    return xs, ys.astype(np.float32), np.zeros(FEATURES, np.float32)


def reference() -> tuple[list[np.ndarray], np.ndarray]:
    """Per training step the per-example losses over the whole global batch, and the trained weights (NumPy)."""
    xs, ys, w = data()
    per_example = []
    for x, y in zip(xs, ys, strict=True):
        err = x @ w - y
        per_example.append(err**2)
        w = w - LEARNING_RATE * (2.0 / BATCH) * (x.T @ err)
    return per_example, w


def main(process_id: int, port: int, scenario: str, out_dir: str) -> dict[str, Any]:
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=f"127.0.0.1:{port}",
        num_processes=NUM_PROCESSES,
        process_id=process_id,
        initialization_timeout=60,
    )
    import jax.numpy as jnp
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    import jaxtrack as jt
    from jaxtrack import multihost
    from jaxtrack.callbacks import ReportMetrics

    assert jax.process_count() == NUM_PROCESSES and jax.device_count() == NUM_PROCESSES * LOCAL_DEVICES
    mesh = Mesh(np.array(jax.devices()), ("data",))
    rows = NamedSharding(mesh, P("data"))
    replicated = NamedSharding(mesh, P())
    xs, ys, w0 = data()
    per_process = BATCH // NUM_PROCESSES
    mine = slice(process_id * per_process, (process_id + 1) * per_process)

    def global_batch(i: int, sharding: NamedSharding = rows) -> tuple[jax.Array, jax.Array]:
        # Each process holds only its own rows of the global batch.
        x = jax.make_array_from_process_local_data(sharding, xs[i, mine], (BATCH, FEATURES))
        y = jax.make_array_from_process_local_data(sharding, ys[i, mine], (BATCH,))
        return x, y

    result: dict[str, Any] = {
        "process": process_id,
        "pid": os.getpid(),
        "writes": multihost.writes(),
        "writes_all_processes": multihost.writes(all_processes=True),
        "per_process": multihost.per_process("run"),
    }
    spec = [{"type": "local", "path": f"{out_dir}/store.db"}, {"type": "tensorboard", "logdir": f"{out_dir}/tb"}]
    if scenario == "mismatch":
        try:
            jt.init_tracker(spec, run_id=f"run-of-process-{process_id}")
        except ValueError as error:
            result["error"] = str(error)
        return result
    if scenario != "train":
        raise ValueError(f"unknown scenario {scenario!r}")

    jt.init_tracker(spec)
    result["run_id"] = jt.get_tracker("local").run_id

    @jt.jit(in_shardings=(replicated, rows, rows), out_shardings=(replicated, rows))
    def train_step(w, x, y):
        def loss_fn(w):
            per_example = (x @ w - y) ** 2
            return per_example.mean(), per_example

        (loss, per_example), grad = jax.value_and_grad(loss_fn, has_aux=True)(w)
        jt.jit_log({"loss": loss})
        # per_example_max keeps one value per example: its accumulator state is sharded like the
        # batch, over both processes, where the scalars' state is replicated.
        jt.jit_log({"worst": per_example.max(), "per_example_max": per_example}, reduce="max")
        return w - LEARNING_RATE * grad, per_example

    report = ReportMetrics(train_step, every_steps=REPORT_EVERY, timing=False)
    w = jax.device_put(w0, replicated)
    report.on_begin(1)
    for step in range(1, STEPS + 1):
        w, per_example = train_step(w, *global_batch(step - 1))
        report(step)
        if step % LOG_EVERY == 0:
            # A global array no process holds whole: gathered, so every process takes part.
            result["logged_fully_addressable"] = per_example.is_fully_addressable
            jt.log({"eval": {"per_example": per_example, "mean": jnp.mean(per_example)}}, step=step)
    report.on_end(STEPS)
    jt.finish()
    # What the reporter does to such an array as it is queued: a replicated copy, the tree's order kept.
    kept = multihost.replicate_sharded({"b": per_example, "a": [1.0, per_example]})
    result["replicated"] = {
        "keys": list(kept),
        "fully_replicated": [kept["b"].is_fully_replicated, kept["a"][1].is_fully_replicated],
        "values": np.asarray(kept["b"]).tolist(),
        "untouched": kept["a"][0],
    }

    # A second session of the same run, as a restarted job gives the id it was started with.
    jt.init_tracker(spec, run_id=result["run_id"])

    @jax.jit
    def eval_step(w, x, y, step):
        jt.jit_log({"fallback": {"loss": jnp.mean((x @ w - y) ** 2)}}, step=step)  # a host callback, in plain jit
        return w

    for i, step in enumerate(EVAL_STEPS):
        eval_step(w, *global_batch(i), step)
    # flush waits for the steps' host callbacks while the tracker is still current: finish unsets
    # it before it waits for them, and a callback still pending then would find no tracker.
    jt.flush()
    jt.finish()

    # The fallback's callback runs where the computation's first device is: here on process 1.
    received = []

    class Received(jt.Tracker):
        name = "received"

        def log(self, metrics, *, step=None, commit=None):
            received.append(step)

        def log_summary(self, metrics): ...
        def log_hyperparameters(self, hparams): ...
        def log_artifact(self, artifact_path, *, name=None, type=None): ...
        def finish(self): ...

    backwards = NamedSharding(Mesh(np.array(jax.devices()[::-1]), ("data",)), P("data"))
    w = jax.device_put(np.asarray(w), backwards.update(spec=P()))  # replicated: each process has it whole
    with jt.current_tracker(Received()):
        for i in range(2):
            eval_step(w, *global_batch(i, backwards), i)
        jt.flush(timeout=60)
    result["fallback_backwards_mesh_steps"] = received
    return result


if __name__ == "__main__":
    import faulthandler
    import signal

    faulthandler.register(signal.SIGUSR1, all_threads=True)  # the test asks for the stacks of a worker it kills
    process_id, port, scenario, out_dir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    result_file = pathlib.Path(sys.argv[5])
    result = json.dumps(main(process_id, port, scenario, out_dir))
    result_file.with_suffix(".tmp").write_text(result)
    os.replace(result_file.with_suffix(".tmp"), result_file)  # whole or absent, however the process ends
    print("RESULT " + result, flush=True)
