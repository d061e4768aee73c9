"""The W&B backend, against real offline runs: the run files wandb writes are the evidence.

Every run is offline, under the test's ``tmp_path`` (the environment points
all of wandb's directories there); ``wandb_files.read_run`` decodes the
``run-<id>.wandb`` transaction log after the run is finished.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
import wandb
import yaml
from PIL import Image as PILImage

import jaxtrack
from jaxtrack import multihost
from jaxtrack.trackers.wandb import WandbTracker
from support.backends import wandb_offline
from support.links import artifact_with_links, secret_files
from support.wandb_files import WANDB_HEADER, WandbFileError, find_wandb_files, parse_records, read_run


@pytest.fixture(autouse=True)
def wandb_env(tmp_path, monkeypatch):
    """Offline, silent, every wandb directory under ``tmp_path``; returns the runs' ``dir``."""
    runs = wandb_offline(tmp_path, monkeypatch)
    yield runs
    if wandb.run is not None:
        wandb.run.finish()
    wandb.teardown()


@pytest.fixture
def runs_dir(wandb_env):
    return wandb_env


def offline_tracker(runs_dir, **kwargs):
    return WandbTracker(project="jaxtrack-tests", mode="offline", dir=str(runs_dir), **kwargs)


def user_rows(run_files):
    """History rows without W&B's own ``_step``/``_runtime``/``_timestamp`` columns."""
    return [{k: v for k, v in row.items() if not k.startswith("_")} for row in run_files.history]


def png_pixels(path):
    with PILImage.open(path) as image:
        return np.asarray(image)


# 1. The seed's example.


def test_seed_example_writes_history_and_summary(runs_dir):
    import jaxtrack as tracker

    with tracker.current_tracker(WandbTracker(wandb.init())):
        for step in range(100):
            tracker.log({"loss": 100 - 0.01 * step}, step=step)

        tracker.log_summary({"best_loss": 0.0})

    run = wandb.run
    assert run is not None and run.offline
    run.finish()

    files = read_run(runs_dir)
    assert files.exited
    assert files.run.run_id == run.id
    assert len(files.history) == 100
    assert files.column("global_step") == list(range(100))
    assert files.column("loss") == [100 - 0.01 * step for step in range(100)]
    assert files.summary["best_loss"] == 0.0


# 2. Which run a tracker logs to.


def test_tracker_starts_its_own_run_from_init_kwargs(runs_dir):
    tracker = offline_tracker(runs_dir, name="own-run")
    assert tracker.run is wandb.run
    tracker.log({"loss": 1.0}, step=0)
    tracker.finish()

    files = read_run(runs_dir)
    assert files.run.run_id == tracker.run.id
    assert files.run.project == "jaxtrack-tests"
    assert files.run.display_name == "own-run"
    assert user_rows(files) == [{"loss": 1.0, "global_step": 0}]


def test_tracker_uses_the_run_it_is_given(runs_dir):
    run = wandb.init(project="given", mode="offline", dir=str(runs_dir))
    tracker = WandbTracker(run)
    assert tracker.run is run
    tracker.log({"loss": 2.0}, step=3)
    tracker.finish()

    files = read_run(runs_dir)  # one run only: the tracker started none of its own
    assert files.run.run_id == run.id and files.run.project == "given"
    assert user_rows(files) == [{"loss": 2.0, "global_step": 3}]


def test_tracker_without_arguments_uses_the_active_run(runs_dir):
    run = wandb.init(project="active", mode="offline", dir=str(runs_dir))
    tracker = WandbTracker()
    assert tracker.run is run
    tracker.log({"loss": 3.0}, step=1)
    tracker.finish()

    files = read_run(runs_dir)
    assert files.run.run_id == run.id
    assert user_rows(files) == [{"loss": 3.0, "global_step": 1}]


# 3. The step metric.


