"""Every way into a tracker keeps one order and loses nothing: the one-door rule, checked door by door.

Each door is interleaved with ``jaxtrack.log`` (even steps through ``jt.log``,
odd steps through the door) into a real local store and real TensorBoard event
files, and every value is read back at its step. A value logged later is never
recorded before, or instead of, one logged earlier. The first tests are the
issue's reproductions: each lost values before the pipeline had one door.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxtrack
import jaxtrack as jt
from jaxtrack.callbacks import Evaluate, ReportMetrics
from jaxtrack.metric_writer import as_metric_writer
from jaxtrack.store import RunStore
from jaxtrack.trackers.local import LocalTracker
from support.backends import local_history, local_spec, tb_accumulator, tb_series, tb_spec

STEPS = 20


# ---- the reproductions ----------------------------------------------------------------------


def test_a_tracker_method_called_directly_keeps_its_place_behind_queued_reports(tmp_path: Path) -> None:
    """Case 1: the direct values were written at once, then superseded by the queued lower steps."""
    store = tmp_path / "runs.db"
    jt.init_tracker([local_spec(store), tb_spec(tmp_path / "tb")], run_id="direct")
    for step in range(100):
        jt.log({"loss": float(step)}, step=step)
    jt.current_tracker().log({"direct": 1.0}, step=100)  # the seed's own docstrings log this way
    jt.get_tracker("local").log({"direct": 2.0}, step=101)  # a backend inside the composite
    jt.finish()
    history = local_history(store, "direct")
    assert sorted(history) == list(range(102))
    assert all(history[step] == {"loss": float(step)} for step in range(100))
    assert history[100] == {"direct": 1.0} and history[101] == {"direct": 2.0}
    with RunStore(store) as runs:
        assert runs.superseded("direct") == []  # nothing was written out of order
    accumulator = tb_accumulator(tmp_path / "tb" / "direct")
    assert tb_series(accumulator, "direct") == [(100, 1.0)]  # the composite's call reached TensorBoard too
    assert [step for step, _ in tb_series(accumulator, "loss")] == list(range(100))


def test_finishing_the_tracker_object_writes_out_the_reports_queued_before_it(tmp_path: Path) -> None:
    """Case 2: ``tracker.finish()`` ran before the queued interval reports, which were then refused."""
    store = tmp_path / "runs.db"
    tracker = jt.init_tracker([local_spec(store), tb_spec(tmp_path / "tb")], run_id="interval")

    @jt.jit
    def step(x):
        jt.jit_log({"x": x})
        return x + 1

    report = ReportMetrics(step, every_steps=10, timing=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", jt.DataLossWarning)  # nothing may be lost
        with jt.current_tracker(tracker):
            x = jnp.float32(0)
            for i in range(1, 201):
                x = step(x)
                report(i)
            tracker.finish()
    history = local_history(store, "interval")
    assert sorted(history) == list(range(10, 201, 10))  # 20 of 20 interval reports
    assert all(history[end] == {"x": float(end - 5) - 0.5} for end in range(20, 201, 10))
    assert [s for s, _ in tb_series(tb_accumulator(tmp_path / "tb" / "interval"), "x")] == list(range(10, 201, 10))
    with RunStore(store) as runs:
        assert runs.run("interval").status == "finished"


def test_with_tracker_makes_it_current_restores_the_previous_and_finishes_the_run(tmp_path: Path) -> None:
    """Case 3: Levanter's ``with tracker:`` dropped every value with a NoTrackerWarning."""
    store = tmp_path / "runs.db"
    outer = LocalTracker(store, run_id="outer")
    with jt.current_tracker(outer):
        with warnings.catch_warnings():
            warnings.simplefilter("error", jt.NoTrackerWarning)
            with LocalTracker(store, run_id="inner") as inner:
                assert jt.current_tracker() is inner
                for step in range(5):
                    jt.log({"x": float(step)}, step=step)
                inner.log({"y": 1.0}, step=5)
            assert jt.current_tracker() is outer  # the previous tracker is current again
        jt.log({"z": 1.0}, step=0)
    assert local_history(store, "inner") == {**{s: {"x": float(s)} for s in range(5)}, 5: {"y": 1.0}}
    with RunStore(store) as runs:
        assert runs.run("inner").status == "finished"  # leaving the block finished the run
        assert runs.run("outer").status == "running"  # a scope only flushes: that run goes on
    with pytest.raises(jt.FinishedTrackerError, match="is finished"):
        inner.log({"x": 9.0}, step=9)  # refused at the call, not lost later
    outer.finish()
    assert local_history(store, "outer") == {0: {"z": 1.0}}


