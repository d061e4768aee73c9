"""The module-level functions: current tracker, logging, look-up, finish, configuration, init_tracker."""

from __future__ import annotations

import dataclasses
import enum
import os
import pathlib
import subprocess
import sys
import threading
import warnings

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import yaml

import jaxtrack as jt
from jaxtrack import ids
from support.recording import RecordingTracker


def test_current_tracker_set_get_and_restore():
    outer, inner = RecordingTracker("outer"), RecordingTracker("inner")
    jt.current_tracker(outer)
    assert jt.current_tracker() is outer
    with jt.current_tracker(inner) as entered:
        assert entered is inner
        assert jt.current_tracker() is inner
        jt.log({"x": 1.0}, step=3)
    assert jt.current_tracker() is outer
    assert inner.logs == [(3, {"x": 1.0}, None)]
    assert inner.flushed == 1  # leaving the scope writes out what the tracker buffered
    assert outer.logs == []


def test_current_tracker_restores_previous_on_exception():
    outer, inner = RecordingTracker("outer"), RecordingTracker("inner")
    jt.current_tracker(outer)
    with pytest.raises(ValueError), jt.current_tracker(inner):
        raise ValueError("boom")
    assert jt.current_tracker() is outer


def test_current_tracker_rejects_non_tracker():
    with pytest.raises(TypeError, match="Tracker"):
        jt.current_tracker("wandb")  # type: ignore[call-overload]


def test_module_functions_reach_a_user_tracker(tmp_path):
    tracker = RecordingTracker()
    artifact = tmp_path / "weights.bin"
    artifact.write_bytes(b"\x00\x01")
    with jt.current_tracker(tracker):
        jt.log({"train": {"loss": 0.5}}, step=1, commit=False)
        jt.log_summary({"best": {"loss": 0.25}})
        jt.log_hyperparameters({"opt": {"lr": 0.1}, "batch": 8})
        jt.log_artifact(artifact, name="weights", type="model")
    assert tracker.logs == [(1, {"train/loss": 0.5}, False)]
    assert tracker.summaries == [{"best/loss": 0.25}]
    assert tracker.hparams == [{"opt/lr": 0.1, "batch": 8}]
    assert tracker.artifacts == [(str(artifact), "weights", "model", b"\x00\x01")]


def test_log_artifact_missing_path_is_a_clear_error(tmp_path):
    with jt.current_tracker(RecordingTracker()), pytest.raises(FileNotFoundError, match=r"nope\.txt"):
        jt.log_artifact(tmp_path / "nope.txt")


def test_calls_reach_the_tracker_off_the_training_thread_with_host_values():
    # The training thread only queues; the dispatcher copies arrays to the host, normalises them once,
    # and the backend's own thread calls it with flat host values: numbers, and arrays as histograms.
    threads = []

    class ThreadRecorder(RecordingTracker):
        histogram_bins = 64  # as a backend that writes histograms gets them

        def log(self, metrics, *, step=None, commit=None):
            threads.append(threading.current_thread().name)
            super().log(metrics, step=step, commit=commit)

    tracker = ThreadRecorder()
    with jt.current_tracker(tracker):
        jt.log({"x": jnp.arange(3.0), "y": {"z": jnp.ones(())}}, step=0)
    assert threads == [f"jaxtrack-{tracker.name}"]  # the backend's own delivery thread, not the training one
    logged = tracker.logs[0][1]
    assert isinstance(logged["x"], jt.Histogram)
    assert (logged["x"].num, logged["x"].min, logged["x"].max, logged["x"].sum) == (3, 0.0, 2.0, 3.0)
    assert logged["y/z"] == 1.0 and type(logged["y/z"]) is float


