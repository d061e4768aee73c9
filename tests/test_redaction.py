"""Credentials never reach a backend: ``is_secret_key`` / ``redact``, then every backend read back for real.

Each built-in backend is given the same hyperparameters directly (not through
``jaxtrack.log_hyperparameters``, which redacts on its own) and what it wrote
is read back: the local store's config, TensorBoard's hparams plugin data,
W&B's offline run files, the console's log lines, CLU's writers. The raw
bytes of every file a backend wrote are searched for the secrets too.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np
import pytest
import wandb
import yaml
from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import metadata as hparams_metadata

import jaxtrack as jt
from jaxtrack.clu_writers import load_metric_writers
from jaxtrack.metric_writer import as_metric_writer
from jaxtrack.redaction import REDACTED, is_secret_key, redact
from jaxtrack.store import RunStore
from jaxtrack.trackers.clu import from_metric_writer
from jaxtrack.trackers.local import LocalTracker
from jaxtrack.trackers.tensorboard import TensorboardTracker
from jaxtrack.trackers.wandb import WandbTracker
from support.backends import wandb_offline
from support.recording import RecordingTracker
from support.wandb_files import read_run

HPARAMS = {"optimizer": {"lr": 0.1}, "wandb": {"api_key": "SECRET-123"}, "hf_token": "hf_SECRET"}
REDACTED_FLAT = {"optimizer/lr": 0.1, "wandb/api_key": REDACTED, "hf_token": REDACTED}
REDACTED_NESTED = {"optimizer": {"lr": 0.1}, "wandb": {"api_key": REDACTED}, "hf_token": REDACTED}


def _files_holding(root: Path, needle: bytes = b"SECRET") -> list[str]:
    """Every file under ``root`` whose raw bytes contain ``needle``."""
    return sorted(str(path) for path in root.rglob("*") if path.is_file() and needle in path.read_bytes())


# ---- 1. which keys are credentials ---------------------------------------------------------------

SECRET_KEYS = [
    "api_key",
    "apiKey",
    "API_KEY",
    "Api Key",
    "x-api-key",
    "wandb/api_key",
    "wandb.api_key",
    "OPENAI_API_KEY",
    "AWS_SECRET_ACCESS_KEY",
    "access_key_id",
    "password",
    "db_password",
    "db/password",
    "MY_PASSWD",
    "passphrase",
    "hf_token",
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "auth_token",
    "authToken",
    "access_token",
    "refresh_token",
    "AWS_SESSION_TOKEN",
    "token",
    "client_secret",
    "client-secret",
    "private_key",
    "privateKey",
    "secret_key",
    "session_key",
    "credentials",
    "secret",
    "secrets",
    "SECRET",
    "authorization",
    "cookie",
    "use_auth_token",
]

KEPT_KEYS = [
    "max_tokens",
    "max_new_tokens",
    "num_tokens",
    "tokens",
    "special_tokens",
    "tokenizer",
    "tokenizer_name",
    "tokenizer/name",
    "token_id",
    "token_count",
    "eos_token",
    "bos_token",
    "pad_token",
    "pad_token_id",
    "mask_token",
    "learning_rate",
    "keyboard",
    "keystone",
    "monkey",
    "key",
    "keys",
    "passthrough",
    "passenger",
    "secretary",
    "session_id",
    "optimizer/lr",
]


@pytest.mark.parametrize("key", SECRET_KEYS)
def test_credential_keys_are_secret_and_their_values_redacted(key: str) -> None:
    assert is_secret_key(key)
    assert redact({key: "hunter2"}) == {key: REDACTED}
    assert redact({"outer": {key: 12345}}) == {"outer": {key: REDACTED}}  # numbers too, at any depth


@pytest.mark.parametrize("key", KEPT_KEYS)
def test_ordinary_keys_are_kept(key: str) -> None:
    assert not is_secret_key(key)
    assert redact({key: "value", "nested": {key: 3}}) == {key: "value", "nested": {key: 3}}


@pytest.mark.parametrize("key", ["api_keys", "passwords", "access_keys", "private_keys", "db_passwords"])
def test_plural_credential_keys_are_secret(key: str) -> None:
    assert is_secret_key(key)
    assert redact({key: {"openai": "sk-SECRET"}}) == {key: REDACTED}


@pytest.mark.parametrize("key", ["use_auth_token", "api_key", "password", "hf_token"])
@pytest.mark.parametrize("value", [True, False, None])
def test_values_that_cannot_be_credentials_are_kept(key: str, value: Any) -> None:
    assert redact({key: value}) == {key: value}


def test_a_credential_key_redacts_its_whole_nested_value() -> None:
    hparams = {
        "credentials": {"user": "me", "password": "SECRET"},
        "secret": {"nested": {"deeper": "SECRET"}},
        "wandb": {"api_key": "SECRET", "project": "p", "tags": ["a"]},
        "lr": 0.1,
    }
    assert redact(hparams) == {
        "credentials": REDACTED,
        "secret": REDACTED,
        "wandb": {"api_key": REDACTED, "project": "p", "tags": ["a"]},
        "lr": 0.1,
    }
    assert hparams["credentials"] == {"user": "me", "password": "SECRET"}  # the input is not changed


def test_flat_path_keys_are_redacted_by_any_component() -> None:
    assert redact({"db/password/value": "SECRET", "db/host": "localhost", 3: "three"}) == {
        "db/password/value": REDACTED,
        "db/host": "localhost",
        3: "three",
    }


def test_credentials_inside_lists_are_redacted() -> None:
    assert redact({"loggers": [{"type": "wandb", "api_key": "SECRET"}]}) == {
        "loggers": [{"type": "wandb", "api_key": REDACTED}]
    }


# ---- 2. every built-in backend redacts what it is given directly ---------------------------------


def test_local_tracker_stores_redacted_hyperparameters(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    with LocalTracker(path, run_id="redacted") as tracker:
        tracker.log_hyperparameters(HPARAMS)
        tracker.log({"loss": 1.0}, step=0)
    with RunStore(path) as store:
        assert store.config("redacted") == REDACTED_FLAT
    assert _files_holding(tmp_path) == []


def _tensorboard_hparams(logdir: Path) -> dict[str, Any]:
    accumulator = EventAccumulator(os.fspath(logdir), size_guidance={"tensors": 0})
    accumulator.Reload()
    content = accumulator.PluginTagToContent(hparams_metadata.PLUGIN_NAME)[hparams_metadata.SESSION_START_INFO_TAG]
    info = hparams_metadata.parse_session_start_info_plugin_data(content)
    return {key: getattr(value, value.WhichOneof("kind")) for key, value in info.hparams.items()}


def test_tensorboard_tracker_writes_redacted_hyperparameters(tmp_path: Path) -> None:
    logdir = tmp_path / "tb"
    with TensorboardTracker(logdir) as tracker:
        tracker.log_hyperparameters(HPARAMS)
        tracker.log({"loss": 1.0}, step=0)
    assert _tensorboard_hparams(logdir) == REDACTED_FLAT
    assert list(logdir.glob("events.out.tfevents.*"))
    assert _files_holding(tmp_path) == []


@pytest.fixture
def wandb_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Offline, silent, every wandb directory under ``tmp_path`` (as in tests/trackers/test_wandb.py)."""
    for var, name in (
        ("WANDB_DIR", "runs"),
        ("WANDB_CACHE_DIR", "wandb-cache"),
        ("WANDB_CONFIG_DIR", "wandb-config"),
        ("WANDB_DATA_DIR", "wandb-data"),
    ):
        (tmp_path / name).mkdir()
        monkeypatch.setenv(var, str(tmp_path / name))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_MODE", "offline")
    wandb.teardown()
    yield tmp_path / "runs"
    if wandb.run is not None:
        wandb.run.finish()
    wandb.teardown()


