"""ReportProgress: a real tqdm bar, driven by a controllable clock, fed by reported metrics."""

from __future__ import annotations

import io
import re

import jax.numpy as jnp
import pytest

import jaxtrack as jt
from jaxtrack.callbacks import CallbackList
from jaxtrack.callbacks.progress import ReportProgress
from support.recording import RecordingTracker


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@jt.jit
def _halve(x):
    jt.jit_log({"train/loss": x})
    return x * 0.5


def _frames(out: io.StringIO) -> list[str]:
    """The bar's successive renderings (tqdm redraws a text bar in place with ``\\r``)."""
    return [frame.strip() for frame in re.split(r"[\r\n]", out.getvalue()) if frame.strip()]


def _train(hooks, clock, steps, secs_per_step, *, begin=True):
    """Steps that report their loss each step; the clock advances ``secs_per_step`` a step."""
    callbacks = CallbackList(hooks)
    if begin:
        callbacks.on_begin(1)
    x = jnp.float32(8.0)
    for step in range(1, steps + 1):
        x = _halve(x)
        _halve.report(step)
        jt.flush()  # the report is delivered before the hooks run, for a deterministic bar
        clock.now += secs_per_step
        callbacks(step)
    callbacks.on_end(steps)
    jt.flush()


def test_bar_shows_steps_rate_from_the_clock_eta_and_latest_metric():
    out, clock = io.StringIO(), FakeClock()
    progress = ReportProgress(10, every_steps=2, every_secs=None, file=out, clock=clock)
    with jt.current_tracker(RecordingTracker()):
        _train([progress], clock, 6, secs_per_step=0.25)
    frames = _frames(out)
    assert frames[0].startswith("0%") and "0/10" in frames[0]
    # Redrawn at steps 2, 4 and 6: 2 steps per 0.5 s of the fake clock is 4 steps/s,
    # so the 4 steps left after step 6 take 1 s.
    at_4 = next(frame for frame in frames if "4/10" in frame)
    assert "4.00steps/s" in at_4
    last = frames[-1]
    assert "6/10" in last and "4.00steps/s" in last and "00:01<00:01" in last
    # The losses reported were 8, 4, 2, 1, 0.5, 0.25: step 6's is shown.
    assert "train/loss=0.25" in last
    assert progress.steps_per_sec == pytest.approx(4.0)
    assert progress.bar is None  # closed by on_end


def test_steps_per_sec_reaches_the_tracker_at_the_due_steps():
    tracker, clock = RecordingTracker(), FakeClock()
    progress = ReportProgress(9, every_steps=3, every_secs=None, file=io.StringIO(), clock=clock)
    with jt.current_tracker(tracker):
        _train([progress], clock, 9, secs_per_step=0.5)
    rates = [(step, metrics["steps_per_sec"]) for step, metrics, _ in tracker.logs if "steps_per_sec" in metrics]
    assert rates == [(3, pytest.approx(2.0)), (6, pytest.approx(2.0)), (9, pytest.approx(2.0))]


def test_every_secs_redraws_by_the_clock_and_without_on_begin():
    out, clock = io.StringIO(), FakeClock()
    progress = ReportProgress(None, every_secs=1.0, write_to_tracker=False, file=out, clock=clock)
    tracker = RecordingTracker()
    with jt.current_tracker(tracker):
        # A plain loop calling hook(step) only: the bar starts at step 1. At 0.4 s a
        # step, the schedule is due at step 3 (1.2 s after it started) and at step 6
        # (1.2 s after step 3; step 5 is only 0.8 s after it).
        _train([progress], clock, 7, secs_per_step=0.4, begin=False)
    counts = [re.match(r"(\d+)steps", frame).group(1) for frame in _frames(out) if re.match(r"\d+steps", frame)]
    assert counts[:3] == ["1", "3", "6"]  # no total: a counter, not a percentage
    assert counts[-1] == "7"  # on_end counts the last step
    # From step 3 to 6: 3 steps in 1.2 s.
    assert progress.steps_per_sec == pytest.approx(2.5)
    assert not any("steps_per_sec" in metrics for _, metrics, _ in tracker.logs)


def test_metrics_limits_what_the_bar_shows():
    @jt.jit
    def step_fn(x):
        jt.jit_log({"train/loss": x, "train/other": x + 1})
        return x

    out, clock = io.StringIO(), FakeClock()
    progress = ReportProgress(2, every_steps=1, metrics=["train/other"], file=out, clock=clock)
    with jt.current_tracker(RecordingTracker()):
        progress.on_begin(1)
        step_fn(jnp.float32(3.0))
        step_fn.report(1)
        jt.flush()
        clock.now += 1.0
        progress(1)
        progress.on_end(1)
    last = _frames(out)[-1]
    assert "train/other=4" in last and "train/loss" not in last and "steps_per_sec" not in last


def test_bad_total():
    with pytest.raises(ValueError, match="num_train_steps"):
        ReportProgress(-1)


def test_the_first_step_compiling_is_left_out_of_steps_per_sec():
    """Step 1 takes 10 s (compilation); the rate shown and logged is that of the steps after it."""
    tracker, clock, out = RecordingTracker(), FakeClock(), io.StringIO()
    progress = ReportProgress(7, every_steps=3, every_secs=None, file=out, clock=clock)
    callbacks = CallbackList([progress])
    with jt.current_tracker(tracker):
        callbacks.on_begin(1)
        for step in range(1, 8):
            clock.now += 10.0 if step == 1 else 0.5
            callbacks(step)
        callbacks.on_end(7)
        jt.flush()
    rates = [(step, metrics["steps_per_sec"]) for step, metrics, _ in tracker.logs if "steps_per_sec" in metrics]
    # Due at 3 (steps 2-3 in 1 s) and 6 (steps 4-6 in 1.5 s): 2 steps/s, not 3 steps in 11 s.
    assert rates == [(3, pytest.approx(2.0)), (6, pytest.approx(2.0))]
    assert "2.00steps/s" in _frames(out)[-1]