def test_calls_arrive_in_order_with_their_steps():
    tracker = RecordingTracker()
    with jt.current_tracker(tracker):
        for step in range(200):
            jt.log({"i": jnp.asarray(step) if step % 2 else step}, step=step)
        jt.log_summary({"done": 1})
    assert [step for step, _, _ in tracker.logs] == list(range(200))
    assert [int(m["i"]) for _, m, _ in tracker.logs] == list(range(200))
    assert tracker.summaries == [{"done": 1}]


def test_bad_values_and_steps_fail_on_the_calling_thread():
    with jt.current_tracker(RecordingTracker()):
        with pytest.raises(TypeError, match="'a/b'"):
            jt.log({"a": {"b": object()}}, step=0)
        with pytest.raises(TypeError, match="step"):
            jt.log({"a": 1.0}, step=1.5)
        with pytest.raises(ValueError, match="step"):
            jt.log({"a": 1.0}, step=-3)
        with pytest.raises(TypeError, match="mapping"):
            jt.log_hyperparameters([("lr", 1)])


def test_a_failing_backend_is_reported_and_counted_not_raised(caplog):
    class Failing(RecordingTracker):
        def log(self, metrics, *, step=None, commit=None):
            raise OSError("backend down")

    failing = Failing("failing")
    with pytest.warns(RuntimeWarning, match=r"failing\.log failed x3"):
        jt.current_tracker(failing)
        for step in range(3):
            jt.log({"loss": 1.0}, step=step)  # does not raise on the training thread
        jt.finish()
    errors = [r for r in caplog.records if "failing" in r.getMessage() and r.levelname == "ERROR"]
    assert len(errors) == 1  # reported once, then counted


def test_no_tracker_every_function_warns_once_and_drops(tmp_path):
    artifact = tmp_path / "a.txt"
    artifact.write_text("x")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert isinstance(jt.current_tracker(), jt.NoopTracker)
        jt.log({"loss": 1.0}, step=0)
        jt.log_summary({"best": 1.0})
        jt.log_hyperparameters({"lr": 1.0})
        jt.log_artifact(artifact)
        jt.log_configuration({"lr": 1.0})
        jt.finish()
    no_tracker = [w for w in caught if issubclass(w.category, jt.NoTrackerWarning)]
    assert len(no_tracker) == 1
    assert "init_tracker" in str(no_tracker[0].message)


def test_no_tracker_warning_comes_back_after_a_tracker_was_set_and_finished():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        jt.log({"a": 1.0})
        jt.current_tracker(RecordingTracker())
        jt.log({"a": 1.0})
        jt.finish()
        jt.log({"a": 1.0})
    assert sum(issubclass(w.category, jt.NoTrackerWarning) for w in caught) == 1


def test_get_tracker_finds_nested_and_names_the_others():
    a, b, c = RecordingTracker("a"), RecordingTracker("b"), RecordingTracker("c")
    jt.current_tracker(jt.CompositeTracker([a, jt.CompositeTracker([b, c])]))
    assert jt.get_tracker("c") is c
    assert jt.get_tracker("a") is a
    with pytest.raises(KeyError) as info:
        jt.get_tracker("wandb")
    message = str(info.value)
    assert "'wandb'" in message
    for name in ("'a'", "'b'", "'c'", "'composite'"):
        assert name in message


def test_get_tracker_without_tracker_is_a_key_error():
    with pytest.raises(KeyError, match="no tracker is set"):
        jt.get_tracker("wandb")


def test_finish_finishes_and_unsets():
    tracker = RecordingTracker()
    jt.current_tracker(tracker)
    jt.finish()
    assert tracker.finished == 1
    with pytest.warns(jt.NoTrackerWarning):
        assert isinstance(jt.current_tracker(), jt.NoopTracker)


def test_tracker_context_manager_finishes_and_unsets():
    with jt.init_tracker(RecordingTracker()) as tracker:
        assert jt.current_tracker() is tracker
    assert tracker.finished == 1
    with pytest.warns(jt.NoTrackerWarning):
        jt.current_tracker()


