"""Shared test set-up: each test starts with no current tracker, and W&B stays offline."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))  # test helpers such as wandb_files

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
