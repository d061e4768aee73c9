"""LearningRateMonitor on real optax inject_hyperparams optimizers in a small jitted training loop."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxtrack as jt
from jaxtrack.callbacks import CallbackList
from jaxtrack.callbacks.hyperparams import LearningRateMonitor
from support.recording import RecordingTracker

SCHEDULE = optax.warmup_cosine_decay_schedule(0.0, 0.1, warmup_steps=4, decay_steps=20, end_value=0.01)


def _problem():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(32, 3)), jnp.float32)
    y = x @ jnp.array([1.0, -2.0, 0.5])
    return {"w": jnp.zeros(3), "b": jnp.zeros(())}, x, y


def _run(tx, hooks, steps, *, pass_opt_state=True):
    """A 1-indexed loop: at hook(step), ``step`` updates are done. The step donates its state."""
    params, x, y = _problem()

    # Donating the optimizer state frees its buffers at the next step: the
    # monitor must not hand the reporter arrays that may be gone by then.
    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def train_step(params, opt_state):
        def loss_fn(p):
            return jnp.mean((x @ p["w"] + p["b"] - y) ** 2)

        grads = jax.grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    opt_state = tx.init(params)
    callbacks = CallbackList(hooks)
    callbacks.on_begin(1)
    for step in range(1, steps + 1):
        params, opt_state = train_step(params, opt_state)
        callbacks(step, **({"opt_state": opt_state} if pass_opt_state else {}))
    callbacks.on_end(steps)
    jt.flush()
    return opt_state


def _logged(tracker, key):
    return {step: float(metrics[key]) for step, metrics, _ in tracker.logs if key in metrics}


def test_logged_learning_rates_follow_the_schedule():
    tracker = RecordingTracker()
    tx = optax.inject_hyperparams(optax.adam)(learning_rate=SCHEDULE)
    with jt.current_tracker(tracker):
        _run(tx, [LearningRateMonitor(every_steps=3)], 12)
    logged = _logged(tracker, "hparams/learning_rate")
    assert sorted(logged) == [3, 6, 9, 12]
    for step, value in logged.items():
        # After update `step`, the state holds the rate that update used: the schedule at count step - 1.
        assert value == pytest.approx(float(SCHEDULE(step - 1)), rel=1e-6)
    assert len(set(logged.values())) == 4  # the schedule moves: a stale value would show
    assert _logged(tracker, "hparams/b1") == dict.fromkeys([3, 6, 9, 12], pytest.approx(0.9))


def test_found_inside_a_chain_with_a_getter_and_names():
    tracker = RecordingTracker()
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.inject_hyperparams(optax.sgd)(learning_rate=SCHEDULE))
    latest = {}
    monitor = LearningRateMonitor(lambda: latest["opt_state"], on_steps=[2, 5], prefix="opt/", names=["learning_rate"])

    def remember(step, opt_state):
        latest["opt_state"] = opt_state

    with jt.current_tracker(tracker):
        _run(tx, [remember, monitor], 6)
    assert _logged(tracker, "opt/learning_rate") == {
        2: pytest.approx(float(SCHEDULE(1))),
        5: pytest.approx(float(SCHEDULE(4))),
    }
    assert all(set(metrics) == {"opt/learning_rate"} for _, metrics, _ in tracker.logs)


def test_several_injected_states_are_named_by_their_place():
    tracker = RecordingTracker()
    tx = optax.multi_transform(
        {
            "weights": optax.inject_hyperparams(optax.sgd)(learning_rate=0.5),
            "bias": optax.inject_hyperparams(optax.sgd)(learning_rate=optax.linear_schedule(1.0, 0.0, 10)),
        },
        {"w": "weights", "b": "bias"},
    )
    with jt.current_tracker(tracker):
        _run(tx, [LearningRateMonitor(on_steps=[4], names=["learning_rate"])], 4)
    assert tracker.logs[0][0] == 4
    assert {key: float(value) for key, value in tracker.logs[0][1].items()} == {
        "hparams/weights/learning_rate": pytest.approx(0.5),
        "hparams/bias/learning_rate": pytest.approx(0.7),  # linear from 1.0 to 0.0 over 10 counts, at count 3
    }


def test_without_inject_hyperparams_the_error_says_what_to_do():
    monitor = LearningRateMonitor(every_steps=1)
    with jt.current_tracker(RecordingTracker()), pytest.raises(ValueError, match=r"optax\.inject_hyperparams\("):
        _run(optax.adam(1e-3), [monitor], 1)


def test_without_an_optimizer_state_the_error_says_how_to_give_it():
    tx = optax.inject_hyperparams(optax.adam)(learning_rate=1e-3)
    with jt.current_tracker(RecordingTracker()), pytest.raises(ValueError, match=r"opt_state=\.\.\."):
        _run(tx, [LearningRateMonitor(every_steps=1)], 1, pass_opt_state=False)
