"""Profile with the real jax.profiler on a short jitted loop: the trace lands where TensorBoard reads it."""

from __future__ import annotations

import gzip

import jax
import jax.numpy as jnp
import pytest

from jaxtrack.callbacks import CallbackList
from jaxtrack.callbacks.profile import Profile


@jax.jit
def profiled_train_step(x):
    return jnp.tanh(x @ x) + 1.0


def _train(hooks, steps, *, end=True):
    callbacks = CallbackList(hooks)
    x = jnp.ones((32, 32), jnp.float32)
    callbacks.on_begin(steps[0], state=x)
    for step in steps:
        x = profiled_train_step(x)
        callbacks(step, state=x)
    if end:
        callbacks.on_end(steps[-1], state=x)
    return x


def _assert_not_tracing(tmp_path):
    # Only one trace may run in a process: starting one works only if none is running.
    jax.profiler.start_trace(str(tmp_path / "probe"))
    jax.profiler.stop_trace()


def _trace_files(logdir):
    return sorted((logdir / "plugins" / "profile").glob("*/*.xplane.pb"))


def test_traces_num_steps_from_first_step_for_tensorboard(tmp_path):
    profile = Profile(tmp_path / "logs", first_step=3, num_steps=2)
    _train([profile], range(1, 9), end=False)  # ends long after the trace: it stopped by itself
    assert not profile.tracing
    assert profile.traced_steps == (4, 5)
    _assert_not_tracing(tmp_path)
    (xplane,) = _trace_files(tmp_path / "logs")
    # The trace holds the jitted step's device work (the loop waited for it before stopping).
    trace_json = gzip.decompress(next(xplane.parent.glob("*.trace.json.gz")).read_bytes())
    assert b"profiled_train_step" in xplane.read_bytes() + trace_json


def test_a_skipped_first_step_starts_at_the_next_one(tmp_path):
    profile = Profile(tmp_path, first_step=4, num_steps=3)
    _train([profile], [2, 5, 6, 7, 10, 11], end=False)
    assert profile.started_at == 5 and profile.stopped_at == 10  # 10 is the first step >= 5 + 3
    assert not profile.tracing
    _assert_not_tracing(tmp_path)
    assert len(_trace_files(tmp_path)) == 1


def test_on_end_stops_a_trace_still_running(tmp_path):
    profile = Profile(tmp_path, first_step=1, num_steps=100)
    _train([profile], range(1, 4), end=False)
    assert profile.tracing and profile.traced_steps is None
    with pytest.raises(RuntimeError):
        jax.profiler.start_trace(str(tmp_path / "probe"))  # ours is still running
    profile.on_end(3)
    assert not profile.tracing and profile.traced_steps == (2, 3)
    _assert_not_tracing(tmp_path)
    assert len(_trace_files(tmp_path)) == 1


def test_training_shorter_than_first_step_traces_nothing(tmp_path):
    profile = Profile(tmp_path, first_step=50)
    _train([profile], range(1, 4))
    assert profile.started_at is None and not profile.tracing
    assert not (tmp_path / "plugins").exists()


def test_a_trace_already_running_is_a_clear_error(tmp_path):
    profile = Profile(tmp_path, first_step=1)
    jax.profiler.start_trace(str(tmp_path / "other"))
    try:
        with pytest.raises(RuntimeError) as error:
            profile(1)
    finally:
        jax.profiler.stop_trace()
    assert any("Profile(" in note and "step 1" in note for note in error.value.__notes__)
    assert not profile.tracing


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"first_step": -1}, ValueError, "first_step"),
        ({"first_step": 1.5}, ValueError, "first_step"),
        ({"first_step": 1, "num_steps": 0}, ValueError, "num_steps"),
        ({"first_step": 1, "num_steps": True}, ValueError, "num_steps"),
    ],
)
def test_bad_options(tmp_path, kwargs, error, match):
    with pytest.raises(error, match=match):
        Profile(tmp_path, **kwargs)


def test_bad_logdir():
    with pytest.raises(TypeError, match="logdir"):
        Profile("", first_step=1)
