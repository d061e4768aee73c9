"""Shared test set-up: test helpers importable, W&B offline, and no current tracker between tests."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # helpers such as wandb_files

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(autouse=True)
def _no_current_tracker():
    from jaxtrack import api, pipeline, run

    with run._lock:
        saved = run._current, api._warned_no_tracker
        run._current = None
        api._warned_no_tracker = False
    yield
    with run._lock:
        run._current, api._warned_no_tracker = saved
    # A strict-mode failure a test left unraised must not be raised in the next test.
    pipeline.default_dispatcher().health._strict_failures.clear()
