"""Tracker configs: the registry, parsing, validation, entry points."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap

import pytest

import jaxtrack as jt
from jaxtrack.trackers.config import TrackerConfigError, coerce

SEED_SINGLE = """
trainer:
  tracker:
    type: wandb
    project: my-project
    entity: my-entity
"""

SEED_MULTIPLE = """
trainer:
  tracker:
    - type: wandb
      project: my-project
      entity: my-entity
    - type: tensorboard
      logdir: logs
"""


def test_seed_yaml_single_tracker_parses_as_written():
    config = jt.TrackerConfig.parse(SEED_SINGLE)
    assert config == jt.WandbConfig(project="my-project", entity="my-entity")


def test_seed_yaml_multiple_trackers_parse_as_written():
    configs = jt.TrackerConfig.parse(SEED_MULTIPLE)
    assert configs == [
        jt.WandbConfig(project="my-project", entity="my-entity"),
        jt.TensorboardConfig(logdir="logs"),
    ]


def test_parse_accepts_every_form():
    tb = jt.TensorboardConfig(logdir="x")
    assert jt.TrackerConfig.parse(tb) is tb
    assert jt.TrackerConfig.parse({"type": "tensorboard", "logdir": "x"}) == tb
    assert jt.TrackerConfig.parse("type: tensorboard\nlogdir: x") == tb
    assert jt.TrackerConfig.parse("tracker: {type: tensorboard, logdir: x}") == tb
    assert jt.TrackerConfig.parse([tb, {"type": "noop"}, "type: console"]) == [tb, jt.NoopConfig(), jt.ConsoleConfig()]


def test_to_dict_round_trips():
    config = jt.WandbConfig(project="p", tags=("a", "b"), mode="offline", resume="allow")
    assert jt.TrackerConfig.parse(config.to_dict()) == config
    assert config.to_dict()["type"] == "wandb"


def test_yaml_lists_become_tuples_and_ints_become_floats():
    config = jt.TrackerConfig.parse("type: wandb\ntags: [x, y]\n")
    assert isinstance(config, jt.WandbConfig) and config.tags == ("x", "y")
    tb = jt.TrackerConfig.parse({"type": "tensorboard", "flush_secs": 3})
    assert isinstance(tb, jt.TensorboardConfig) and tb.flush_secs == 3.0 and isinstance(tb.flush_secs, float)


def test_unknown_type_names_it_and_lists_choices():
    with pytest.raises(TrackerConfigError) as info:
        jt.TrackerConfig.parse({"type": "tensorbord"})
    message = str(info.value)
    assert "'tensorbord'" in message
    assert "did you mean 'tensorboard'" in message
    for choice in ("console", "noop", "tensorboard", "wandb"):
        assert choice in message


def test_misspelled_field_names_it_and_suggests():
    with pytest.raises(TrackerConfigError) as info:
        jt.TrackerConfig.parse("type: wandb\nprojct: p\n")
    message = str(info.value)
    assert "'projct'" in message and "did you mean 'project'" in message and "entity" in message


@pytest.mark.parametrize(
    ("raw", "names"),
    [
        ({"type": "wandb", "project": 3}, ["wandb.project", "3"]),
        ({"type": "wandb", "tags": "x"}, ["wandb.tags", "list"]),
        ({"type": "wandb", "tags": ["ok", 1]}, ["wandb.tags[1]"]),
        ({"type": "wandb", "mode": "onlnie"}, ["wandb.mode", "'online'", "'offline'"]),
        ({"type": "wandb", "resume": "sometimes"}, ["wandb.resume", "'allow'"]),
        ({"type": "tensorboard", "histogram_bins": True}, ["tensorboard.histogram_bins", "integer"]),
        ({"type": "tensorboard", "flush_secs": "fast"}, ["tensorboard.flush_secs", "number"]),
    ],
)
def test_wrong_typed_field_names_field_and_value(raw, names):
    with pytest.raises(TrackerConfigError) as info:
        jt.TrackerConfig.parse(raw)
    for name in names:
        assert name in str(info.value)


def test_missing_type_and_bad_shapes_are_clear():
    with pytest.raises(TrackerConfigError, match="needs a 'type:' key"):
        jt.TrackerConfig.parse({"project": "p"})
    with pytest.raises(TrackerConfigError, match="not valid YAML"):
        jt.TrackerConfig.parse("type: [unclosed")
    with pytest.raises(TrackerConfigError, match="got int"):
        jt.TrackerConfig.parse(42)


def test_yaml_is_read_with_a_safe_loader():
    # A full loader would build the object (and run code); the safe one refuses the tag.
    with pytest.raises(TrackerConfigError, match="not valid YAML"):
        jt.TrackerConfig.parse("type: !!python/object/apply:os.system ['echo pwned']\n")


def test_user_registered_config_end_to_end(tmp_path):
    written = tmp_path / "lines.txt"

    class FileTracker(jt.Tracker):
        name = "file"

        def __init__(self, path, run_id):
            self.file = open(path, "a")
            self.run_id = run_id

        def log(self, metrics, *, step=None, commit=None):
            for key, value in jt.flatten(metrics).items():
                self.file.write(f"{self.run_id} {step} {key} {value}\n")

        def log_summary(self, metrics):
            self.log(metrics, step=-1)

        def log_hyperparameters(self, hparams):
            pass

        def log_artifact(self, artifact_path, *, name=None, type=None):
            pass

        def finish(self):
            self.file.close()

    @jt.TrackerConfig.register("test_file")
    @dataclasses.dataclass(frozen=True)
    class FileConfig(jt.TrackerConfig):
        path: str = ""

        def init(self, run_id):
            return FileTracker(self.path, run_id)

    assert "test_file" in jt.TrackerConfig.choices()
    spec = f"""
    - type: test_file
      path: {written}
    - type: noop
    """
    with jt.init_tracker(textwrap.dedent(spec), run_id="run7"):
        jt.log({"loss": {"train": 0.5}}, step=3)
        jt.log({"loss": {"train": 0.25}})
        jt.log_summary({"best": 0.25})
        assert isinstance(jt.get_tracker("file"), FileTracker)
    assert written.read_text().splitlines() == ["run7 3 loss/train 0.5", "run7 4 loss/train 0.25", "run7 -1 best 0.25"]


def test_register_rejects_a_taken_name_and_non_configs():
    with pytest.raises(TrackerConfigError, match="already registered"):

        @jt.TrackerConfig.register("wandb")
        @dataclasses.dataclass(frozen=True)
        class Other(jt.TrackerConfig):
            def init(self, run_id):
                return jt.NoopTracker()

    with pytest.raises(TypeError, match="TrackerConfig subclasses"):
        jt.TrackerConfig.register("x")(dict)  # type: ignore[arg-type]


def test_a_config_registered_under_a_second_name_keeps_its_first():
    @jt.TrackerConfig.register("aliased_first")
    @dataclasses.dataclass(frozen=True)
    class Aliased(jt.TrackerConfig):
        def init(self, run_id):
            return jt.NoopTracker()

    jt.TrackerConfig.register("aliased_second")(Aliased)  # e.g. also offered through an entry point
    assert jt.TrackerConfig.parse({"type": "aliased_second"}) == Aliased()
    assert Aliased().to_dict() == {"type": "aliased_first"}


def test_coerce_handles_optional_and_nested_types():
    assert coerce(None, str | None, "f") is None
    assert coerce({"a": [1, 2]}, dict[str, list[int]], "f") == {"a": [1, 2]}
    with pytest.raises(TrackerConfigError, match=r"f\.a\[1\]"):
        coerce({"a": [1, "x"]}, dict[str, list[int]], "f")


def _make_plugin(root, *, module_body: str, entry: str = "thirdparty") -> None:
    (root / "thirdparty_tracker.py").write_text(textwrap.dedent(module_body))
    dist = root / "thirdparty_tracker-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: thirdparty-tracker\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[jaxtrack.trackers]\n{entry} = thirdparty_tracker:ThirdPartyConfig\n")


def test_entry_point_adds_a_tracker_without_importing_the_package_first(tmp_path):
    _make_plugin(
        tmp_path,
        module_body="""
        import dataclasses
        import jaxtrack as jt

        @dataclasses.dataclass(frozen=True)
        class ThirdPartyConfig(jt.TrackerConfig):
            greeting: str = "hi"

            def init(self, run_id):
                tracker = jt.NoopTracker()
                tracker.name = f"thirdparty-{self.greeting}-{run_id}"
                return tracker
        """,
    )
    script = """
