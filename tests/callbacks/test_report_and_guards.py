"""ReportMetrics, TerminateOnNaN and EarlyStopping on a real small Flax/Optax training run."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn

import jaxtrack as jt
from jaxtrack.callbacks import CallbackList, EarlyStopping, ReportMetrics, StopTraining, TerminateOnNaN
from support.recording import RecordingTracker


class Regressor(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(1)(nn.relu(nn.Dense(16)(x)))[:, 0]


def _training(lr: float = 0.05):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(64, 4)), jnp.float32)
    y = jnp.asarray(x @ np.array([1.0, -2.0, 0.5, 3.0]), jnp.float32)
    model, tx = Regressor(), optax.sgd(lr)
    params = model.init(jax.random.PRNGKey(0), x)

    @jt.jit(donate_argnums=(0, 1))
    def train_step(params, opt_state, scale):
        def loss_fn(p):
            return jnp.mean((model.apply(p, x) * scale - y) ** 2)

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        jt.jit_log({"loss": loss})
        jt.jit_log({"grad_norm": optax.tree.norm(grads)}, reduce="max")
        return optax.apply_updates(params, updates), opt_state, loss

    return train_step, params, tx.init(params)


def _run(train_step, params, opt_state, hooks, steps, scale_at=lambda step: 1.0, flush_each_step=False):
    """A plain training loop with hooks; ``flush_each_step`` makes delivery of reports immediate.

    Guards act once the reporter has delivered a report; flushing after each
    step makes that moment deterministic, as a step slower than delivery would.
    """
    callbacks = CallbackList(hooks)
    callbacks.on_begin(1)
    losses = {}
    last = 0
    try:
        for step in range(1, steps + 1):
            params, opt_state, loss = train_step(params, opt_state, jnp.float32(scale_at(step)))
            losses[step] = loss
            last = step
            if flush_each_step:
                jax.block_until_ready(loss)
                jt.flush()
            callbacks(step)
    finally:
        callbacks.on_end(last)
        jt.flush()
    return {step: float(loss) for step, loss in losses.items()}, last


def test_report_metrics_reports_interval_means_and_timing_at_due_steps():
    tracker = RecordingTracker()
    train_step, params, opt_state = _training()
    with jt.current_tracker(tracker):
        losses, _ = _run(train_step, params, opt_state, [ReportMetrics(train_step, every_steps=5, prefix="train/")], 12)
    steps = [step for step, _, _ in tracker.logs]
    assert steps == [5, 10, 12]  # the last, partial interval is reported at the end
    for (step, metrics, _), first in zip(tracker.logs, [1, 6, 11], strict=True):
        expected = np.mean([losses[s] for s in range(first, step + 1)])
        assert metrics["train/loss"] == pytest.approx(expected, rel=1e-5)
        assert metrics["train/steps_per_sec"] > 0 and metrics["train/step_time_secs"] > 0
        assert "train/grad_norm" in metrics


def test_report_metrics_without_on_begin_times_from_the_first_step():
    tracker = RecordingTracker()
    train_step, params, opt_state = _training()
    report = ReportMetrics(train_step, every_steps=2, tracker=tracker)
    with jt.current_tracker(jt.NoopTracker()):
        for step in range(1, 5):
            params, opt_state, _ = train_step(params, opt_state, jnp.float32(1.0))
            report(step)
        jt.flush()
    assert [step for step, _, _ in tracker.logs] == [2, 4]
    assert "steps_per_sec" in tracker.logs[-1][1]


def test_report_metrics_leaves_the_first_step_compiling_out_of_the_timing():
    """Step 1 takes 10 s of the clock (compilation); steps/s is that of the steps after it."""
    tracker, now = RecordingTracker(), [100.0]
    train_step, params, opt_state = _training()
    report = ReportMetrics(train_step, every_steps=4, tracker=tracker, clock=lambda: now[0])
    callbacks = CallbackList([report])
    with jt.current_tracker(jt.NoopTracker()):
        callbacks.on_begin(1)
        for step in range(1, 9):
            params, opt_state, _ = train_step(params, opt_state, jnp.float32(1.0))
            now[0] += 10.0 if step == 1 else 0.5
            callbacks(step)
        callbacks.on_end(8)
        jt.flush()
    timing = [(step, metrics["steps_per_sec"], metrics["step_time_secs"]) for step, metrics, _ in tracker.logs]
    # Steps 2-4 in 1.5 s, then 5-8 in 2 s: 2 steps/s both times (not 4 steps in 11.5 s).
    assert timing == [(4, pytest.approx(2.0), pytest.approx(0.5)), (8, pytest.approx(2.0), pytest.approx(0.5))]


def test_report_metrics_needs_a_jaxtrack_jit_function():
    with pytest.raises(TypeError, match=r"jaxtrack\.jit"):
        ReportMetrics(jax.jit(lambda x: x), every_steps=1)


def test_terminate_on_nan_stops_cleanly_and_marks_the_run():
    tracker = RecordingTracker()
    train_step, params, opt_state = _training()
    hooks = [ReportMetrics(train_step, every_steps=2, prefix="train/"), TerminateOnNaN()]
    with jt.current_tracker(tracker), pytest.raises(StopTraining) as stopped:
        # From step 6 on the prediction is scaled by NaN: the loss is NaN.
        _run(
            train_step,
            params,
            opt_state,
            hooks,
            200,
            scale_at=lambda step: np.nan if step >= 6 else 1.0,
            flush_each_step=True,
        )
    # The report made at step 6 (steps 5-6) holds the first NaN; it is delivered
    # after step 6's hooks ran, so the guard sees it at step 7: late, not missed.
    assert stopped.value.reason == "train/loss is nan at step 6"
    assert stopped.value.step == 7
    assert any(summary.get("stopped_early") == stopped.value.reason for summary in tracker.summaries)


def test_terminate_on_nan_sees_a_nan_reported_at_the_very_end():
    tracker = RecordingTracker()
    train_step, params, opt_state = _training()
    hooks = [ReportMetrics(train_step, every_steps=100, prefix="train/"), TerminateOnNaN(keys=["train/loss"])]
    with jt.current_tracker(tracker):
        _run(train_step, params, opt_state, hooks, 4, scale_at=lambda step: np.nan if step == 4 else 1.0)
    assert {"nonfinite_metric": "train/loss", "nonfinite_at_step": 4} in tracker.summaries


def test_early_stopping_stops_after_patience_reports_without_improvement():
    tracker = RecordingTracker()
    train_step, params, opt_state = _training(lr=0.0)  # no learning: the loss never improves
    stopper = EarlyStopping("train/loss", mode="min", patience=3, min_delta=1e-6)
    hooks = [ReportMetrics(train_step, every_steps=2, prefix="train/"), stopper]
    with jt.current_tracker(tracker), pytest.raises(StopTraining) as stopped:
        _run(train_step, params, opt_state, hooks, 400, flush_each_step=True)
    assert "did not improve" in stopped.value.reason
    # Reports at 4, 6 and 8 did not improve on step 2's; each is seen a step later.
    assert stopper.best_step == 2 and stopped.value.step == 9
    assert stopper.waited == 4  # on_end then took in the partial interval at step 9


def test_early_stopping_keeps_going_while_improving():
    train_step, params, opt_state = _training(lr=0.05)
    stopper = EarlyStopping("train/loss", mode="min", patience=2)
    hooks = [ReportMetrics(train_step, every_steps=1, prefix="train/"), stopper]
    with jt.current_tracker(jt.NoopTracker()):
        _, last = _run(train_step, params, opt_state, hooks, 30, flush_each_step=True)
    assert last == 30 and stopper.best_step == 30


def test_a_nan_between_two_finite_reports_is_not_missed_when_they_arrive_together():
    # Three reports delivered in one batch: the guard sees the middle one too.
    @jt.jit
    def step(x):
        jt.jit_log({"loss": x})
        return x

    guard = TerminateOnNaN()
    with jt.current_tracker(jt.NoopTracker()):
        for i, value in enumerate([1.0, float("nan"), 2.0], start=1):
            step(jnp.float32(value))
            step.report(i)
        jt.flush()
        with pytest.raises(StopTraining, match=r"loss is nan at step 2"):
            guard(3)


def test_early_stopping_on_end_takes_in_the_last_reports():
    train_step, params, opt_state = _training(lr=0.05)
    stopper = EarlyStopping("train/loss", mode="min", patience=50)
    hooks = [ReportMetrics(train_step, every_steps=3, prefix="train/"), stopper]
    with jt.current_tracker(jt.NoopTracker()):
        losses, last = _run(train_step, params, opt_state, hooks, 10)
    assert last == 10
    # Reports at 3, 6, 9 and the partial interval at 10; the loss falls, so the last is best.
    assert stopper.best_step == 10 and stopper.best == pytest.approx(losses[10], rel=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"mode": "lowest"}, "mode"), ({"patience": 0}, "patience"), ({"min_delta": -1.0}, "min_delta")],
)
def test_early_stopping_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EarlyStopping("loss", **kwargs)