def test_unfinished_current_tracker_is_finished_at_exit(tmp_path):
    # A script that never calls jt.finish() still gets its data written.
    marker = tmp_path / "finished.txt"
    script = f"""
import jaxtrack as jt

class Marker(jt.NoopTracker):
    def finish(self):
        open({str(marker)!r}, "a").write("finished\\n")

jt.current_tracker(Marker())
jt.log({{"loss": 1.0}}, step=0)
"""
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    assert marker.read_text() == "finished\n"


def test_log_rejects_tracers_with_a_pointer_to_jit_log():
    import jax

    tracker = jt.ConsoleTracker(logger="test.tracers")

    @jax.jit
    def step(x):
        tracker.log({"x": x}, step=0)
        return x

    with pytest.raises(TypeError, match="jit_log"):
        step(jnp.ones(()))


@dataclasses.dataclass
class Optimizer:
    name: str = "adam"
    lr: float = 1e-3


class Mode(enum.Enum):
    FAST = 1


@dataclasses.dataclass
class TrainConfig:
    optimizer: Optimizer = dataclasses.field(default_factory=Optimizer)
    layers: tuple[int, ...] = (64, 32)
    mode: Mode = Mode.FAST
    data: pathlib.Path = pathlib.Path("data/digits")
    seed: np.int64 = dataclasses.field(default_factory=lambda: np.int64(7))


def _logged_config(tracker: RecordingTracker) -> tuple[dict, dict]:
    ((path, name, type_, content),) = tracker.artifacts
    assert (name, type_) == ("config", "config")
    assert path.endswith("config.yaml")
    assert content is not None
    return tracker.hparams[-1], yaml.safe_load(content)


def test_log_configuration_dataclass():
    tracker = RecordingTracker()
    with jt.current_tracker(tracker):
        jt.log_configuration(TrainConfig())
    hparams, document = _logged_config(tracker)
    assert hparams == {
        "optimizer/name": "adam",
        "optimizer/lr": 1e-3,
        "layers": [64, 32],
        "mode": "FAST",
        "data": "data/digits",
        "seed": 7,
    }
    assert document == {
        "optimizer": {"name": "adam", "lr": 1e-3},
        "layers": [64, 32],
        "mode": "FAST",
        "data": "data/digits",
        "seed": 7,
    }


def test_log_configuration_config_dict_and_dict():
    config = ml_collections.ConfigDict({"model": {"width": 256}, "lr": 0.1})
    for given in (config, ml_collections.FrozenConfigDict(config), {"model": {"width": 256}, "lr": 0.1}):
        tracker = RecordingTracker()
        with jt.current_tracker(tracker):
            jt.log_configuration(given)
        hparams, document = _logged_config(tracker)
        assert hparams == {"model/width": 256, "lr": 0.1}
        assert document == {"model": {"width": 256}, "lr": 0.1}


def test_log_configuration_leaves_no_temporary_file_behind():
    tracker = RecordingTracker()
    with jt.current_tracker(tracker):
        jt.log_configuration({"lr": 0.1})
    ((path, _, _, content),) = tracker.artifacts
    assert content is not None and b"lr: 0.1" in content  # the tracker had the file while it was called
    assert not os.path.exists(os.path.dirname(path))


def test_log_configuration_rejects_other_types():
    with jt.current_tracker(RecordingTracker()), pytest.raises(TypeError, match="list"):
        jt.log_configuration([1, 2])


def test_init_tracker_list_makes_a_composite_with_one_run_id(tmp_path):
    seen = []

    @jt.TrackerConfig.register("test_run_id_probe")
    @dataclasses.dataclass(frozen=True)
    class ProbeConfig(jt.TrackerConfig):
        label: str = ""

        def init(self, run_id):
            seen.append(run_id)
            return RecordingTracker(self.label)

    tracker = jt.init_tracker(
        [{"type": "test_run_id_probe", "label": "x"}, {"type": "test_run_id_probe", "label": "y"}]
    )
    assert isinstance(tracker, jt.CompositeTracker)
    assert [t.name for t in tracker.trackers] == ["x", "y"]
    assert len(set(seen)) == 1 and seen[0]
    assert jt.current_tracker() is tracker
    jt.init_tracker({"type": "test_run_id_probe"}, run_id="given-id")
    assert seen[-1] == "given-id"