def test_step_metric_is_defined_and_lower_steps_are_kept(runs_dir):
    tracker = offline_tracker(runs_dir)
    steps = [*range(10), 5, 6, 7]  # a run resumed from the checkpoint of step 5
    for step in steps:
        tracker.log({"loss": float(step)}, step=step)
    tracker.finish()

    files = read_run(runs_dir)
    by_name = {(m.name, m.glob_name): m for m in files.metrics}
    assert ("global_step", "") in by_name
    assert by_name[("", "*")].step_metric == "global_step"
    assert len(files.history) == 13
    assert files.column("global_step") == steps
    assert files.column("loss") == [float(s) for s in steps]
    assert files.column("_step") == list(range(13))  # W&B's own step only goes up


def test_custom_step_metric_and_steps_without_a_step_argument(runs_dir):
    tracker = offline_tracker(runs_dir, step_metric="epoch")
    tracker.log({"a": 1.0})  # step 0
    tracker.log({"b": 2.0}, commit=False)  # step 1, kept open
    tracker.log({"c": 3.0})  # still step 1
    tracker.log({"d": 4.0})  # step 2
    with pytest.raises(ValueError, match="'epoch' is the W&B step metric"):
        tracker.log({"epoch": 7})
    tracker.finish()

    files = read_run(runs_dir)
    assert any(m.glob_name == "*" and m.step_metric == "epoch" for m in files.metrics)
    assert user_rows(files) == [
        {"a": 1.0, "epoch": 0},
        {"b": 2.0, "c": 3.0, "epoch": 1},
        {"d": 4.0, "epoch": 2},
    ]


def test_row_left_open_by_commit_false_keeps_its_step(runs_dir):
    # wandb.log's rule, which Tracker.log follows: a value logged with
    # commit=False at step 5 belongs to step 5, even if the next call logs step 6.
    tracker = offline_tracker(runs_dir)
    tracker.log({"a": 1.0}, step=5, commit=False)
    tracker.log({"b": 2.0}, step=6)
    tracker.finish()

    files = read_run(runs_dir)
    assert user_rows(files) == [{"a": 1.0, "global_step": 5}, {"b": 2.0, "global_step": 6}]


# 4. Values.


def test_scalars_nested_keys_and_strings(runs_dir):
    tracker = offline_tracker(runs_dir)
    tracker.log(
        {
            "train": {"loss": 0.25, "acc": {"top1": 0.5}},
            "jax_f32": jnp.float32(2.5),
            "jax_0d_int": jnp.array(7, dtype=jnp.int32),
            "np_i64": np.int64(3),
            "np_f16": np.float16(0.5),
            "np_bool": np.bool_(True),
            "note": "warm-up done",
        },
        step=0,
    )
    tracker.finish()

    (row,) = user_rows(read_run(runs_dir))
    assert row == {
        "train/loss": 0.25,
        "train/acc/top1": 0.5,
        "jax_f32": 2.5,
        "jax_0d_int": 7,
        "np_i64": 3,
        "np_f16": 0.5,
        "np_bool": True,
        "note": "warm-up done",
        "global_step": 0,
    }
    assert type(row["jax_0d_int"]) is int and type(row["np_bool"]) is bool


def test_arrays_and_histograms_become_wandb_histograms(runs_dir):
    tracker = offline_tracker(runs_dir, histogram_bins=16)
    values = np.linspace(-1.0, 3.0, 101)
    tracker.log(
        {
            "np_array": values,
            "jax_array": jnp.asarray(values, dtype=jnp.float32).reshape(1, 101),
            "explicit": jaxtrack.Histogram.from_array(np.array([0.0, 1.0, 1.0, 3.0]), num_bins=3),
        },
        step=4,
    )
    tracker.finish()

    (row,) = user_rows(read_run(runs_dir))
    expected_counts, expected_edges = np.histogram(values, bins=16, range=(-1.0, 3.0))
    for key in ("np_array", "jax_array"):
        histogram = row[key]
        assert histogram["_type"] == "histogram"
        assert histogram["values"] == expected_counts.tolist()
        np.testing.assert_allclose(histogram["bins"], expected_edges, rtol=1e-6)
    assert row["explicit"] == {"_type": "histogram", "values": [1, 2, 1], "bins": [0.0, 1.0, 2.0, 3.0]}


