"""Every callback at once, in one real Flax (Linen TrainState) + Optax training run through jt.train."""

from __future__ import annotations

import io
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn
from flax.training import train_state

import jaxtrack as jt
from jaxtrack.callbacks import (
    Checkpoint,
    EarlyStopping,
    Evaluate,
    LearningRateMonitor,
    Profile,
    ReportMetrics,
    ReportProgress,
    TerminateOnNaN,
)
from support.recording import RecordingTracker


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(1)(nn.relu(nn.Dense(32)(x)))[:, 0]


def test_every_callback_in_one_flax_optax_run(tmp_path):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(128, 4)), jnp.float32)
    y = jnp.asarray(np.sin(np.asarray(x) @ np.array([1.0, -1.0, 0.5, 2.0])), jnp.float32)
    schedule = optax.linear_schedule(0.05, 0.01, transition_steps=20)
    model = MLP()
    state = train_state.TrainState.create(
        apply_fn=model.apply,
        params=model.init(jax.random.PRNGKey(0), x),
        tx=optax.inject_hyperparams(optax.adam)(learning_rate=schedule),
    )

    @jt.jit(donate_argnums=0)
    def train_step(state, batch):
        bx, by = batch

        def loss_fn(params):
            return jnp.mean((state.apply_fn(params, bx) - by) ** 2)

        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        jt.jit_log({"loss": loss})
        return state.apply_gradients(grads=grads)

    def evaluate(step, *, state):
        return {"loss": jnp.mean((state.apply_fn(state.params, x) - y) ** 2)}

    def batches():
        for i in itertools.count():
            picked = np.random.default_rng(i).choice(128, size=32, replace=False)
            yield x[picked], y[picked]

    untrained = float(evaluate(0, state=state)["loss"])
    bar = io.StringIO()
    progress = ReportProgress(20, every_steps=5, file=bar)
    profile = Profile(str(tmp_path / "profile"), first_step=3, num_steps=2)
    checkpoint = Checkpoint(tmp_path / "ckpt", every_steps=10, keep=2)
    stopper = EarlyStopping("eval/loss", mode="min", patience=100)
    tracker = RecordingTracker()
    hooks = [
        ReportMetrics(train_step, every_steps=5, prefix="train/"),
        progress,
        LearningRateMonitor(every_steps=10),
        Evaluate(evaluate, every_steps=10),
        checkpoint,
        profile,
        TerminateOnNaN(),
        stopper,
    ]
    with jt.current_tracker(tracker):
        final = jt.train(train_step, state, batches(), 20, callbacks=hooks)
        jt.flush()

    by_step: dict[int, dict] = {}
    for step, metrics, _ in tracker.logs:
        by_step.setdefault(step, {}).update(metrics)
    assert [s for s in (5, 10, 15, 20) if "train/loss" in by_step.get(s, {})] == [5, 10, 15, 20]
    assert "steps_per_sec" in by_step[10]  # from the progress bar
    assert float(by_step[10]["hparams/learning_rate"]) == pytest.approx(float(schedule(9)), rel=1e-6)  # step 10 used it
    assert {s for s, m in by_step.items() if "eval/loss" in m} == {10, 20}
    evals = {s: float(by_step[s]["eval/loss"]) for s in (10, 20)}
    assert max(evals.values()) < untrained  # it trains
    assert "20/20" in bar.getvalue()
    assert checkpoint.all_steps() == [10, 20]
    assert list((tmp_path / "profile").rglob("*.xplane.pb"))
    assert stopper.best_step == min(evals, key=evals.get) and int(final.step) == 20
