"""Weights & Biases: metrics to the run's history, summaries, config, artifacts.

Needs ``pip install 'jaxtrack[wandb]'``. Works offline (``mode="offline"``)
with no account; ``wandb sync`` uploads such a run later.

``DEFAULT_STEP_METRIC`` (``"global_step"``) is the metric each row's step is
recorded in; ``DEFAULT_INIT_TIMEOUT_SECS`` (30) is how long an online
``wandb.init`` may try to reach W&B before the run goes offline instead.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections.abc import Mapping
from typing import Any, Literal, cast

import numpy as np

from jaxtrack._artifacts import scan_artifact, warn_skipped
from jaxtrack._optional import import_optional
from jaxtrack._paths import safe_file_name
from jaxtrack.errors import CredentialWarning, warn
from jaxtrack.ids import validate_run_id
from jaxtrack.multihost import per_process, writes
from jaxtrack.redaction import redact, redact_text
from jaxtrack.trackers.base import Tracker
from jaxtrack.trackers.config import TrackerConfig
from jaxtrack.values import DEFAULT_NUM_BINS, Histogram, HostValue, Image, flatten

logger = logging.getLogger(__name__)

DEFAULT_STEP_METRIC = "global_step"
"""The W&B metric each row's step is recorded in, the x-axis of every chart."""
_MAX_WANDB_BINS = 512  # wandb.Histogram's limit


def _wandb() -> Any:
    return import_optional("wandb", extra="wandb", purpose="WandbTracker")