def test_histogram_with_more_buckets_than_wandb_allows_is_still_logged(runs_dir):
    # Every backend accepts every jaxtrack.Histogram (jaxtrack.values); W&B
    # stores at most 512 buckets, so a finer one must be re-bucketed, not refused.
    tracker = offline_tracker(runs_dir)
    fine = jaxtrack.Histogram.from_array(np.arange(2000.0), num_bins=1000)
    tracker.log({"fine": fine, "loss": 1.0}, step=0)
    tracker.finish()

    (row,) = user_rows(read_run(runs_dir))
    assert row["loss"] == 1.0
    histogram = row["fine"]
    assert len(histogram["values"]) <= 512
    assert len(histogram["bins"]) == len(histogram["values"]) + 1
    assert sum(histogram["values"]) == 2000
    assert histogram["bins"][0] == 0.0 and histogram["bins"][-1] == 1999.0


def test_images_become_wandb_image_files(runs_dir):
    rng = np.random.default_rng(0)
    single = rng.integers(0, 256, size=(6, 5, 3), dtype=np.uint8)
    batch = rng.integers(0, 256, size=(2, 4, 7, 3), dtype=np.uint8)
    grey = rng.random((3, 4))  # float in [0, 1], HW
    tracker = offline_tracker(runs_dir)
    tracker.log(
        {
            "single": jaxtrack.Image(single, caption="one"),
            "batch": jaxtrack.Image(jnp.asarray(batch)),
            "grey": jaxtrack.Image(grey),
        },
        step=2,
    )
    tracker.finish()

    files = read_run(runs_dir)
    (row,) = user_rows(files)

    image = row["single"]
    assert image["_type"] == "image-file"
    assert (image["width"], image["height"], image["caption"]) == (5, 6, "one")
    assert image["path"] in files.files
    np.testing.assert_array_equal(png_pixels(files.files_dir / image["path"]), single)

    images = row["batch"]
    assert images["_type"] == "images/separated"
    assert (images["count"], images["width"], images["height"]) == (2, 7, 4)
    assert len(images["filenames"]) == 2
    for pixels, name in zip(batch, images["filenames"], strict=True):
        np.testing.assert_array_equal(png_pixels(files.files_dir / name), pixels)

    expected_grey = np.rint(grey * 255).astype(np.uint8)
    np.testing.assert_array_equal(png_pixels(files.files_dir / row["grey"]["path"]), expected_grey)


def test_image_one_pixel_high_keeps_its_shape(runs_dir):
    # wandb.Image squeezes arrays, so a 1xWx3 image reaches PIL as a Wx3 greyscale one.
    row_pixels = np.arange(12, dtype=np.uint8).reshape(1, 4, 3)
    tracker = offline_tracker(runs_dir)
    tracker.log({"strip": jaxtrack.Image(row_pixels)}, step=0)
    tracker.finish()

    files = read_run(runs_dir)
    (row,) = user_rows(files)
    assert (row["strip"]["width"], row["strip"]["height"]) == (4, 1)
    np.testing.assert_array_equal(png_pixels(files.files_dir / row["strip"]["path"]), row_pixels[0:1])


# 5. Hyperparameters, summaries, artifacts, configurations.


def test_hyperparameters_go_to_the_config_and_summaries_to_the_summary(runs_dir):
    tracker = offline_tracker(runs_dir)
    tracker.log_hyperparameters(
        {
            "optimizer": {"lr": 1e-3, "name": "adam"},
            "batch_size": np.int32(32),
            "layers": (64, 64),
            "mask": jnp.arange(3),
        }
    )
    tracker.log_hyperparameters({"optimizer": {"lr": 5e-4}})  # a changed value is accepted
    tracker.log_summary({"best": {"loss": 0.125}, "accuracy": np.float32(0.5)})
    tracker.finish()

    files = read_run(runs_dir)
    config = {k: v for k, v in files.config.items() if k != "_wandb"}
    assert config == {
        "optimizer/lr": 5e-4,
        "optimizer/name": "adam",
        "batch_size": 32,
        "layers": [64, 64],
        "mask": [0, 1, 2],
    }
    assert files.summary["best/loss"] == 0.125
    assert files.summary["accuracy"] == 0.5
    assert files.history == []  # summaries are not history rows


