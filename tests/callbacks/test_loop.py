"""jaxtrack.train / Loop: callbacks, stopping, failures and Ctrl-C flush and finish the trackers."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxtrack
import jaxtrack as jt
from jaxtrack.callbacks import LambdaCallback, Loop, StopTraining
from support.recording import RecordingTracker


def test_train_runs_the_steps_and_passes_state_to_callbacks():
    seen = []
    final = jt.train(
        lambda state, batch: state + batch,
        0,
        itertools.repeat(3),
        4,
        callbacks=[LambdaCallback(on_step=lambda step, state: seen.append((step, state)))],
    )
    assert final == 12
    assert seen == [(1, 3), (2, 6), (3, 9), (4, 12)]


def test_add_callback_forms():
    loop = Loop(lambda state, batch: state + 1, num_steps=6)
    every, plain = [], []

    @loop.add_callback(every_steps=3)
    def every_three(step, state):
        every.append(step)

    loop.add_callback(lambda step, state: plain.append(step))
    assert every_three.__name__ == "every_three"  # the decorator returns the function
    loop.run(0, itertools.repeat(None))
    assert every == [3, 6] and plain == [1, 2, 3, 4, 5, 6]
    with pytest.raises(TypeError, match="schedule"):
        loop.add_callback(LambdaCallback(), every_steps=2)


def test_stop_training_ends_cleanly_and_calls_on_end():
    ended = []

    def stop_at_3(step, state):
        if step == 3:
            raise StopTraining("enough", step=step)

    final = jt.train(
        lambda state, batch: state + 1,
        0,
        itertools.repeat(None),
        10,
        callbacks=[stop_at_3, LambdaCallback(on_end=lambda step, state: ended.append((step, state)))],
    )
    assert final == 3 and ended == [(3, 3)]


def test_running_out_of_batches_ends_the_loop():
    ended = []
    final = jt.train(
        lambda state, batch: state + batch,
        0,
        [1, 2],
        10,
        callbacks=[LambdaCallback(on_end=lambda step, state: ended.append(step))],
    )
    assert final == 3 and ended == [2]


def test_an_exception_ends_callbacks_marks_the_run_and_finishes_the_tracker():
    tracker = RecordingTracker()
    ended = []

    def step_fn(state, batch):
        if state == 2:
            raise FloatingPointError("diverged")
        jt.log({"state": state}, step=state)
        return state + 1

    jt.current_tracker(tracker)
    with pytest.raises(FloatingPointError, match="diverged"):
        jt.train(
            step_fn, 0, itertools.repeat(None), 10, callbacks=[LambdaCallback(on_end=lambda s, state: ended.append(s))]
        )
    assert ended == [2]
    assert [step for step, _, _ in tracker.logs] == [0, 1]  # everything logged before the failure
    assert {"status": "failed: FloatingPointError", "last_step": 2} in tracker.summaries
    assert tracker.finished == 1


def test_a_failing_step_and_a_failing_on_end_mark_the_run_failed_and_raise_the_steps_error(tmp_path):
    """Case 9: the callback's error replaced the step's, the run stayed running, the tracker current, and the
    process's exit then marked it finished."""
    from jaxtrack.callbacks import Callback
    from jaxtrack.store import RunStore

    class BrokenEnd(Callback):
        def on_end(self, step, **context):
            raise RuntimeError("on_end broke too")

    def step_fn(state, batch):
        if state == 5:
            raise ValueError("the step broke")
        return state + 1

    store = tmp_path / "runs.db"
    jt.init_tracker({"type": "local", "path": str(store)}, run_id="both-broke")
    with pytest.raises(ValueError, match="the step broke") as raised:
        jt.train(step_fn, 0, itertools.repeat(None), 10, callbacks=[BrokenEnd()])
    assert any("on_end broke too" in note for note in getattr(raised.value, "__notes__", []))
    assert jaxtrack.run.current() is None  # the run ended: the tracker is no longer current
    jaxtrack.run.end_all(status="finished")  # what the process's exit does
    with RunStore(store) as runs:
        run = runs.run("both-broke")
        assert run.status == "failed" and run.summary["status"] == "failed: ValueError"


