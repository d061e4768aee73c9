"""The Tracker interface, CompositeTracker, NoopTracker and the step rule."""

from __future__ import annotations

import pytest

import jaxtrack as jt
from jaxtrack.trackers import StepCounter
from support.recording import RecordingTracker


def test_tracker_cannot_be_made_without_its_methods():
    class Incomplete(jt.Tracker):
        def log(self, metrics, *, step=None, commit=None):
            pass

    with pytest.raises(TypeError, match="abstract"):
        Incomplete()  # type: ignore[abstract]


def test_step_counter_follows_wandb_rule():
    counter = StepCounter()
    assert [counter.resolve(None, None) for _ in range(3)] == [0, 1, 2]
    assert counter.resolve(None, False) == 3
    assert counter.resolve(None, None) == 3  # the open step is completed
    assert counter.resolve(None, None) == 4
    assert counter.resolve(100, None) == 100
    assert counter.resolve(None, None) == 101
    assert counter.resolve(5, None) == 5  # going back is allowed (a resumed run)
    assert counter.resolve(None, None) == 6


@pytest.mark.parametrize("bad", [1.5, "3", True, -1, None.__class__])
def test_step_counter_rejects_bad_steps(bad):
    with pytest.raises((TypeError, ValueError), match="step"):
        StepCounter().resolve(bad, None)


def test_step_counter_accepts_numpy_and_jax_integers():
    import jax.numpy as jnp
    import numpy as np

    counter = StepCounter()
    assert counter.resolve(np.int64(7), None) == 7
    assert counter.resolve(jnp.int32(9), None) == 9


def test_composite_fans_out_with_one_step_for_all():
    late = RecordingTracker("late")
    early = RecordingTracker("early")
    early.log({"warmup": 1.0}, step=41)  # its own history must not change the composite's steps
    both = jt.CompositeTracker([early, late])
    both.log({"a": 1.0})
    both.log({"b": 2.0}, commit=False)
    both.log({"c": 3.0})
    both.log_summary({"s": 1})
    both.log_hyperparameters({"h": 2})
    both.flush()
    both.finish()
    for tracker in (early, late):
        assert [(step, m) for step, m, _ in tracker.logs[-3:]] == [(0, {"a": 1.0}), (1, {"b": 2.0}), (1, {"c": 3.0})]
        assert tracker.summaries == [{"s": 1}] and tracker.hparams == [{"h": 2}]
        assert (tracker.flushed, tracker.finished) == (1, 1)


def test_composite_failure_does_not_starve_the_others():
    class Broken(RecordingTracker):
        def log(self, metrics, *, step=None, commit=None):
            raise OSError("disk full")

    healthy = RecordingTracker("healthy")
    both = jt.CompositeTracker([Broken("broken"), healthy])
    both.log({"loss": 1.0}, step=0)  # the failure stays with the broken backend: counted, not raised here
    with pytest.warns(jt.DataLossWarning, match=r"broken\.log failed x1"):
        both.finish()
    assert healthy.logs == [(0, {"loss": 1.0}, None)] and healthy.finished == 1


def test_composite_rejects_non_trackers():
    with pytest.raises(TypeError, match="Tracker instances"):
        jt.CompositeTracker([jt.NoopTracker(), "wandb"])  # type: ignore[list-item]


def test_noop_accepts_every_value_a_backend_can_record(tmp_path):
    noop = jt.NoopTracker()
    noop.log({"x": 1.0, "note": "text", "w": [1.0, 2.0]}, step=0)
    with pytest.raises(TypeError, match="'bad'"):  # one front door: a value no backend records is refused at the call
        noop.log({"bad": object()}, step=1)
    noop.log_summary({})
    noop.log_hyperparameters({"a": 1})
    noop.log_artifact(tmp_path)
    noop.flush()
    noop.finish()
    assert noop.name == "noop"