def test_init_tracker_cleans_up_when_a_later_backend_fails():
    built = []

    @jt.TrackerConfig.register("test_fails_second")
    @dataclasses.dataclass(frozen=True)
    class FailingConfig(jt.TrackerConfig):
        fail: bool = False

        def init(self, run_id):
            if self.fail:
                raise RuntimeError("backend down")
            built.append(RecordingTracker())
            return built[-1]

    with pytest.raises(RuntimeError, match="backend down"):
        jt.init_tracker([{"type": "test_fails_second"}, {"type": "test_fails_second", "fail": True}])
    assert built[0].finished == 1


def test_init_tracker_list_takes_trackers_built_in_code_next_to_configs(tmp_path):
    """As the seed's example builds WandbTracker(wandb.init()) itself, next to a config-made local store."""
    mine = RecordingTracker("mine")
    tracker = jt.init_tracker([mine, {"type": "local", "path": str(tmp_path / "runs.db")}], run_id="mixed")
    assert isinstance(tracker, jt.CompositeTracker)
    assert tracker.trackers[0] is mine and jt.get_tracker("local").run_id == "mixed"
    with tracker:
        jt.log({"loss": 0.5}, step=1)
    assert mine.logs == [(1, {"loss": 0.5}, None)] and mine.finished == 1
    with jt.RunStore(tmp_path / "runs.db") as store:
        assert store.history("mixed") == [{"step": 1, "loss": 0.5}]
    with pytest.raises(jt.TrackerConfigError, match="lcoal"):  # the configs are still checked before any starts
        jt.init_tracker([RecordingTracker(), {"type": "lcoal"}])


def test_init_tracker_leaves_the_callers_trackers_alone_when_a_backend_fails():
    @jt.TrackerConfig.register("test_fails_always")
    @dataclasses.dataclass(frozen=True)
    class FailingConfig(jt.TrackerConfig):
        def init(self, run_id):
            raise RuntimeError("backend down")

    mine = RecordingTracker("mine")
    with pytest.raises(RuntimeError, match="backend down"):
        jt.init_tracker([mine, {"type": "test_fails_always"}])
    assert mine.finished == 0  # not started here, not finished here


@pytest.mark.parametrize("bad", ["../up", "a/b", "has space", ".hidden", ""])
def test_init_tracker_rejects_unsafe_run_ids(bad):
    with pytest.raises(ValueError, match="run_id"):
        jt.init_tracker({"type": "noop"}, run_id=bad)


def test_new_run_ids_are_unique_and_safe():
    made = {ids.new_run_id() for _ in range(50)}
    assert len(made) == 50
    for run_id in made:
        assert ids.validate_run_id(run_id) == run_id
        assert os.sep not in run_id


class _RefusingTracker(RecordingTracker):
    """Refuses keys that start with ``bad`` (a backend's limits, as TensorBoard's float32 range)."""

    def validate(self, metrics):
        for key in metrics:
            if key.startswith("bad"):
                raise ValueError(f"this backend cannot record {key!r}")


def test_a_value_a_backend_refuses_is_an_error_at_the_call_for_log_and_log_summary():
    tracker = _RefusingTracker()
    with jt.current_tracker(tracker):
        with pytest.raises(ValueError, match="'bad/x'"):
            jt.log({"bad": {"x": 1.0}}, step=0)
        with pytest.raises(ValueError, match="'bad_best'"):
            jt.log_summary({"bad_best": 1.0})
        jt.log_summary({"best": 1.0})
        jt.flush()
    assert tracker.logs == [] and tracker.summaries == [{"best": 1.0}]  # nothing refused was queued