@pytest.mark.parametrize(("error", "status"), [(ValueError, "failed"), (KeyboardInterrupt, "killed")])
def test_leaving_with_tracker_by_an_error_marks_the_run_and_keeps_everything(
    tmp_path: Path, error: type[BaseException], status: str
) -> None:
    store = tmp_path / "runs.db"
    with pytest.raises(error), LocalTracker(store, run_id="raised") as tracker:
        jt.log({"x": 1.0}, step=0)
        raise error
    assert jaxtrack.run.current() is None and jaxtrack.run.is_ended(tracker)
    assert local_history(store, "raised") == {0: {"x": 1.0}}
    with RunStore(store) as runs:
        assert runs.run("raised").status == status


VALUES_NO_BACKEND_RECORDS = {
    "a list of text": ["a", "b"],
    "a nested list of text": [[1.0], ["b"]],
    "a ragged list": [[1.0, 2.0], [3.0]],
    "an image of text": jt.Image(np.array([["a", "b"], ["c", "d"]])),
    "an image of objects": jt.Image(np.array([[object()]], dtype=object)),
    "a histogram of text counts": jt.Histogram(np.array([0.0, 1.0, 2.0]), np.array(["1", "2"]), 0.0, 2.0, 3, 1.0, 1.0),
    "a histogram with one limit too few": jt.Histogram(np.array([0.0, 1.0]), np.array([1, 2]), 0.0, 2.0, 3, 1.0, 1.0),
    "a histogram with a text sum": jt.Histogram(np.array([0.0, 1.0]), np.array([1]), 0.0, 1.0, 1, "1", 1.0),
}


@pytest.mark.parametrize("value", list(VALUES_NO_BACKEND_RECORDS.values()), ids=list(VALUES_NO_BACKEND_RECORDS))
@pytest.mark.parametrize("door", ["jt.log", "tracker.log", "jt.log_summary", "writer.write_scalars"])
def test_a_value_no_backend_records_is_refused_at_the_call_naming_its_key(
    tmp_path: Path, value: Any, door: str
) -> None:
    """Case 7: such values passed the caller-side check, then failed in every backend, and the report was lost."""
    store = tmp_path / "runs.db"
    tracker = jt.init_tracker([local_spec(store), tb_spec(tmp_path / "tb")], run_id="refused")
    calls: dict[str, Callable[[dict[str, Any]], None]] = {
        "jt.log": lambda metrics: jt.log(metrics, step=1),
        "tracker.log": lambda metrics: tracker.log(metrics, step=1),
        "jt.log_summary": jt.log_summary,
        "writer.write_scalars": lambda metrics: as_metric_writer(tracker).write_scalars(1, metrics),
    }
    with pytest.raises(TypeError, match="'k'"):
        calls[door]({"ok": 1.0, "k": value})
    calls[door]({"ok": 2.0})  # the refused call used up nothing
    with warnings.catch_warnings():
        warnings.simplefilter("error", jt.DataLossWarning)
        jt.finish()
    if door == "jt.log_summary":
        with RunStore(store) as runs:
            assert runs.summary("refused") == {"ok": 2.0}
    else:
        assert local_history(store, "refused") == {1: {"ok": 2.0}}


# ---- every door, interleaved with jt.log ------------------------------------------------------------


def _eager_fallback_step() -> Callable[[int], None]:
    @jax.jit
    def fallback(x, step):
        jt.jit_log({"door": x}, step=step)  # a plain jax.jit: jit_log's host callback
        return x

    def log(step: int) -> None:
        fallback(jnp.float32(step), step)
        jax.effects_barrier()  # the callback logs when the device runs it: wait, so it comes before the next log

    return log


class Doors:
    """Each door logs ``{"door": float(step)}`` at ``step``; ``setup`` starts what it needs."""

    def __init__(self, tmp_path: Path) -> None:
        self.store = tmp_path / "runs.db"
        self.tb = tmp_path / "tb"

    def start(self) -> jt.Tracker:
        return jt.init_tracker([local_spec(self.store), tb_spec(self.tb)], run_id="doors")

    def make(self, name: str, tracker: jt.Tracker) -> Callable[[int], None]:
        if name == "current tracker's method":
            return lambda step: jt.current_tracker().log({"door": float(step)}, step=step)
        if name == "the tracker object":
            return lambda step: tracker.log({"door": float(step)}, step=step)
        if name == "a backend inside the composite":
            return lambda step: jt.get_tracker("local").log({"door": float(step)}, step=step)
        if name == "a CLU writer":
            writer = as_metric_writer(tracker)
            return lambda step: writer.write_scalars(step, {"door": float(step)})
        if name == "Evaluate":
            evaluate = Evaluate(lambda step, **_: {"door": jnp.float32(step)}, every_steps=2, prefix="", at_end=False)
            return lambda step: evaluate.evaluate(step)
        if name == "an in-graph report":

            @jt.jit
            def step_fn(x):
                jt.jit_log({"door": x})
                return x

            def report(step: int) -> None:
                step_fn(jnp.float32(step))
                step_fn.report(step)

            return report
        if name == "jit_log's host callback":
            return _eager_fallback_step()
        if name == "a tracker held in a current_tracker scope":
            return lambda step: _in_scope(tracker, step)
        raise AssertionError(name)