def test_wandb_tracker_writes_redacted_config(wandb_dirs: Path, tmp_path: Path) -> None:
    tracker = WandbTracker(project="jaxtrack-tests", mode="offline", dir=str(wandb_dirs))
    tracker.log_hyperparameters(HPARAMS)
    tracker.log({"loss": 1.0}, step=0)
    tracker.finish()
    files = read_run(wandb_dirs)
    assert files.exited
    assert {key: value for key, value in files.config.items() if key != "_wandb"} == REDACTED_FLAT
    config_yaml = files.files_dir / "config.yaml"
    if config_yaml.exists():
        assert REDACTED in config_yaml.read_text()
    assert _files_holding(tmp_path) == []


def test_console_tracker_logs_redacted_hyperparameters(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="test.redaction.console")
    tracker = jt.ConsoleTracker(logger="test.redaction.console")
    tracker.log_hyperparameters(HPARAMS)
    tracker.finish()
    (line,) = [r.getMessage() for r in caplog.records if r.name == "test.redaction.console"]
    assert line == "hyperparameters | optimizer/lr 0.1 | wandb/api_key '[redacted]' | hf_token '[redacted]'"
    assert "SECRET" not in caplog.text


def test_json_lines_file_holds_redacted_hyperparameters_and_text(tmp_path: Path) -> None:
    tracker = jt.JsonLinesTracker(tmp_path / "run.jsonl")
    tracker.log_hyperparameters(HPARAMS)
    tracker.log({"note": "connect to postgres://u:SECRET@h/db"}, step=0)
    tracker.finish()
    records = [json.loads(line) for line in (tmp_path / "run.jsonl").read_text().splitlines()]
    assert records[0]["hyperparameters"] == REDACTED_FLAT
    assert records[1]["note"] == "connect to postgres://u:[redacted]@h/db"
    assert _files_holding(tmp_path) == []