import sys
import jaxtrack as jt
assert "thirdparty_tracker" not in sys.modules
assert "thirdparty" in jt.TrackerConfig.choices()
tracker = jt.init_tracker("type: thirdparty\\ngreeting: hello", run_id="r9")
print(tracker.name)
"""
    result = _run_with_plugin(tmp_path, script)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "thirdparty-hello-r9"


def test_broken_entry_point_names_the_package(tmp_path):
    _make_plugin(tmp_path, module_body="raise ImportError('needs mlflow')\n")
    script = """
import jaxtrack as jt
try:
    jt.TrackerConfig.parse({"type": "thirdparty"})
except jt.TrackerConfigError as error:
    print(error)
"""
    result = _run_with_plugin(tmp_path, script)
    assert "thirdparty_tracker:ThirdPartyConfig" in result.stdout
    assert "thirdparty-tracker" in result.stdout
    assert "needs mlflow" in result.stdout


def _run_with_plugin(plugin_dir, script: str) -> subprocess.CompletedProcess[str]:
    """Runs ``script`` in a fresh interpreter that sees only the plugin made in ``plugin_dir``."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [sys.executable, "-c", script],
        env={**env, "PYTHONPATH": str(plugin_dir)},
        capture_output=True,
        text=True,
        timeout=120,
    )
