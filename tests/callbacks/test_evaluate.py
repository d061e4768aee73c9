"""Evaluate on a real small Flax/Optax training run with a held-out set, alone and with EarlyStopping."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn

import jaxtrack as jt
from jaxtrack.callbacks import CallbackList, EarlyStopping, StopTraining
from jaxtrack.callbacks.evaluate import Evaluate
from support.recording import RecordingTracker


class Regressor(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(1)(nn.relu(nn.Dense(16)(x)))[:, 0]


def _data(seed, n):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    return jnp.asarray(x), jnp.asarray(x @ np.array([1.0, -2.0, 0.5, 3.0], np.float32))


MODEL = Regressor()
X_TRAIN, Y_TRAIN = _data(0, 64)
X_EVAL, Y_EVAL = _data(1, 32)  # held out: never trained on


@jax.jit
def eval_metrics(params):
    error = MODEL.apply(params, X_EVAL) - Y_EVAL
    return {"loss": jnp.mean(error**2), "max_error": jnp.max(jnp.abs(error))}


def _direct_eval_loss(params) -> float:
    # Not jitted, in NumPy: an independent computation of the held-out loss.
    prediction = np.asarray(MODEL.apply(params, np.asarray(X_EVAL)))
    return float(np.mean((prediction - np.asarray(Y_EVAL)) ** 2))


def _run(hooks, steps, *, lr=0.05):
    """A 1-indexed training loop passing ``params=`` to its hooks, flushing each step.

    Returns the held-out loss computed directly after each step, and the last step run.
    """
    tx = optax.sgd(lr)
    params = MODEL.init(jax.random.PRNGKey(0), X_TRAIN)
    opt_state = tx.init(params)

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def train_step(params, opt_state):
        grads = jax.grad(lambda p: jnp.mean((MODEL.apply(p, X_TRAIN) - Y_TRAIN) ** 2))(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    callbacks = CallbackList(hooks)
    callbacks.on_begin(1)
    expected, last = {}, 0
    try:
        for step in range(1, steps + 1):
            params, opt_state = train_step(params, opt_state)
            last = step
            expected[step] = _direct_eval_loss(params)
            # Deliver what was reported before the hooks run, so guards act at a known step.
            jt.flush()
            callbacks(step, params=params)
    finally:
        callbacks.on_end(last, params=params)
        jt.flush()
    return expected, last


def _eval(step, params, **context):
    return eval_metrics(params)


def test_eval_metrics_are_logged_at_the_due_steps_and_at_the_end():
    tracker = RecordingTracker()
    with jt.current_tracker(tracker):
        expected, _ = _run([Evaluate(_eval, every_steps=4)], 10)
    assert [step for step, _, _ in tracker.logs] == [4, 8, 10]  # 10: at_end
    for step, metrics, _ in tracker.logs:
        assert set(metrics) == {"eval/loss", "eval/max_error"}
        assert float(metrics["eval/loss"]) == pytest.approx(expected[step], rel=1e-5)
    assert float(tracker.logs[-1][1]["eval/loss"]) < float(tracker.logs[0][1]["eval/loss"])  # it learns


def test_at_end_does_not_repeat_a_due_last_step_and_can_be_off():
    with_end, without_end = RecordingTracker(), RecordingTracker()
    with jt.current_tracker(jt.NoopTracker()):
        _run([Evaluate(_eval, every_steps=3, tracker=with_end)], 6)
        _run([Evaluate(_eval, every_steps=4, tracker=without_end, at_end=False)], 6)
    assert [step for step, _, _ in with_end.logs] == [3, 6]
    assert [step for step, _, _ in without_end.logs] == [4]


def test_given_tracker_gets_the_metrics_and_the_current_one_does_not():
    given, current = RecordingTracker("given"), RecordingTracker("current")
    with jt.current_tracker(current):
        _run([Evaluate(_eval, on_steps=[2], prefix="holdout/", tracker=given, at_end=False)], 3)
    assert [(step, sorted(metrics)) for step, metrics, _ in given.logs] == [(2, ["holdout/loss", "holdout/max_error"])]
    assert current.logs == []


def test_early_stopping_on_eval_loss_stops_training():
    tracker = RecordingTracker()
    stopper = EarlyStopping("eval/loss", mode="min", patience=2)
    with jt.current_tracker(tracker), pytest.raises(StopTraining) as stopped:
        # No learning: the held-out loss never improves on the first evaluation's.
        _run([Evaluate(_eval, every_steps=2), stopper], 100, lr=0.0)
    # Evaluations at 2, 4 and 6; the one at 6 is delivered by step 7's flush, so the
    # stopper runs out of patience at step 7; on_end then evaluates step 7 too.
    assert stopped.value.step == 7 and stopper.best_step == 2
    assert [step for step, metrics, _ in tracker.logs if "eval/loss" in metrics] == [2, 4, 6, 7]


def test_early_stopping_keeps_training_while_the_eval_loss_improves():
    stopper = EarlyStopping("eval/loss", mode="min", patience=2)
    with jt.current_tracker(jt.NoopTracker()):
        expected, last = _run([Evaluate(_eval, every_steps=5), stopper], 30)
    assert last == 30 and stopper.best_step == 30
    assert stopper.best == pytest.approx(expected[30], rel=1e-5)


def test_eval_fn_must_return_a_dict():
    evaluate = Evaluate(lambda step, **_: 0.5, every_steps=1)
    with jt.current_tracker(RecordingTracker()), pytest.raises(TypeError, match="dict of metrics"):
        evaluate(1)