def test_clu_writer_behind_from_metric_writer_gets_redacted_hparams(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    tracker = from_metric_writer(load_metric_writers().LoggingWriter())
    tracker.log_hyperparameters(HPARAMS)
    tracker.finish()
    lines = [r.getMessage() for r in caplog.records if r.name == "absl"]
    assert lines == [f"[Hyperparameters] {REDACTED_FLAT}"]
    assert "SECRET" not in caplog.text


def test_clu_write_hparams_into_a_local_tracker_is_redacted(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    writer = as_metric_writer(LocalTracker(path, run_id="clu"))
    writer.write_hparams(HPARAMS)
    writer.write_scalars(0, {"loss": 1.0})
    writer.close()
    assert RunStore(path).config("clu") == REDACTED_FLAT
    assert _files_holding(tmp_path) == []


def test_clu_write_hparams_into_a_user_tracker_is_redacted() -> None:
    recording = RecordingTracker()
    writer = as_metric_writer(recording)
    writer.write_hparams(HPARAMS)
    writer.close()
    assert recording.hparams == [REDACTED_FLAT]


# ---- 3. the module functions redact before any backend, user-written ones included ---------------


def test_log_hyperparameters_redacts_for_a_user_tracker() -> None:
    recording = RecordingTracker()
    with jt.current_tracker(recording):
        jt.log_hyperparameters(HPARAMS)
        assert jt.flush(timeout=60)
    assert recording.hparams == [REDACTED_FLAT]
    assert HPARAMS["wandb"]["api_key"] == "SECRET-123"  # the caller's dict is not changed


@dataclasses.dataclass
class WandbSettings:
    project: str = "p"
    api_key: str = "SECRET-123"


@dataclasses.dataclass
class TrainConfig:
    optimizer: dict = dataclasses.field(default_factory=lambda: {"lr": 0.1})
    wandb: WandbSettings = dataclasses.field(default_factory=WandbSettings)
    hf_token: str = "hf_SECRET"


@pytest.mark.parametrize(
    "config",
    [
        HPARAMS,
        TrainConfig(),
        ml_collections.ConfigDict(HPARAMS),
    ],
    ids=["dict", "dataclass", "config-dict"],
)
def test_log_configuration_redacts_the_hyperparameters_and_the_yaml_artifact(
    config: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where log_configuration writes its YAML
    recording = RecordingTracker()
    with jt.current_tracker(recording):
        jt.log_configuration(config)
        assert jt.flush(timeout=60)
    expected_flat = dict(REDACTED_FLAT)
    expected_nested: dict[str, Any] = dict(REDACTED_NESTED)
    if isinstance(config, TrainConfig):
        expected_flat["wandb/project"] = "p"
        expected_nested["wandb"] = {"project": "p", "api_key": REDACTED}
    assert recording.hparams == [expected_flat]
    ((_, name, kind, content),) = recording.artifacts
    assert (name, kind) == ("config", "config")
    assert content is not None and b"SECRET" not in content
    assert yaml.safe_load(content) == expected_nested
    assert _files_holding(tmp_path) == []  # the temporary YAML is gone, and held no secret anyway


def test_log_hyperparameters_to_a_local_store_through_the_module_functions(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    jt.init_tracker({"type": "local", "path": str(path)}, run_id="module")
    jt.log_hyperparameters(HPARAMS)
    jt.log_configuration({"db": {"password": "SECRET", "host": "localhost"}}, name="db")
    jt.finish()
    with RunStore(path) as store:
        assert store.config("module") == {**REDACTED_FLAT, "db/password": REDACTED, "db/host": "localhost"}
        (artifact,) = store.artifacts("module")
    assert yaml.safe_load(Path(artifact["path"]).read_text()) == {"db": {"password": REDACTED, "host": "localhost"}}
    assert _files_holding(tmp_path) == []


# ---- 4. credentials inside values that are not dicts ---------------------------------------------

NOT_DICT_VALUES = {
    "dataclass": lambda: {"wandb": WandbSettings()},
    "config-dict": lambda: {"wandb": ml_collections.ConfigDict({"api_key": "SECRET-123", "project": "p"})},
    "list-of-dicts": lambda: {"loggers": [{"type": "wandb", "api_key": "SECRET-123"}]},
}


@pytest.mark.parametrize("make", NOT_DICT_VALUES.values(), ids=NOT_DICT_VALUES.keys())
def test_credentials_inside_non_dict_values_are_redacted_by_the_local_tracker(make: Any, tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    with LocalTracker(path, run_id="values") as tracker:
        tracker.log_hyperparameters(make())
    assert "SECRET" not in repr(RunStore(path).config("values"))


@pytest.mark.parametrize("make", NOT_DICT_VALUES.values(), ids=NOT_DICT_VALUES.keys())
def test_credentials_inside_non_dict_values_never_reach_a_user_tracker(make: Any) -> None:
    recording = RecordingTracker()
    with jt.current_tracker(recording):
        jt.log_hyperparameters(make())
        assert jt.flush(timeout=60)
    assert "SECRET" not in repr(recording.hparams)


# ---- 5. credentials found by their value, whatever the key ---------------------------------------
# Fakes in the real formats: each is what the format's rule must catch (AWS's own documented example id).

OPENAI_KEY = "sk-proj-Zq81xTb4Lm0pQ2wE9rT7yU3iO5aS6dF8gH1jK4lZ"
ANTHROPIC_KEY = "sk-ant-api03-FAKEfake0123456789FAKEfake0123456789-AbCd_EfGh"
GITHUB_TOKEN = "ghp_FAKEfakeFAKEfake0123456789abcdefABCD"
GITHUB_PAT = "github_pat_11FAKEFAKE0abcdefghijkl_mnopqrstuvwxyz0123456789ABCDEFGHIJ"
SLACK_TOKEN = "xoxb-1234567890-1234567890123-FaKeFaKeFaKeFaKeFaKeFaKe"
AWS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"
JWT = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.Zq81xT-fAkEsIgNaTuRe_0123456789abcdef"
HF_TOKEN = "hf_FaKeFaKeFaKeFaKeFaKeFaKeFaKeFaKeFa"
PEM = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAAFAKE\nFAKEFAKEFAKE==\n-----END OPENSSH PRIVATE KEY-----"

SECRET_TEXTS = {
    # passwords inside URLs: the URL is kept, its password goes
    "postgres": ("postgres://u:pw@h/db", "postgres://u:[redacted]@h/db"),
    "postgres-port": (
        "postgresql://train:Zq81xT@db.internal:5432/runs",
        "postgresql://train:[redacted]@db.internal:5432/runs",
    ),
    "redis-no-user": ("redis://:s3cretpw@cache:6379/0", "redis://:[redacted]@cache:6379/0"),
    "at-in-password": ("https://alice:p@ss@host/x", "https://alice:[redacted]@host/x"),
    "mongodb-srv": (
        "mongodb+srv://admin:hunter2@cluster0.mongodb.net/?retryWrites=true",
        "mongodb+srv://admin:[redacted]@cluster0.mongodb.net/?retryWrites=true",
    ),
    "in-a-sentence": (
        "writing to mysql://root:toor@10.0.0.2/db now",
        "writing to mysql://root:[redacted]@10.0.0.2/db now",
    ),
    # keys given as a URL's user, webhooks, signed URLs
    "sentry-dsn": (
        "https://0123456789abcdef0123456789abcdef@o123.ingest.sentry.io/1",
        "https://[redacted]@o123.ingest.sentry.io/1",
    ),
    "slack-webhook": (
        "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX",
        "https://hooks.slack.com/services/[redacted]",
    ),
    "discord-webhook": (
        "https://discord.com/api/webhooks/1234567/FaKeToKeN",
        "https://discord.com/api/webhooks/[redacted]",
    ),
    "query-token": (
        "https://api.example.com/v1?access_token=abc123&page=2",
        "https://api.example.com/v1?access_token=[redacted]&page=2",
    ),
    "query-key": ("https://maps.example.com/api?key=Zq81xTb4&q=1", "https://maps.example.com/api?key=[redacted]&q=1"),
    "s3-presigned": (
        "https://b.s3.amazonaws.com/k?X-Amz-Credential=ID%2F20240101&X-Amz-Signature=abc123def",
        "https://b.s3.amazonaws.com/k?X-Amz-Credential=[redacted]&X-Amz-Signature=[redacted]",
    ),
    # connection strings
    "azure-storage": (
        "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=Zm9vYmFy+/Zm9v==;EndpointSuffix=core.windows.net",
        "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=[redacted];EndpointSuffix=core.windows.net",
    ),
    "azure-sas": (
        "BlobEndpoint=https://a.blob.core.windows.net/;SharedAccessSignature=sv=2022-11-02&ss=b&sig=AbC%2Bdef%3D",
        "BlobEndpoint=https://a.blob.core.windows.net/;SharedAccessSignature=[redacted]&ss=b&sig=[redacted]",
    ),
    "azure-service-bus": (
        "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKey=abcDEF123+/=",
        "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKey=[redacted]",
    ),
    "odbc": ("Server=db;Database=train;Uid=sa;Pwd=Hunter2!;", "Server=db;Database=train;Uid=sa;Pwd=[redacted];"),
    # headers and schemes
    "bearer": (f"Bearer {JWT}", "Bearer [redacted]"),
    "bearer-opaque": ("bearer abcdef0123456789", "bearer [redacted]"),
    "authorization-header": ("Authorization: Token 0123456789abcdef", "Authorization: [redacted]"),
    "basic": ("Basic dXNlcjpodW50ZXIy", "Basic [redacted]"),
    # a credential's name next to its value, in any notation
    "env-line": ("OPENAI_API_KEY=hunter2", "OPENAI_API_KEY=[redacted]"),
    "cli-flag": ("python train.py --password hunter2 --lr 0.1", "python train.py --password [redacted] --lr 0.1"),
    "cli-flag-equals": ("--wandb-api-key=abc123 --lr=0.1", "--wandb-api-key=[redacted] --lr=0.1"),
    "json": ('{"api_key": "abc123", "lr": 0.1}', '{"api_key": "[redacted]", "lr": 0.1}'),
    "yaml": ("wandb:\n  api_key: abc123\n  project: p\n", "wandb:\n  api_key: [redacted]\n  project: p\n"),
    "repr": ("Settings(api_key='abc123', lr=0.1)", "Settings(api_key='[redacted]', lr=0.1)"),
    "nested-note": ("note: password=hunter2", "note: password=[redacted]"),
    "quoted-with-spaces": ('passphrase = "correct horse battery" ok', 'passphrase = "[redacted]" ok'),
    "quoted-flag": ('--password "two words" --lr 1', '--password "[redacted]" --lr 1'),
    "yaml-line": ("passphrase: correct horse battery staple\nlr: 0.1", "passphrase: [redacted]\nlr: 0.1"),
    "json-header": ('{"Authorization": "Token abc def"}', '{"Authorization": "[redacted]"}'),
    # known token formats, alone and inside text
    "openai": (OPENAI_KEY, REDACTED),
    "anthropic": (ANTHROPIC_KEY, REDACTED),
    "github": (GITHUB_TOKEN, REDACTED),
    "github-pat": (GITHUB_PAT, REDACTED),
    "slack": (SLACK_TOKEN, REDACTED),
    "aws": (AWS_KEY_ID, REDACTED),
    "jwt": (JWT, REDACTED),
    "hugging-face": (HF_TOKEN, REDACTED),
    "google": ("AIzaSyFAKEfake0123456789FAKEfake0123456", REDACTED),
    "pem": (PEM, REDACTED),
    "pgp": (
        "-----BEGIN PGP PRIVATE KEY BLOCK-----\nlQOYBFAKE\n-----END PGP PRIVATE KEY BLOCK-----\nrest",
        f"{REDACTED}\nrest",
    ),
    "token-in-text": (f"evaluated with {OPENAI_KEY} on 3 tasks", "evaluated with [redacted] on 3 tasks"),
    "clone-url": (f"https://{GITHUB_TOKEN}@github.com/org/repo.git", "https://[redacted]@github.com/org/repo.git"),
}


@pytest.mark.parametrize(("text", "expected"), SECRET_TEXTS.values(), ids=SECRET_TEXTS.keys())
def test_credentials_in_text_are_redacted_whatever_the_key(text: str, expected: str) -> None:
    assert redact({"note": text}) == {"note": expected}
    assert redact({"runs": [{"env": {"VALUE": text}}]}) == {"runs": [{"env": {"VALUE": expected}}]}


KEPT_TEXTS = [
    "gpt2",
    "meta-llama/Llama-2-7b",
    "meta-llama/Llama-2-7b-chat-hf",
    "openai/whisper-large-v3",
    "9fceb02d0ae598e95dc970b74767f19372d61af8",  # a git commit
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",  # a SHA-256 of a data set
    "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "550e8400-e29b-41d4-a716-446655440000",
    "dGhpcyBpcyBqdXN0IGRhdGE=",  # base64 of data
    "sk-learn",
    "scikit-learn",
    "sk-learn-style-estimator-2",
    "skip_keys",
    "hf_hub_download",
    "hf://datasets/imdb",
    "https://huggingface.co/meta-llama/Llama-2-7b",
    "https://wandb.ai/entity/project/runs/abc123",
    "http://localhost:8080/v1/completions",
    "https://user@example.com/path",
    "https://firstname.lastname@git.example.com/repo.git",
    "git@github.com:org/repo.git",
    "ssh://git@github.com/org/repo.git",
    "s3://bucket/train-00001-of-00064.tfrecord",
    "postgres://localhost/db",
    "user@example.com",
    "epoch 3: loss=0.52, acc=0.91, lr=3e-4",
    "max_tokens=4096",
    "eos_token=</s>",
    "tokenizer: gpt2",
    "token_budget: 1000000",
    "rng_key: 0",
    "--use_auth_token --lr 1",
    "Basic settings for everyone",
    "bearer of bad news",
    "time: 12:30:45",
    "AKIA",
    "xoxo",
]


@pytest.mark.parametrize("text", KEPT_TEXTS)
def test_look_alikes_of_credentials_stay_readable(text: str) -> None:
    assert redact({"note": text}) == {"note": text}


@pytest.mark.parametrize(
    "key",
    [
        "OPENAI_KEY",
        "ssh_key",
        "jwt",
        "GITHUB_PAT",
        "SENTRY_DSN",
        "AccountKey",
        "SharedAccessSignature",
        "basic_auth",
        "auth",
    ],
)
def test_more_credential_names(key: str) -> None:
    assert is_secret_key(key)
    assert redact({key: "Zq81xT"}) == {key: REDACTED}


@pytest.mark.parametrize(
    "key",
    [
        "skip_keys",
        "rng_key",
        "dropout_key",
        "sort_key",
        "token_budget",
        "num_keys",
        "openai_model",
        "auth_method",
        "author",
    ],
)
def test_more_ordinary_names(key: str) -> None:
    assert not is_secret_key(key)


def test_a_string_subclass_keeps_its_type_unless_it_holds_a_credential() -> None:
    import enum

    class Mode(enum.StrEnum):
        FAST = "fast"

    redacted = redact({"mode": Mode.FAST})
    assert redacted["mode"] is Mode.FAST


@pytest.mark.timeout(60)
def test_pathological_text_is_redacted_in_linear_time() -> None:
    # Every rule is anchored so that a text costs a few passes: these take well under a second each, and
    # hours with a rule that backtracks over the text at every position (quadratic in its length).
    n = 100_000
    texts = ["a=" * n, "sk-" + "a-" * n, "eyJaaaaaaaaaa." * (n // 7), "a://b:" + "c@" * n, "x" * 2 * n + ":"]
    for text in texts:
        assert isinstance(redact({"note": text})["note"], str)


# ---- 6. text values, summaries and hyperparameters shown by their repr, through the pipeline ----


class OpaqueSettings:
    """A settings object that is neither a mapping nor a dataclass (as a pydantic model): logged as its repr."""

    def __repr__(self) -> str:
        return "OpaqueSettings(api_key='Zq81xT-repr', endpoint='https://svc:Zq81xT-pw@svc.internal')"


def test_text_values_summaries_and_captions_reach_no_backend_with_a_credential() -> None:
    recording = RecordingTracker()
    image = jt.Image(np.zeros((2, 2), np.uint8), caption=f"sample by {HF_TOKEN}")
    with jt.current_tracker(recording):
        jt.log({"loss": 0.5, "note": "db at postgres://u:Zq81xT@h/db", "sample": image}, step=0)
        jt.log_summary({"best": 0.1, "endpoint": f"Bearer {JWT}"})
        jt.log_hyperparameters({"settings": OpaqueSettings()})
        assert jt.flush(timeout=60)
    ((step, logged, _),) = recording.logs
    assert (step, logged["loss"], logged["note"]) == (0, 0.5, "db at postgres://u:[redacted]@h/db")
    assert logged["sample"].caption == "sample by [redacted]"
    assert recording.summaries == [{"best": 0.1, "endpoint": "Bearer [redacted]"}]
    assert recording.hparams == [
        {"settings": "OpaqueSettings(api_key='[redacted]', endpoint='https://svc:[redacted]@svc.internal')"}
    ]


# ---- 7. W&B's own config= argument, and a W&B run started elsewhere ------------------------------

WANDB_CONFIG = {"db": {"password": "Zq81xT-pw", "host": "h"}, "url": "postgres://u:Zq81xT-url@h/db", "lr": 0.1}
WANDB_CONFIG_REDACTED = {"db": {"password": REDACTED, "host": "h"}, "url": "postgres://u:[redacted]@h/db", "lr": 0.1}


def _wandb_config_as(form: str, directory: Path) -> Any:
    if form == "dict":
        return WANDB_CONFIG
    if form == "namespace":
        return argparse.Namespace(**WANDB_CONFIG)
    path = directory / "config.yaml"  # W&B reads a config given as a path itself, in its own layout
    path.write_text(yaml.safe_dump({key: {"value": value} for key, value in WANDB_CONFIG.items()}))
    return str(path)


@pytest.mark.parametrize("form", ["dict", "namespace", "yaml-file"])
def test_wandb_config_argument_is_redacted_before_wandb_sees_it(
    form: str, wandb_dirs: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    config = _wandb_config_as(form, tmp_path_factory.mktemp("user-files"))
    tracker = WandbTracker(project="jaxtrack-tests", mode="offline", dir=str(wandb_dirs), config=config)
    tracker.log({"loss": 1.0}, step=0)
    tracker.finish()
    files = read_run(wandb_dirs)
    assert files.exited
    assert {key: value for key, value in files.config.items() if key != "_wandb"} == WANDB_CONFIG_REDACTED
    # Nothing W&B wrote holds them: the run file, debug.log, config.yaml, its caches.
    assert _files_holding(wandb_dirs.parent, b"Zq81xT") == []


def test_a_wandb_run_started_elsewhere_with_credentials_in_its_config_is_named_in_a_warning(wandb_dirs: Path) -> None:
    run = wandb.init(
        project="jaxtrack-tests", mode="offline", dir=str(wandb_dirs), config={"api_key": "Zq81xT", "lr": 1}
    )
    with pytest.warns(jt.CredentialWarning, match="api_key") as caught:
        tracker = WandbTracker(run)
    tracker.finish()
    assert "Zq81xT" not in str(caught[0].message)


# ---- 8. secrets planted in every place a user could put one, every byte written searched -------


@dataclasses.dataclass
class ServiceConfig:
    database_url: str
    wandb_api_key: str
    notes: str


def _bytes_holding(root: Path, needles: dict[str, str]) -> dict[str, list[str]]:
    """``{secret name: [files under root whose raw bytes hold it]}``, for the secrets found."""
    found: dict[str, list[str]] = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            for name, needle in needles.items():
                if needle.encode() in data:
                    found.setdefault(name, []).append(str(path.relative_to(root)))
    return found


def test_secrets_planted_everywhere_reach_no_byte_any_backend_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    runs_dir = wandb_offline(tmp_path, monkeypatch)
    bearer, basic = "opaque-bearer-Zq81xT0123", base64.b64encode(b"svc:Zq81xT-basic").decode()
    pem_body = "b3BlbnNzaC1rZXktdjEAAAAAZq81xTpemBODY"
    # Each secret, as the distinctive text searched for in every byte written.
    secrets = {
        "nested url password": "pw1-Zq81xT",
        "flat url password": "pw2-Zq81xT",
        "config= url password": "pw3-Zq81xT",
        "summary url password": "pw4-Zq81xT",
        "dataclass url password": "pw5-Zq81xT",
        "dataclass api key": "dc-api-key-Zq81xT",
        "OPENAI_KEY": OPENAI_KEY,
        "GITHUB_PAT": GITHUB_PAT,
        "ssh_key": pem_body,
        "jwt": JWT,
        "auth bearer": bearer,
        "basic credentials": basic,
        "sentry dsn key": "0123456789abcdef0123456789abcdef",
        "slack webhook": "XXFakeWebhookSecretZq81xT",
        "azure account key": "Zm9vYmFyZq81xTAzure+/==",
        "aws key id": AWS_KEY_ID,
        "hf token": HF_TOKEN,
        "anthropic key": ANTHROPIC_KEY,
        "github token": GITHUB_TOKEN,
        "slack token": SLACK_TOKEN,
        "repr'd api key": "Zq81xT-repr",
        "repr'd password": "Zq81xT-pw",
        "image caption": "caption-pw-Zq81xT",
        "run name": "ghp_RunNameFAKE0123456789abcdefABCDEFGHIJ",
    }
    caplog.set_level(logging.DEBUG)
    jt.init_tracker(
        [
            LocalTracker(tmp_path / "store" / "runs.db", run_id="planted", name=f"sweep {secrets['run name']}"),
            TensorboardTracker(tmp_path / "tb"),
            WandbTracker(
                project="jaxtrack-tests",
                mode="offline",
                dir=str(runs_dir),
                name=f"sweep {secrets['run name']}",
                notes=f"posting to {SLACK_TOKEN}",
                config={
                    "eval": {"endpoint": f"https://u:{secrets['config= url password']}@eval.internal/v1"},
                    "token": HF_TOKEN,
                },
            ),
            jt.ConsoleTracker(logger="test.planted"),
        ]
    )
    # hyperparameters, nested and flat, with an environment-like dict whose names say nothing
    jt.log_hyperparameters(
        {
            "db": {"url": f"postgres://train:{secrets['nested url password']}@db/runs"},
            "openai": {"OPENAI_KEY": OPENAI_KEY},
            "auth": f"Bearer {bearer}",
            "db/replica": f"mysql://ro:{secrets['flat url password']}@replica/db",
            "ssh_key": f"-----BEGIN OPENSSH PRIVATE KEY-----\n{pem_body}\n-----END OPENSSH PRIVATE KEY-----",
            "jwt": JWT,
            "GITHUB_PAT": GITHUB_PAT,
            "settings": OpaqueSettings(),
            "env": {
                "SENTRY": f"https://{secrets['sentry dsn key']}@o123.ingest.sentry.io/1",
                "NOTIFY": f"https://hooks.slack.com/services/T0/B0/{secrets['slack webhook']}",
                "STORAGE": f"DefaultEndpointsProtocol=https;AccountName=a;AccountKey={secrets['azure account key']};",
                "PROXY": f"Basic {basic}",
                "AWS": AWS_KEY_ID,
                "HOME": "/root",
            },
        }
    )
    jt.log_configuration(
        ServiceConfig(
            database_url=f"postgresql://svc:{secrets['dataclass url password']}@db/svc",
            wandb_api_key=secrets["dataclass api key"],
            notes=f"pushed with {GITHUB_TOKEN}",
        )
    )
    caption = f"served with Authorization: Bearer {secrets['image caption']}"
    jt.log({"loss": 0.5, "note": f"evaluated with {ANTHROPIC_KEY}"}, step=0)
    jt.log({"loss": 0.4, "sample": jt.Image(np.zeros((4, 4, 3), np.uint8), caption=caption)}, step=1)
    jt.log_summary({"best_loss": 0.4, "endpoint": f"https://admin:{secrets['summary url password']}@api.internal"})
    assert jt.flush(timeout=60)
    assert (tmp_path / "store" / "runs.db-wal").exists()  # searched too, before finish checkpoints it away
    written_while_running = _bytes_holding(tmp_path, secrets)
    jt.finish()
    assert read_run(runs_dir).exited  # W&B writes its files after finish() returned: wait for all of them

    assert written_while_running == {}
    assert _bytes_holding(tmp_path, secrets) == {}
    captured = capfd.readouterr()
    for text in (caplog.text, captured.out, captured.err):
        assert [name for name, secret in secrets.items() if secret in text] == []
    # What was kept is still readable: the URLs, the names, the numbers.
    with RunStore(tmp_path / "store" / "runs.db") as store:
        config = store.config("planted")
        (run,) = store.runs()
    assert config["db/url"] == "postgres://train:[redacted]@db/runs"
    assert config["env/HOME"] == "/root"
    assert config["openai/OPENAI_KEY"] == config["ssh_key"] == config["jwt"] == config["GITHUB_PAT"] == REDACTED
    assert run.name == "sweep [redacted]"
    assert "[redacted]" in caplog.text and "loss" in caplog.text


def test_a_text_logged_under_a_credentials_name_goes_whole_and_special_tokens_stay(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    jt.init_tracker({"type": "local", "path": str(path)}, run_id="named")
    jt.log({"db_password": "hunter2hunter2", "pad_token": "<pad>", "note": "password=hunter2hunter2"}, step=0)
    jt.log_summary({"api_key": "abc123def456", "video_token": "<|video_pad|>"})
    jt.finish()
    with RunStore(path) as store:
        assert store.history("named") == [
            {"step": 0, "db_password": "[redacted]", "pad_token": "<pad>", "note": "password=[redacted]"}
        ]
        assert store.run("named").summary == {"api_key": "[redacted]", "video_token": "<|video_pad|>"}
    assert b"hunter2" not in path.read_bytes() and b"abc123def456" not in path.read_bytes()


@pytest.mark.parametrize("key", ["TELEGRAM_BOT_TOKEN", "bot_token", "DB_PWD", "MYSQL_PWD", "passcode"])
def test_names_of_bot_tokens_and_short_password_names_are_credentials(key: str) -> None:
    assert redact({key: "s3cr3t-value"}) == {key: "[redacted]"}


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("video_token", "<|video_pad|>"),
        ("boi_token", "<start_of_image>"),
        ("mask_token", "[MASK]"),
        ("bos_token", "<s>"),
    ],
)
def test_a_special_token_under_a_token_name_stays_readable(key: str, value: str) -> None:
    assert redact({key: value}) == {key: value}