class WandbTracker(Tracker):
    """Logs to a W&B run: the one given, or one it starts with ``wandb.init(**wandb_init_kwargs)``.

    Steps are recorded in a step metric of their own (``global_step`` by
    default, the x-axis of every chart through ``define_metric``) instead of
    W&B's internal ``step``, which only goes up: a run resumed from an older
    checkpoint logs steps lower than those already in the run, and W&B would
    silently drop them. With a step metric they are all kept, each row
    carrying the step it was logged at.

    Arrays and [`Histogram`][jaxtrack.Histogram] values become ``wandb.Histogram``,
    [`Image`][jaxtrack.Image] values ``wandb.Image``, hyperparameters go to the
    run config, summaries to the run summary, artifacts to W&B artifacts (no
    link out of a directory artifact is followed: see
    [`ArtifactWarning`][jaxtrack.errors.ArtifactWarning]). The
    run's exit code is 0 when it finished and 1 when it ``failed`` or was
    ``killed`` (W&B has no "killed"). Credentials are redacted before W&B
    sees them (see [`jaxtrack.redaction`][jaxtrack.redaction]): in
    ``config=`` (a dict, an ``argparse.Namespace``, absl flags or a YAML file's
    path, read as ``wandb.init`` reads them), in the run's ``name``, ``notes``,
    ``tags``, ``group`` and ``job_type``, and in everything logged. A run
    started elsewhere (``run=``, or ``wandb.run``) wrote its config before
    jaxtrack saw it: a [`CredentialWarning`][jaxtrack.errors.CredentialWarning] names
    the keys that hold one. In a multi-process JAX run,
    only process 0 starts a real run; the others get a disabled one (unless
    ``all_processes``).

    Args:
        run: an existing ``wandb`` run; ``None`` uses ``wandb.run`` when no
            ``wandb_init_kwargs`` are given and a run is active, else starts one.
        step_metric: the name of the step metric.
        histogram_bins: buckets of the histogram made from an array value (at most 512).
        all_processes: in a multi-process run, every process starts a run: process
            ``i`` the run ``<id>-process<i>``, all in the W&B group named by the id.
        **wandb_init_kwargs: passed to ``wandb.init`` when a run is started (a relative ``dir`` made absolute).

    Examples:
        >>> import os, tempfile
        >>> from jaxtrack.trackers.wandb import WandbTracker
        >>> os.environ["WANDB_SILENT"] = "true"
        >>> tracker = WandbTracker(project="doc", mode="offline", dir=tempfile.mkdtemp())
        >>> tracker.log({"loss": 0.5}, step=0)
        >>> tracker.finish()
    """

    name = "wandb"
    when_full = "drop_oldest"  # a remote service that is down must not stop training nor grow memory

    def __init__(
        self,
        run: Any = None,
        *,
        step_metric: str = DEFAULT_STEP_METRIC,
        histogram_bins: int = DEFAULT_NUM_BINS,
        all_processes: bool = False,
        **wandb_init_kwargs: Any,
    ) -> None:
        wandb = _wandb()
        if not 1 <= histogram_bins <= _MAX_WANDB_BINS:
            raise ValueError(f"histogram_bins must be between 1 and {_MAX_WANDB_BINS} for W&B, got {histogram_bins}")
        if wandb_init_kwargs.get("dir") is not None:
            # Absolute when the run starts: W&B keeps the relative path, so after an os.chdir
            # (Hydra makes one) the run's directory would name a folder that is not there.
            wandb_init_kwargs = {**wandb_init_kwargs, "dir": os.path.abspath(wandb_init_kwargs["dir"])}
        if run is None:
            if wandb.run is not None and not wandb_init_kwargs:
                run = wandb.run
                _warn_of_credentials_in_config(run)
            else:
                wandb_init_kwargs = _redacted_init_kwargs(wandb, wandb_init_kwargs)
                if not writes(all_processes):
                    wandb_init_kwargs = {**wandb_init_kwargs, "mode": "disabled"}
                elif all_processes and wandb_init_kwargs.get("id"):
                    run_id = wandb_init_kwargs["id"]
                    group = wandb_init_kwargs.get("group") or run_id
                    wandb_init_kwargs = {**wandb_init_kwargs, "id": per_process(run_id), "group": group}
                run = _init_or_go_offline(wandb, wandb_init_kwargs)
        else:
            _warn_of_credentials_in_config(run)
        self.run = run
        self.step_metric = step_metric
        self.histogram_bins = histogram_bins
        self._lock = threading.RLock()
        self._finished = False
        self._exit_code = 0
        self._open_step: int | None = None  # a row left open by commit=False
        self.run.define_metric(step_metric)
        self.run.define_metric("*", step_metric=step_metric)

    def log(self, metrics: Mapping[str, Any], *, step: int | None = None, commit: bool | None = None) -> None:
        with self._lock:
            self._check_open()
            data = self._convert(metrics)
            resolved = cast(int, step)  # the front door gives every call its step
            if self._open_step is not None and self._open_step != resolved:
                # W&B would merge these values into the open row, at the open row's step.
                self.run.log({}, commit=True)
            data[self.step_metric] = resolved
            self.run.log(data, commit=commit)
            self._open_step = resolved if commit is False else None

    def validate(self, metrics: Mapping[str, Any]) -> None:
        for key in metrics:
            if key == self.step_metric:
                raise ValueError(f"metric name {key!r} is the W&B step metric; pass the step as step=")
            if key in _WANDB_RESERVED or key.startswith("_wandb/"):
                raise ValueError(f"metric name {key!r} is reserved by W&B (it would overwrite the run's own {key})")

    def log_summary(self, metrics: Mapping[str, Any]) -> None:
        with self._lock:
            self._check_open()
            self.run.summary.update(self._convert(metrics))

    def log_hyperparameters(self, hparams: Mapping[str, Any]) -> None:
        with self._lock:
            self._check_open()
            self.run.config.update(dict(hparams), allow_val_change=True)

    def log_artifact(
        self, artifact_path: str | os.PathLike[str], *, name: str | None = None, type: str | None = None
    ) -> None:
        with self._lock:
            self._check_open()
            path = os.fspath(artifact_path)
            # W&B artifact names allow letters, digits, "-", "_" and ".".
            artifact_name = safe_file_name(name or os.path.basename(os.path.normpath(path)))
            # W&B's own add_dir walks with followlinks=True: a link to a private key would be
            # uploaded and a link loop walked until paths grow too long. The files are listed here
            # instead, following no link out of the artifact.
            found = scan_artifact(path)
            artifact = _wandb().Artifact(artifact_name, type=type or "artifact")
            if not found.is_dir:
                artifact.add_file(found.root, name=os.path.basename(os.path.normpath(path)))
            else:
                for relative in found.files:
                    artifact.add_file(os.path.join(found.root, relative), name=_posix(relative))
                for relative, target, is_dir in found.links:
                    if is_dir:  # W&B stores no links; the directory's files are in the artifact already
                        found.skipped.append(
                            (relative, "a link to a directory inside the artifact, which W&B cannot keep")
                        )
                    else:  # the file it names, which is inside the artifact, under the link's name
                        real = os.path.normpath(os.path.join(found.root, os.path.dirname(relative), target))
                        artifact.add_file(real, name=_posix(relative))
                warn_skipped(found, name or artifact_name)
            self.run.log_artifact(artifact)

    def finish(self) -> None:
        with self._lock:
            if self._finished:
                return
            self._finished = True
            self.run.finish(exit_code=self._exit_code)

    def set_status(self, status: str) -> None:
        # W&B marks a run that exits non-zero as failed (it has no "killed").
        self._exit_code = 0 if status == "finished" else 1

    def _check_open(self) -> None:
        if self._finished:
            raise RuntimeError("WandbTracker is finished; start a new tracker to log more")

    def _convert(self, metrics: Mapping[str, HostValue]) -> dict[str, Any]:
        return {key: _wandb_value(value) for key, value in metrics.items()}

    def __repr__(self) -> str:
        return f"WandbTracker(run={getattr(self.run, 'id', None)!r})"


