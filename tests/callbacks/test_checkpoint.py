"""Checkpoint on a real small Flax/Optax training run, saving with real Orbax to a temporary directory."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from flax import linen as nn

from jaxtrack.callbacks import CallbackList
from jaxtrack.callbacks.checkpoint import Checkpoint


class Regressor(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(1)(nn.relu(nn.Dense(16)(x)))[:, 0]


MODEL, TX = Regressor(), optax.adam(0.01)  # adam: an optimizer state with moments and a step count


def _batch(step: int):
    # Deterministic data: the batch depends only on the step, so an interrupted
    # and resumed run sees exactly the batches an uninterrupted one does.
    rng = np.random.default_rng(step)
    x = rng.normal(size=(32, 4)).astype(np.float32)
    return jnp.asarray(x), jnp.asarray(x @ np.array([1.0, -2.0, 0.5, 3.0], np.float32))


def _initial_state():
    params = MODEL.init(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.float32))
    return {"params": params, "opt_state": TX.init(params)}


def _update(state, x, y):
    def loss_fn(params):
        return jnp.mean((MODEL.apply(params, x) - y) ** 2)

    grads = jax.grad(loss_fn)(state["params"])
    updates, opt_state = TX.update(grads, state["opt_state"], state["params"])
    return {"params": optax.apply_updates(state["params"], updates), "opt_state": opt_state}


_train_step = jax.jit(_update)


def _train(state, hooks, first: int, last: int, *, snapshots=None, end=True):
    """Steps ``first..last`` with hooks called as ``hook(step, state=state)``; ``end=False`` is a crash."""
    callbacks = CallbackList(hooks)
    callbacks.on_begin(first, state=state)
    for step in range(first, last + 1):
        state = _train_step(state, *_batch(step))
        if snapshots is not None:
            snapshots[step] = jax.device_get(state)
        callbacks(step, state=state)
    if end:
        callbacks.on_end(last, state=state)
    return state


def _assert_trees_equal(actual, expected):
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(e))


def _steps_on_disk(directory) -> list[int]:
    # A fresh Orbax manager reads the directory: only complete checkpoints count.
    with ocp.CheckpointManager(directory) as manager:
        return sorted(manager.all_steps())


def test_saves_at_due_steps_and_on_end(tmp_path):
    checkpoint = Checkpoint(tmp_path / "ckpt", every_steps=4, on_steps=[1], keep=None)
    _train(_initial_state(), [checkpoint], 1, 10)
    # Due at 1 (on_steps), 4 and 8 (every_steps); on_end adds the last step, 10.
    assert _steps_on_disk(tmp_path / "ckpt") == [1, 4, 8, 10]


def test_on_end_does_not_save_a_step_twice(tmp_path):
    checkpoint = Checkpoint(tmp_path, every_steps=4)
    _train(_initial_state(), [checkpoint], 1, 8)  # step 8 is due, then on_end(8) sees it saved
    assert _steps_on_disk(tmp_path) == [4, 8]


def test_keep_prunes_the_oldest(tmp_path):
    checkpoint = Checkpoint(tmp_path, every_steps=2, keep=2)
    _train(_initial_state(), [checkpoint], 1, 9)
    assert _steps_on_disk(tmp_path) == [8, 9]


def test_restore_returns_the_latest_state_as_it_was_at_that_step(tmp_path):
    snapshots: dict[int, object] = {}
    crashed = Checkpoint(tmp_path, every_steps=3)
    _train(_initial_state(), [crashed], 1, 7, snapshots=snapshots, end=False)
    # No on_end, as after a crash at step 7; its writes had completed (one cut
    # short by a crash is no checkpoint), so the latest checkpoint is step 6's.
    crashed.close()
    resumed = Checkpoint(tmp_path, every_steps=3)
    restored, step = resumed.restore(_initial_state())
    resumed.close()
    assert step == 6
    _assert_trees_equal(restored, snapshots[6])
    # Restored into the template's structure: optax's state types, not plain containers.
    assert jax.tree.structure(restored) == jax.tree.structure(_initial_state())
    assert isinstance(restored["params"]["params"]["Dense_0"]["kernel"], jax.Array)


def test_a_resumed_run_ends_where_an_uninterrupted_one_does(tmp_path):
    uninterrupted = _train(_initial_state(), [], 1, 12)

    crashed = Checkpoint(tmp_path, every_steps=5)
    _train(_initial_state(), [crashed], 1, 8, end=False)  # crashes after step 8, its writes complete
    crashed.close()
    checkpoint = Checkpoint(tmp_path, every_steps=5)
    state, step = checkpoint.restore(_initial_state())
    assert step == 5 and checkpoint.latest_step == 5
    resumed = _train(state, [checkpoint], step + 1, 12)

    _assert_trees_equal(resumed, uninterrupted)
    # The schedule goes on from step 5: no save at 6 as if 5 were a step missed.
    assert _steps_on_disk(tmp_path) == [5, 10, 12]


def test_after_restore_a_loop_without_on_begin_keeps_the_schedule(tmp_path):
    _train(_initial_state(), [Checkpoint(tmp_path, every_steps=4, keep=None)], 1, 5)  # saves 4, then 5 at the end
    checkpoint = Checkpoint(tmp_path, every_steps=4, keep=None)
    state, step = checkpoint.restore(_initial_state())
    assert step == 5
    for step in range(6, 10):
        state = _train_step(state, *_batch(step))
        checkpoint(step, state=state)
    checkpoint.close()
    assert _steps_on_disk(tmp_path) == [4, 5, 8]


def test_restore_without_a_checkpoint_returns_the_template(tmp_path):
    checkpoint = Checkpoint(tmp_path / "empty", every_steps=1)
    template = _initial_state()
    state, step = checkpoint.restore(template)
    assert step is None and state is template and checkpoint.latest_step is None
    checkpoint.close()


def test_the_last_checkpoint_is_complete_right_after_on_end(tmp_path):
    snapshots: dict[int, object] = {}
    checkpoint = Checkpoint(tmp_path, every_steps=1, keep=1)
    state = _initial_state()
    checkpoint.on_begin(1, state=state)
    for step in range(1, 4):
        state = _train_step(state, *_batch(step))
        snapshots[step] = jax.device_get(state)
        checkpoint(step, state=state)  # returns once the arrays are copied; the write goes on behind
    checkpoint.on_end(3, state=state)
    # Read with a manager of its own, as another process would: complete and equal.
    with ocp.CheckpointManager(tmp_path) as reader:
        assert reader.all_steps() == [3]
        target = jax.tree.map(ocp.utils.to_shape_dtype_struct, _initial_state())
        restored = reader.restore(3, args=ocp.args.StandardRestore(target))
    _assert_trees_equal(restored, snapshots[3])


def test_the_saved_state_is_the_one_at_the_due_step_even_if_training_donates_it(tmp_path):
    # The step donates its input while step 2's write may still be going on:
    # the write must not read buffers the next steps overwrote. (On CPU the
    # host copy Orbax takes can share the buffers; JAX then copies instead of
    # donating. Either way, what is on disk must be step 2's state.)
    donating_step = jax.jit(_update, donate_argnums=0)
    checkpoint = Checkpoint(tmp_path, on_steps=[2], keep=None)
    state, expected = _initial_state(), None
    for step in range(1, 6):
        state = donating_step(state, *_batch(step))
        if step == 2:
            expected = jax.tree.map(np.array, state)  # copies, not views of the device buffers
        checkpoint(step, state=state)
    checkpoint.on_end(5)  # no state: nothing more is saved, the pending write is waited for
    assert _steps_on_disk(tmp_path) == [2]
    reader = Checkpoint(tmp_path, every_steps=1)
    restored, restored_step = reader.restore(_initial_state())
    reader.close()
    assert restored_step == 2
    _assert_trees_equal(restored, expected)


def test_a_missing_state_is_a_type_error_naming_the_callback(tmp_path):
    checkpoint = Checkpoint(tmp_path, every_steps=10)
    with pytest.raises(TypeError, match=r"Checkpoint\(.*state="):
        checkpoint(1)  # not due yet: still an error, at the first step rather than hours in
    with pytest.raises(TypeError, match=r"Checkpoint\(.*state="):
        checkpoint.run(10, params=_initial_state())


def test_saving_behind_an_existing_later_checkpoint_warns(tmp_path):
    _train(_initial_state(), [Checkpoint(tmp_path, every_steps=5)], 1, 5)
    fresh = Checkpoint(tmp_path, every_steps=2)  # started from scratch in the old run's directory
    with pytest.warns(RuntimeWarning, match=r"did not save step 2: .* already holds step 5"):
        _train(_initial_state(), [fresh], 1, 2, end=False)
    fresh.close()
    assert _steps_on_disk(tmp_path) == [5]


def test_a_relative_directory_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    checkpoint = Checkpoint("runs/ckpt", every_steps=1)
    assert checkpoint.directory == str(tmp_path / "runs" / "ckpt")
    assert "runs/ckpt" in repr(checkpoint) and "every_steps=1" in repr(checkpoint)


@pytest.mark.parametrize("keep", [0, -1, 2.5, True, "3"])
def test_bad_keep(tmp_path, keep):
    with pytest.raises(ValueError, match="keep"):
        Checkpoint(tmp_path, every_steps=1, keep=keep)


def test_bad_directories(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("not a directory")
    with pytest.raises(NotADirectoryError, match="not a directory"):
        Checkpoint(a_file, every_steps=1)
    with pytest.raises(ValueError, match="empty"):
        Checkpoint("", every_steps=1)
    with pytest.raises(TypeError, match="path"):
        Checkpoint(None, every_steps=1)  # type: ignore[arg-type]


def test_a_schedule_is_needed(tmp_path):
    with pytest.raises(ValueError, match="every_steps"):
        Checkpoint(tmp_path)
