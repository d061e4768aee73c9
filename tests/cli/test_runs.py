"""``jaxtrack runs``: one line per run, oldest first, with the chosen metrics right-aligned; and its JSON."""

from __future__ import annotations

import re

import pytest

from jaxtrack.store import RunStore
from support.cli import run_cli, run_cli_json


def cell_end(line: str, text: str) -> int:
    """Where ``text`` ends in ``line``: a right-aligned cell ends where its column's header ends."""
    return line.index(text) + len(text)


def test_runs_lists_every_run_oldest_first_with_status_steps_and_chosen_metrics(store, capsys):
    header, *rows = run_cli(capsys, "runs", "--store", store, "--keys", "train/loss", "train/*").splitlines()
    assert header.split() == ["id", "name", "status", "steps", "train/loss", "train/acc", "duration", "started"]
    assert [row.split()[0] for row in rows] == ["exp-base", "exp-wide", "solo-7"]
    base, wide, solo = rows
    assert base.split()[:7] == ["exp-base", "baseline", "finished", "4", "0.5", "0.9", "0.0s"]
    assert wide.split()[:6] == ["exp-wide", "wide", "failed", "2", "1.2", "0.0s"]
    assert solo.split()[:4] == ["solo-7", "finished", "0", "0.0s"]
    # The numbers are right-aligned under their headers, and a run without a metric leaves its cell empty.
    assert cell_end(base, " 0.5") == cell_end(header, "train/loss") == cell_end(wide, " 1.2")
    assert cell_end(base, " 0.9") == cell_end(header, "train/acc")
    assert wide[cell_end(header, "train/loss") : cell_end(header, "train/acc")].strip() == ""
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$", base)


def test_runs_by_default_show_losses_then_accuracies_and_nan(store, capsys):
    header, base, _, solo = run_cli(capsys, "runs", "--store", store).splitlines()
    assert header.split()[4:8] == ["train/loss", "val/loss", "train/acc", "loss"]
    assert base.split()[4:7] == ["0.5", "nan", "0.9"]
    assert cell_end(solo, "0.3") == cell_end(header, "  loss")


def test_runs_json_gives_identity_times_and_last_values(store, capsys):
    listed = run_cli_json(capsys, "runs", "--store", store)
    assert [(r["id"], r["name"], r["project"], r["status"], r["last_step"]) for r in listed] == [
        ("exp-base", "baseline", "digits", "finished", 4),
        ("exp-wide", "wide", "digits", "failed", 2),
        ("solo-7", None, "other", "finished", 0),
    ]
    assert listed[0]["metrics"] == {"train/loss": 0.5, "val/loss": None, "train/acc": 0.9}
    assert listed[1]["metrics"] == {"train/loss": 1.2}
    with RunStore(store) as reader:
        stored = reader.run("exp-wide")
    assert (listed[1]["start_time"], listed[1]["end_time"]) == (stored.start_time, stored.end_time)
    assert listed[1]["duration"] == pytest.approx(stored.end_time - stored.start_time)


def test_runs_of_a_project_with_store_given_before_the_command(store, capsys):
    listed = run_cli_json(capsys, "--store", store, "runs", "--project", "other")
    assert [r["id"] for r in listed] == ["solo-7"]
    assert run_cli(capsys, "--store", store, "runs", "--project", "none") == f"no runs of project 'none' in {store}\n"