def test_artifacts_of_a_file_and_a_directory(runs_dir, tmp_path):
    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"\x00\x01")
    checkpoint = tmp_path / "checkpoint_100"
    (checkpoint / "state").mkdir(parents=True)
    (checkpoint / "meta.json").write_text("{}")
    (checkpoint / "state" / "params.msgpack").write_bytes(b"p")

    tracker = offline_tracker(runs_dir)
    tracker.log_artifact(weights, name="model v1", type="model")
    tracker.log_artifact(str(checkpoint) + "/")
    tracker.finish()

    files = read_run(runs_dir)
    assert [(a.name, a.type, a.paths) for a in files.artifacts] == [
        ("model_v1", "model", ("weights.bin",)),
        ("checkpoint_100", "artifact", ("meta.json", "state/params.msgpack")),
    ]


def test_a_directory_artifact_uploads_nothing_its_links_point_to_outside_it(runs_dir, tmp_path):
    # W&B's own add_dir walks with followlinks=True: the private key was staged for upload.
    artifact = artifact_with_links(tmp_path / "sources", loops=True)
    tracker = offline_tracker(runs_dir)
    with pytest.warns(jaxtrack.ArtifactWarning) as caught:
        tracker.log_artifact(artifact.root, name="checkpoint")
    tracker.finish()

    messages = " ".join(str(w.message) for w in caught)
    assert all(repr(relative) in messages for relative in artifact.refused), messages
    (stored,) = read_run(runs_dir).artifacts
    # Links inside the artifact become the files they name (W&B keeps no links); the others are left out.
    assert stored.paths == ("latest", "nested/opt.txt", "nested/params", "params.bin")
    for folder in ("wandb-runs", "wandb-data", "wandb-cache"):
        assert secret_files(tmp_path / folder) == [], folder


def test_a_relative_dir_is_made_absolute_when_the_run_starts(runs_dir, tmp_path, monkeypatch):
    start, moved = tmp_path / "start", tmp_path / "moved"
    (start / "wb").mkdir(parents=True)
    moved.mkdir()
    monkeypatch.chdir(start)
    tracker = WandbTracker(project="jaxtrack-tests", mode="offline", dir="wb")
    monkeypatch.chdir(moved)  # as Hydra does once the run has started
    run_dir = tracker.run.dir
    tracker.log({"loss": 1.0}, step=0)
    tracker.finish()
    assert os.path.isabs(run_dir) and Path(run_dir).is_relative_to(start / "wb") and os.path.isdir(run_dir)
    assert list(moved.iterdir()) == []


