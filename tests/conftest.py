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
    from jaxtrack import tracking

    with tracking._lock:
        saved = tracking._current, tracking._warned_no_tracker
        tracking._current = None
        tracking._warned_no_tracker = False
    yield
    with tracking._lock:
        tracking._current, tracking._warned_no_tracker = saved