def _in_scope(tracker: jt.Tracker, step: int) -> None:
    with jt.current_tracker(tracker):  # flushes on the way out; the run goes on
        jt.log({"door": float(step)}, step=step)


DOORS = [
    "current tracker's method",
    "the tracker object",
    "a backend inside the composite",
    "a CLU writer",
    "Evaluate",
    "an in-graph report",
    "jit_log's host callback",
    "a tracker held in a current_tracker scope",
]


@pytest.fixture
def doors(tmp_path: Path) -> Iterator[Doors]:
    yield Doors(tmp_path)


@pytest.mark.parametrize("name", DOORS)
def test_every_door_interleaved_with_jt_log_records_every_value_at_its_step_in_order(doors: Doors, name: str) -> None:
    tracker = doors.start()
    door = doors.make(name, tracker)
    for step in range(STEPS):
        if step % 2:
            door(step)
        else:
            jt.log({"main": float(step)}, step=step)
    with warnings.catch_warnings():
        warnings.simplefilter("error", jt.DataLossWarning)
        jt.finish()
    expected = {step: {"door" if step % 2 else "main": float(step)} for step in range(STEPS)}
    assert local_history(doors.store, "doors") == expected
    with RunStore(doors.store) as runs:
        assert runs.superseded("doors") == []
    if name != "a backend inside the composite":  # that door reaches the local store only
        accumulator = tb_accumulator(doors.tb / "doors")
        assert tb_series(accumulator, "door") == [(s, float(s)) for s in range(1, STEPS, 2)]
        assert tb_series(accumulator, "main") == [(s, float(s)) for s in range(0, STEPS, 2)]


def test_summaries_hyperparameters_and_artifacts_through_either_door_keep_their_order(tmp_path: Path) -> None:
    store = tmp_path / "runs.db"
    tracker = jt.init_tracker([local_spec(store), tb_spec(tmp_path / "tb")], run_id="others")
    notes = tmp_path / "notes.txt"
    for version in range(1, 5):
        notes.write_text(f"version {version}")
        if version % 2:
            jt.log_summary({"best": float(version)})
            jt.log_hyperparameters({"lr": float(version)})
            jt.log_artifact(notes, name="notes")
        else:
            tracker.log_summary({"best": float(version)})
            tracker.log_hyperparameters({"lr": float(version)})
            jt.get_tracker("local").log_artifact(notes, name="notes")
    jt.flush()
    tracker.finish()
    with RunStore(store) as runs:
        assert runs.summary("others") == {"best": 4.0}  # the last one logged, whichever door
        assert runs.config("others") == {"lr": 4.0}
        artifacts = runs.artifacts("others")
    assert [a["version"] for a in artifacts] == [1, 2, 3, 4]
    assert [Path(a["path"]).read_text() for a in artifacts] == [f"version {v}" for v in range(1, 5)]


def test_a_users_own_tracker_gets_the_one_door_without_doing_anything(tmp_path: Path) -> None:
    calls: list[tuple[str, Any]] = []

    class Mine(jt.Tracker):  # the seed's interface, nothing more
        name = "mine"

        def log(self, metrics, *, step=None, commit=None):
            calls.append(("log", (step, dict(metrics))))

        def log_summary(self, metrics):
            calls.append(("summary", dict(metrics)))

        def log_hyperparameters(self, hparams):
            calls.append(("hparams", dict(hparams)))

        def log_artifact(self, artifact_path, *, name=None, type=None):
            calls.append(("artifact", name))

        def finish(self):
            calls.append(("finish", None))

    mine = Mine()
    jt.init_tracker([local_spec(tmp_path / "runs.db"), mine], run_id="mine")
    jt.log({"a": 1.0}, step=0)
    mine.log({"b": {"c": jnp.float32(2.0)}}, step=1)  # nested, a JAX array: checked at the call, fetched later
    jt.log({"a": 3.0})  # no step: the one after the last logged to the composite
    mine.log_summary({"best": 1.0})
    with pytest.raises(TypeError, match="'bad'"):
        mine.log({"bad": object()}, step=2)
    jt.finish()
    assert calls == [
        ("log", (0, {"a": 1.0})),
        ("log", (1, {"b/c": 2.0})),  # flat keys, host values
        ("log", (1, {"a": 3.0})),
        ("summary", {"best": 1.0}),
        ("finish", None),
    ]