def test_log_configuration_gives_config_keys_and_a_config_artifact(runs_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where log_configuration writes its YAML

    @dataclasses.dataclass
    class Optimizer:
        lr: float = 1e-3
        b1: float = 0.9

    @dataclasses.dataclass
    class TrainConfig:
        steps: int = 100
        optimizer: Optimizer = dataclasses.field(default_factory=Optimizer)
        layers: tuple[int, ...] = (64, 32)

    tracker = offline_tracker(runs_dir)
    with jaxtrack.current_tracker(tracker):
        jaxtrack.log_configuration(TrainConfig())
    tracker.finish()

    files = read_run(runs_dir)
    assert {k: v for k, v in files.config.items() if k != "_wandb"} == {
        "steps": 100,
        "optimizer/lr": 1e-3,
        "optimizer/b1": 0.9,
        "layers": [64, 32],
    }
    (artifact,) = files.artifacts
    assert (artifact.name, artifact.type, artifact.paths) == ("config", "config", ("config.yaml",))
    (entry,) = next(r.artifact.manifest.contents for r in files.records if r.HasField("artifact"))
    with open(entry.local_path, encoding="utf-8") as staged:
        assert yaml.safe_load(staged) == {"steps": 100, "optimizer": {"lr": 1e-3, "b1": 0.9}, "layers": [64, 32]}


# 6. Tracker configs.


def test_init_tracker_from_a_dict_uses_the_run_id_and_tags(tmp_path):
    runs = tmp_path / "not-yet-made"
    tracker = jaxtrack.init_tracker(
        {"type": "wandb", "project": "p", "mode": "offline", "dir": str(runs), "tags": ["a"]}, run_id="abc123"
    )
    assert isinstance(tracker, WandbTracker) and jaxtrack.current_tracker() is tracker
    jaxtrack.log({"loss": 0.5}, step=0)
    jaxtrack.finish()

    files = read_run(runs)
    assert files.wandb_file.name == "run-abc123.wandb"
    assert files.run.run_id == "abc123"
    assert files.run.project == "p"
    assert list(files.run.tags) == ["a"]
    assert user_rows(files) == [{"loss": 0.5, "global_step": 0}]


def test_init_tracker_from_yaml_text(tmp_path):
    runs = tmp_path / "yaml-runs"
    spec = textwrap.dedent(
        f"""\
        tracker:
          type: wandb
          project: from-yaml
          name: readable name
          mode: offline
          dir: {runs}
          tags: [x, y]
          histogram_bins: 8
        """
    )
    with jaxtrack.init_tracker(spec, run_id="yaml-run-1") as tracker:
        assert tracker.histogram_bins == 8
        jaxtrack.log({"weights": np.arange(10.0)}, step=0)

    files = read_run(runs)
    assert files.run.run_id == "yaml-run-1"
    assert (files.run.project, files.run.display_name) == ("from-yaml", "readable name")
    assert list(files.run.tags) == ["x", "y"]
    assert len(files.history[0]["weights"]["values"]) == 8


# 7. Multi-process runs.


def test_only_process_zero_starts_a_real_run(runs_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(multihost, "process_index", lambda: 1)
    artifact = tmp_path / "notes.txt"
    artifact.write_text("x")

    tracker = offline_tracker(runs_dir)
    assert tracker.run.disabled
    tracker.log({"loss": 1.0, "weights": np.arange(4.0), "image": jaxtrack.Image(np.zeros((2, 2, 3), np.uint8))})
    tracker.log_summary({"best": 1.0})
    tracker.log_hyperparameters({"lr": 0.1})
    tracker.log_artifact(artifact, name="notes", type="text")
    tracker.finish()

    assert find_wandb_files(tmp_path) == []
    assert list(runs_dir.iterdir()) == []


# 8. Finishing and misuse.


def test_finish_is_idempotent_and_logging_after_it_fails(runs_dir, tmp_path):
    tracker = offline_tracker(runs_dir)
    tracker.log({"loss": 1.0}, step=0)
    tracker.finish()
    tracker.finish()
    with pytest.raises(RuntimeError, match="finished"):
        tracker.log({"loss": 2.0}, step=1)
    with pytest.raises(RuntimeError, match="finished"):
        tracker.log_summary({"best": 1.0})
    with pytest.raises(RuntimeError, match="finished"):
        tracker.log_hyperparameters({"lr": 1.0})
    with pytest.raises(RuntimeError, match="finished"):
        tracker.log_artifact(tmp_path)

    files = read_run(runs_dir)
    assert files.exited
    assert user_rows(files) == [{"loss": 1.0, "global_step": 0}]


def test_metric_named_like_the_step_metric_is_a_clear_error(runs_dir):
    tracker = offline_tracker(runs_dir)
    with pytest.raises(ValueError, match=r"'global_step' is the W&B step metric; pass the step as step="):
        tracker.log({"global_step": 3})
    with pytest.raises(ValueError, match="global_step"):
        tracker.log({"global_step": 3.0, "loss": 1.0}, step=3)
    tracker.log({"loss": 1.0}, step=3)
    tracker.finish()

    assert user_rows(read_run(runs_dir)) == [{"loss": 1.0, "global_step": 3}]


def test_too_many_histogram_bins_is_refused_before_a_run_starts(runs_dir):
    with pytest.raises(ValueError, match="between 1 and 512"):
        offline_tracker(runs_dir, histogram_bins=513)
    assert wandb.run is None
    assert find_wandb_files(runs_dir) == []


# 9. The package is optional.


def _python(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)


def test_import_jaxtrack_does_not_import_wandb():
    result = _python("import sys, jaxtrack; print('wandb' in sys.modules)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_missing_wandb_names_the_extra():
    script = textwrap.dedent(
        """\
        import sys
        sys.modules["wandb"] = None  # as if wandb were not installed
        import jaxtrack
        from jaxtrack.trackers.wandb import WandbTracker
        try:
            WandbTracker(mode="offline")
        except jaxtrack.MissingExtraError as error:
            assert isinstance(error, ImportError)
            print(error)
        else:
            raise SystemExit("no MissingExtraError")
        """
    )
    result = _python(script)
    assert result.returncode == 0, result.stderr
    assert "jaxtrack[wandb]" in result.stdout
    assert "WandbTracker" in result.stdout


# The reader of the run files, checked on a run written here.


def test_reader_reassembles_records_split_across_blocks(runs_dir):
    long_text = "".join(chr(ord("a") + i % 26) for i in range(100_000))  # > 3 blocks of 32 KiB
    tracker = offline_tracker(runs_dir)
    tracker.log({"text": long_text}, step=0)
    tracker.log({"after": 1.0}, step=1)
    tracker.finish()

    files = read_run(runs_dir)
    raw = files.wandb_file.read_bytes()
    assert raw.startswith(WANDB_HEADER) and len(raw) > 3 * 32 * 1024
    assert user_rows(files) == [{"text": long_text, "global_step": 0}, {"after": 1.0, "global_step": 1}]
    assert [r.num for r in files.records] == list(range(1, len(files.records) + 1))

    corrupted = bytearray(raw)
    corrupted[len(WANDB_HEADER) + 7] ^= 0xFF  # a byte of the first record's payload
    with pytest.raises(WandbFileError, match="checksum"):
        parse_records(bytes(corrupted))
    with pytest.raises(WandbFileError, match="not a W&B transaction log"):
        parse_records(b"LEVELDB" + raw[7:])


# 10. W&B cannot be reached.


def test_unreachable_wandb_goes_offline_and_training_starts(tmp_path, monkeypatch, caplog):
    import logging
    import os
    import socket
    import time
    from pathlib import Path

    from jaxtrack.trackers.wandb import WandbConfig

    with socket.socket() as probe:  # a port nothing listens on: connections to it are refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_API_KEY", "a" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{port}")  # the only address wandb is given
    monkeypatch.setenv("WANDB_ERROR_REPORTING", "false")  # no crash reports to sentry either
    wandb.teardown()  # wandb reads the environment once, into a singleton
    caplog.set_level(logging.WARNING, logger="jaxtrack.trackers.wandb")
    runs = tmp_path / "unreachable"

    started = time.monotonic()
    tracker = jaxtrack.init_tracker(
        WandbConfig(project="p", mode="online", init_timeout=5, dir=str(runs)), run_id="unreach1"
    )
    assert time.monotonic() - started < 120, "training did not start: wandb.init waited for the network"
    assert tracker.run.offline
    for step in range(3):
        jaxtrack.log({"loss": 1.0 / (step + 1)}, step=step)
    jaxtrack.finish()

    (offline,) = [path for path in find_wandb_files(runs) if path.parent.name.startswith("offline-run-")]
    files = read_run(offline)
    assert files.wandb_file.name == "run-unreach1.wandb"  # the same id, so `wandb sync` uploads it as that run
    assert user_rows(files) == [{"loss": 1.0 / (step + 1), "global_step": step} for step in range(3)]
    (warning,) = [r.getMessage() for r in caplog.records if "wandb sync" in r.getMessage()]
    sync_dir = warning.split("wandb sync ")[1].strip()
    assert Path(sync_dir).resolve() == files.run_dir.resolve()
    assert os.path.isdir(sync_dir) and "could not be reached" in warning