def test_restore_hook_resumes_after_the_saved_step():
    class Restorer(LambdaCallback):
        def restore(self, state):
            return 100, 5

    seen = []
    final = jt.train(
        lambda state, batch: state + 1,
        0,
        itertools.repeat(None),
        8,
        callbacks=[Restorer(on_step=lambda step, state: seen.append(step))],
    )
    assert final == 103 and seen == [6, 7, 8]


def test_ctrl_c_flushes_and_finishes_the_tracker(tmp_path):
    out = tmp_path / "log.txt"
    ready = tmp_path / "ready"
    script = textwrap.dedent(
        f"""
        import itertools, os, time
        import jaxtrack as jt

        class FileTracker(jt.NoopTracker):
            name = "file"
            def log(self, metrics, *, step=None, commit=None):
                with open({str(out)!r}, "a") as f:
                    f.write(f"log {{step}}\\n")
            def log_summary(self, metrics):
                with open({str(out)!r}, "a") as f:
                    f.write(f"summary {{metrics['status']}}\\n")
            def finish(self):
                with open({str(out)!r}, "a") as f:
                    f.write("finish\\n")

        jt.current_tracker(FileTracker())

        def step_fn(state, batch):
            jt.log({{"state": state}}, step=state)
            if state == 3:
                open({str(ready)!r}, "w").close()
            time.sleep(0.01)
            return state + 1

        jt.train(step_fn, 0, itertools.repeat(None), 10**9)
        """
    )
    process = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(6000):  # bounded wait for the loop to be running (up to 60 s)
            if ready.exists() or process.poll() is not None:
                break
            try:
                process.wait(timeout=0.01)
            except subprocess.TimeoutExpired:
                pass
        assert ready.exists(), process.stderr.read() if process.stderr else ""
        os.kill(process.pid, signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert "KeyboardInterrupt" in stderr
    lines = out.read_text().splitlines()
    logged = [int(line.split()[1]) for line in lines if line.startswith("log ")]
    assert logged == list(range(len(logged))) and len(logged) >= 4  # in order, nothing lost
    assert lines[-2:] == ["summary interrupted", "finish"]


def test_a_failed_run_resumes_from_its_orbax_checkpoint_and_continues_the_step_count(tmp_path):
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from jaxtrack.callbacks import Checkpoint, ReportMetrics

    x = jnp.asarray(np.random.default_rng(0).normal(size=(16, 3)), jnp.float32)
    y = x @ jnp.asarray([1.0, -1.0, 2.0])
    tx = optax.adam(0.1)

    @jt.jit
    def train_step(state, batch):
        params, opt_state = state
        loss, grads = jax.value_and_grad(lambda w: jnp.mean((x * batch @ w - y) ** 2))(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        jt.jit_log({"loss": loss})
        return optax.apply_updates(params, updates), opt_state

    def fresh():
        params = jnp.zeros(3)
        return params, tx.init(params)

    def batches(fail_at=None):
        for step in itertools.count(1):
            if step == fail_at:
                raise RuntimeError("preempted")
            yield jnp.float32(1.0 + 0.01 * step)  # depends on the step, as real data order does

    uninterrupted = jt.train(train_step, fresh(), batches(), 12)

    tracker = RecordingTracker()
    jt.current_tracker(tracker)
    with pytest.raises(RuntimeError, match="preempted"):
        jt.train(
            train_step,
            fresh(),
            batches(fail_at=8),
            12,
            callbacks=[Checkpoint(tmp_path / "ckpt", every_steps=3), ReportMetrics(train_step, every_steps=3)],
        )
    assert tracker.finished == 1
    first_run = [step for step, _, _ in tracker.logs]

    tracker = RecordingTracker()
    jt.current_tracker(tracker)
    checkpoint = Checkpoint(tmp_path / "ckpt", every_steps=3)

    def resumed_batches():
        # The data pipeline skips what the first run consumed (steps 1-7).
        return itertools.islice(batches(), 7, None)

    final = jt.train(
        train_step, fresh(), resumed_batches(), 12, callbacks=[checkpoint, ReportMetrics(train_step, every_steps=3)]
    )
    jt.flush()
    assert first_run == [3, 6, 7]  # the partial interval before the failure is reported too
    assert [step for step, _, _ in tracker.logs] == [9, 12]  # resumed at 8, same schedule
    assert checkpoint.all_steps()[-1] == 12
    np.testing.assert_allclose(final[0], uninterrupted[0], rtol=1e-6)


def _steps_in_flight(max_steps_ahead):
    """The most steps dispatched and not yet run by the device, seen by a hook after each step."""

    @jax.jit
    def slow_step(state, _):
        x, count = state
        for _ in range(4):  # milliseconds of device work a step: the host dispatches far faster
            x = jnp.tanh(x @ x)
        return x, count + 1

    counts, in_flight = [], []

    def hook(step, state, **_):
        counts.append(state[1])  # not donated: stays valid to ask whether the device got there
        in_flight.append(sum(not count.is_ready() for count in counts[-64:]))

    x = jnp.asarray(np.random.default_rng(0).normal(size=(300, 300)).astype(np.float32) / 20)
    with jt.current_tracker(jt.NoopTracker()):
        final = jt.train(
            slow_step, (x, jnp.int32(0)), itertools.repeat(None), 96, callbacks=[hook], max_steps_ahead=max_steps_ahead
        )
        jax.block_until_ready(final)
    return max(in_flight)


def test_the_loop_never_runs_more_than_twice_max_steps_ahead_of_the_device():
    # Unbounded, the host runs far ahead (memory grows; XLA's CPU collectives over simulated devices deadlock).
    assert _steps_in_flight(None) > 8
    assert _steps_in_flight(4) <= 8


def test_max_steps_ahead_must_be_a_positive_integer():
    with pytest.raises(ValueError, match="max_steps_ahead"):
        jt.callbacks.Loop(lambda state, batch: state, num_steps=1, max_steps_ahead=0)


DATA_PARALLEL_LOOP = """
import itertools
import jax, numpy as np, optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import jaxtrack as jt
from jaxtrack.callbacks import ReportMetrics

mesh = Mesh(np.array(jax.devices()), ("data",))
data, replicated = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
rng = np.random.default_rng(0)
batch = jax.device_put((rng.normal(size=(128, 64)).astype(np.float32), rng.integers(0, 10, 128).astype(np.int32)), data)
params = jax.device_put({"w": rng.normal(size=(64, 10)).astype(np.float32) * 0.1}, replicated)
tx = optax.adam(1e-2)

@jt.jit(donate_argnums=(0,))
def step(state, batch):
    params, opt = state
    loss, grads = jax.value_and_grad(
        lambda p: optax.softmax_cross_entropy_with_integer_labels(batch[0] @ p["w"], batch[1]).mean()
    )(params)  # the gradients of a sharded batch: an all-reduce over the 8 devices every step
    updates, opt = tx.update(grads, opt, params)
    jt.jit_log({"loss": loss})
    return optax.apply_updates(params, updates), opt

with jt.current_tracker(jt.NoopTracker()):
    state = jt.train(step, (params, tx.init(params)), itertools.repeat(batch), 1000,
                     callbacks=[ReportMetrics(step, every_steps=25)])
    jax.block_until_ready(state)
print("trained", int(state[1][0].count))
"""


def test_a_data_parallel_loop_over_8_cpu_devices_does_not_deadlock():
    """Unbounded (max_steps_ahead=None), this loop deadlocks in XLA's CPU client nearly every time: it blocks a
    dispatch once a device has 32 computations in flight, while the other devices wait in the step's all-reduce."""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run(
        [sys.executable, "-c", DATA_PARALLEL_LOOP], env=env, capture_output=True, text=True, timeout=240
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "trained 1000"
