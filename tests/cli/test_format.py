"""What the command line prints of a store that holds terminal escape sequences: escaped text, exact JSON.

A run is written with control characters (ESC sequences that clear the
screen or retitle the terminal, a carriage return, BEL, C1 controls, a
bidirectional override) in its id, name, project, metric keys, text values,
config, summary and artifact, and every command is run on it, in-process and
as a real ``python -m jaxtrack`` process: no such character reaches the
output raw, and ``--json`` reads back the exact strings.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from jaxtrack.cli import main
from jaxtrack.trackers.local import LocalTracker
from support.cli import run_cli, run_cli_json

RUN_ID = "evil\x1b[2J\x9b31m"
NAME = "name\x1b]0;owned\x07\rfake"
PROJECT = "proj\x1b[5m"
KEY = "key\x1b[31m/loss\u202e"
TEXT = "text\x1b[2J\rforged\u2028line"
CONFIG = {"opt\x1b[1m": "adam\x1b[8m\x7f"}
SUMMARY = {"best\x1b[4m": "x\x07\u2066"}
ARTIFACT = "art\x1b[8m\u202egnp.exe"

# Anything a terminal acts on, except the line breaks between a command's own lines.
RAW = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")


@pytest.fixture
def evil_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.chdir(tmp_path)  # the trackers' git queries stay away from this checkout
    path = tmp_path / "runs.db"
    notes = tmp_path / "notes.txt"
    notes.write_text("notes")
    with LocalTracker(path, run_id=RUN_ID, name=NAME, project=PROJECT) as tracker:
        tracker.log_hyperparameters(CONFIG)
        tracker.log({KEY: 0.5, "note": TEXT}, step=0)
        tracker.log_summary(SUMMARY)
        tracker.log_artifact(notes, name=ARTIFACT, type="type\x1b[7m")
    return str(path)


def _assert_escaped(text: str) -> None:
    assert RAW.search(text) is None, repr(text)


def test_every_command_prints_a_stores_control_characters_escaped(evil_store, capsys, tmp_path):
    outputs = [
        run_cli(capsys, "runs", "--store", evil_store),
        run_cli(capsys, "runs", "--store", evil_store, "--project", PROJECT, "--keys", "key*"),
        run_cli(capsys, "show", RUN_ID, "--store", evil_store),
        run_cli(capsys, "export", "latest", "--to", "tensorboard", str(tmp_path / "tb\x1b[2J"), "--store", evil_store),
    ]
    for out in outputs:
        _assert_escaped(out)
    runs, runs_of_project, show, export = outputs
    assert "evil\\x1b[2J\\x9b31m" in runs and "name\\x1b]0;owned\\x07\\rfake" in runs
    assert "key\\x1b[31m/loss\\u202e" in runs_of_project
    for escaped in ["opt\\x1b[1m", "adam\\x1b[8m\\x7f", "best\\x1b[4m", "x\\x07\\u2066", "text\\x1b[2J ..."]:
        assert escaped in show, escaped
    assert "art\\x1b[8m\\u202egnp.exe" in show and "type\\x1b[7m" in show
    assert "tb\\x1b[2J" in export


def test_an_error_naming_a_value_from_the_command_line_or_the_store_is_escaped(evil_store, capsys):
    for argv in (["show", "nope\x1b[2J\u202e"], ["runs", "--keys", "x"], ["show", RUN_ID[:-1] + "\x1b]0;t\x07"]):
        status = main([*argv, "--store", evil_store + ("" if argv[0] == "show" else "\x1b[2Jmissing")])
        err = capsys.readouterr().err
        assert status == 1 and err.startswith("jaxtrack: error: ")
        _assert_escaped(err.removesuffix("\n"))
        assert err.count("\n") == 1


def test_json_output_reads_back_the_exact_strings_with_nothing_raw(evil_store, capsys):
    (listed,) = run_cli_json(capsys, "runs", "--store", evil_store)
    assert (listed["id"], listed["name"], listed["project"]) == (RUN_ID, NAME, PROJECT)
    assert listed["metrics"] == {KEY: 0.5}
    shown = run_cli_json(capsys, "show", RUN_ID, "--store", evil_store)
    assert (shown["config"], shown["summary"]) == (CONFIG, SUMMARY)
    assert shown["metrics"]["note"]["last"] == TEXT
    assert [(a["name"], a["type"]) for a in shown["artifacts"]] == [(ARTIFACT, "type\x1b[7m")]
    raw = run_cli(capsys, "show", RUN_ID, "--store", evil_store, "--json")
    _assert_escaped(raw.replace("\n", " "))  # JSON's own line breaks are layout; every string is escaped


def test_the_real_command_line_process_escapes_what_it_prints(evil_store):
    result = subprocess.run(
        [sys.executable, "-m", "jaxtrack", "show", "latest", "--store", evil_store],
        capture_output=True,
        timeout=120,
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout.decode("utf-8")
    _assert_escaped(out)
    assert b"\x1b" not in result.stdout and b"\r" not in result.stdout and b"\xc2\x9b" not in result.stdout
    assert "name\\x1b]0;owned\\x07\\rfake" in out
    listed = subprocess.run(
        [sys.executable, "-m", "jaxtrack", "runs", "--store", evil_store, "--json"],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert json.loads(listed.stdout)[0]["name"] == NAME