_WANDB_RESERVED = frozenset({"_step", "_runtime", "_timestamp", "_wandb"})
_TEXT_INIT_ARGUMENTS = ("name", "notes", "group", "job_type")


def _redacted_init_kwargs(wandb: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``wandb.init``'s arguments with every credential redacted: in ``config`` and in the run's texts.

    ``config`` is read as ``wandb.init`` reads it (``wandb.helper.parse_config``:
    a mapping, an ``argparse.Namespace``, absl flags, a YAML file's path, with
    ``config_include_keys``/``config_exclude_keys`` applied), so that W&B
    receives a plain dict already redacted: its run file, ``debug.log`` and
    ``config.yaml`` never hold the credential.
    """
    kwargs = dict(kwargs)
    if kwargs.get("config") is not None:
        config = wandb.helper.parse_config(
            kwargs["config"],
            include=kwargs.pop("config_include_keys", None),
            exclude=kwargs.pop("config_exclude_keys", None),
        )
        kwargs["config"] = redact(config)
    for name in _TEXT_INIT_ARGUMENTS:
        if isinstance(kwargs.get(name), str):
            kwargs[name] = redact_text(kwargs[name])
    if kwargs.get("tags"):
        kwargs["tags"] = [redact_text(tag) if isinstance(tag, str) else tag for tag in kwargs["tags"]]
    return kwargs


def _warn_of_credentials_in_config(run: Any) -> None:
    """Names the keys of a W&B run's config (started outside jaxtrack) that hold a credential; never their values."""
    config = getattr(run, "config", None)
    as_dict = getattr(config, "as_dict", None)
    if not callable(as_dict):
        return
    given = {key: value for key, value in as_dict().items() if not str(key).startswith("_wandb")}
    plain, redacted = flatten(given), flatten(redact(given))
    keys = [key for key in plain if key not in redacted or redacted[key] != plain[key]]
    keys += [key for key in redacted if key not in plain]  # a nested value replaced whole
    if keys:
        warn(
            f"jaxtrack: the W&B run {getattr(run, 'id', None)!r} was started with credentials in its config "
            f"({', '.join(sorted(set(keys)))}), which W&B has written already; jaxtrack redacts only what passes "
            "through it: give the config to WandbTracker(config=...) or jaxtrack.log_hyperparameters instead",
            CredentialWarning,
        )


DEFAULT_INIT_TIMEOUT_SECS = 30.0
"""How long an online ``wandb.init`` may try to reach W&B before the run goes offline instead."""


def _init_or_go_offline(wandb: Any, kwargs: dict[str, Any]) -> Any:
    """``wandb.init(**kwargs)``; if an online run cannot reach W&B, an offline run (to sync later) instead.

    Training must start whether or not the network is there: the online
    attempt is bounded by ``init_timeout`` (W&B's setting, default here
    ``DEFAULT_INIT_TIMEOUT_SECS``), and its data is then kept on disk.
    """
    mode = kwargs.get("mode") or os.environ.get("WANDB_MODE") or "online"
    if mode not in ("online", "run"):
        return wandb.init(**kwargs)
    settings = kwargs.get("settings")
    if settings is None:
        kwargs = {**kwargs, "settings": wandb.Settings(init_timeout=DEFAULT_INIT_TIMEOUT_SECS)}
    try:
        return wandb.init(**kwargs)
    except wandb.errors.Error as error:
        # The failed attempt still holds the run id in W&B's service process; a fresh one lets it go.
        wandb.teardown()
        run = wandb.init(**{**kwargs, "mode": "offline"})
        sync_dir = os.path.dirname(run.settings.sync_file) if getattr(run.settings, "sync_file", None) else run.dir
        logger.warning(
            "jaxtrack: W&B could not be reached (%s: %s); training goes on and this run is recorded offline in %s. "
            "Upload it later with:  wandb sync %s",
            type(error).__name__,
            str(error).splitlines()[0] if str(error) else "",
            sync_dir,
            sync_dir,
        )
        return run


def _posix(relative: str) -> str:
    return relative.replace(os.sep, "/")  # W&B's names inside an artifact use "/"


def _wandb_value(value: HostValue) -> Any:
    wandb = _wandb()
    if isinstance(value, Histogram):
        counts = np.asarray(value.bucket_counts)
        limits = np.asarray(value.bucket_limits, dtype=np.float64)
        if counts.size > _MAX_WANDB_BINS:
            # W&B refuses more buckets; merging neighbours keeps every count.
            group = -(-counts.size // _MAX_WANDB_BINS)
            counts = np.add.reduceat(counts, np.arange(0, counts.size, group))
            limits = np.append(limits[:-1:group], limits[-1])
        return wandb.Histogram(np_histogram=(counts, limits))
    if isinstance(value, Image):
        # A PIL image, because wandb.Image squeezes arrays (a 1-pixel-high image would lose its shape).
        pil = import_optional("PIL.Image", extra="wandb", purpose="Logging images to W&B")
        images = [
            wandb.Image(pil.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels), caption=value.caption)
            for pixels in value.to_uint8()
        ]
        return images[0] if len(images) == 1 else images
    return value


@TrackerConfig.register("wandb")
@dataclasses.dataclass(frozen=True)
class WandbConfig(TrackerConfig):
    """``type: wandb``: a [`WandbTracker`][jaxtrack.trackers.wandb.WandbTracker] starting a run with these ``wandb.init`` options.

    ``id`` defaults to the run id given to ``init`` (so every backend of a run
    shares it), and ``resume`` takes W&B's values (``allow``, ``must``,
    ``never``, ``auto``) or a bool. ``init_timeout`` bounds an online
    ``wandb.init`` (then the run goes offline); ``all_processes``,
    ``step_metric`` and ``histogram_bins`` are ``WandbTracker``'s arguments.

    Examples:
        >>> WandbConfig(project="my-project", entity="my-entity").mode
        'online'
        >>> WandbConfig.parse({"type": "wandb", "project": "my-project", "mode": "offline"})
        WandbConfig(entity=None, project='my-project', name=None, tags=(), id=None, group=None, job_type=None, notes=None, mode='offline', resume=None, dir=None, save_code=None, init_timeout=30.0, all_processes=False, step_metric='global_step', histogram_bins=64)
    """

    entity: str | None = None
    project: str | None = None
    name: str | None = None
    tags: tuple[str, ...] = ()
    id: str | None = None
    group: str | None = None
    job_type: str | None = None
    notes: str | None = None
    mode: Literal["online", "offline", "disabled", "shared"] = "online"
    resume: bool | Literal["allow", "must", "never", "auto"] | None = None
    dir: str | None = None
    save_code: bool | None = None
    init_timeout: float = DEFAULT_INIT_TIMEOUT_SECS
    all_processes: bool = False
    step_metric: str = DEFAULT_STEP_METRIC
    histogram_bins: int = DEFAULT_NUM_BINS

    def init(self, run_id: str | None) -> WandbTracker:
        kwargs: dict[str, Any] = {
            "entity": self.entity,
            "project": self.project,
            "name": self.name,
            "tags": list(self.tags) or None,
            "id": self.id or (validate_run_id(run_id) if run_id else None),
            "group": self.group,
            "job_type": self.job_type,
            "notes": self.notes,
            "mode": self.mode,
            "resume": self.resume,
            "dir": self.dir,
            "save_code": self.save_code,
            "settings": _wandb().Settings(init_timeout=self.init_timeout),
        }
        if self.dir is not None:
            os.makedirs(self.dir, exist_ok=True)
        return WandbTracker(
            step_metric=self.step_metric,
            histogram_bins=self.histogram_bins,
            all_processes=self.all_processes,
            **{k: v for k, v in kwargs.items() if v is not None},
        )


__all__ = [
    "DEFAULT_INIT_TIMEOUT_SECS",
    "DEFAULT_STEP_METRIC",
    "WandbConfig",
    "WandbTracker",
]
