"""A user-written backend that records every call it receives, as a user would add one by subclassing ``Tracker``."""

from __future__ import annotations

import pathlib

import jaxtrack as jt


class RecordingTracker(jt.Tracker):
    """A user-written backend: what a user adds by subclassing Tracker."""

    name = "recording"
    histogram_bins = None  # arrays arrive as NumPy arrays, so tests can compare them element by element

    def __init__(self, name: str = "recording") -> None:
        self.name = name
        self.logs: list[tuple[int | None, dict, bool | None]] = []
        self.summaries: list[dict] = []
        self.hparams: list[dict] = []
        self.artifacts: list[tuple[str, str | None, str | None, bytes | None]] = []
        self.finished = 0
        self.flushed = 0

    def log(self, metrics, *, step=None, commit=None):
        self.logs.append((step, jt.flatten(metrics), commit))

    def log_summary(self, metrics):
        self.summaries.append(jt.flatten(metrics))

    def log_hyperparameters(self, hparams):
        self.hparams.append(jt.flatten(hparams))

    def log_artifact(self, artifact_path, *, name=None, type=None):
        path = pathlib.Path(artifact_path)
        self.artifacts.append((str(path), name, type, path.read_bytes() if path.is_file() else None))

    def flush(self):
        self.flushed += 1

    def finish(self):
        self.finished += 1


__all__ = ["RecordingTracker"]
