"""The ``jaxtrack`` command line as a whole: choosing the store, errors and their exit statuses, the entry points.

Most commands are called in-process through ``main(argv)``; the console
script and ``python -m jaxtrack`` are run once each as real processes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from jaxtrack.cli import main
from support.cli import run_cli_json


def test_store_defaults_to_the_environment_variable(store, capsys, monkeypatch):
    monkeypatch.setenv("JAXTRACK_STORE", store)
    assert [r["id"] for r in run_cli_json(capsys, "runs")] == ["exp-base", "exp-wide", "solo-7"]


@pytest.fixture
def not_a_store(tmp_path: Path) -> str:
    path = tmp_path / "notes.db"
    path.write_text("these are not the runs you are looking for\n" * 100)
    return str(path)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["runs", "--store", "{missing}"], "no run store at"),
        (["show", "exp-base", "--store", "{not_a_store}"], "is not a jaxtrack run store"),
        (["show", "exp-bsae", "--store", "{store}"], "no run 'exp-bsae' in .*; did you mean 'exp-base'\\?"),
        (["show", "exp", "--store", "{store}"], "run 'exp' is ambiguous in .*: it starts exp-base, exp-wide"),
        (
            ["plot", "exp-base", "train/los", "--store", "{store}"],
            "has no scalar key 'train/los'; did you mean 'train/loss'\\?",
        ),
        (["plot", "exp-base", "note", "--store", "{store}"], "has no scalar key 'note'"),
        (["plot", "exp-base", "--compare", "nope", "--store", "{store}"], "no run 'nope'"),
        (["export", "exp-base", "--to", "tensorboard", "--store", "{store}"], "--to tensorboard needs one directory"),
        (["export", "exp-base", "--to", "mlflow", "x", "--store", "{store}"], "unknown export target 'mlflow'"),
        (["export", "exp-base", "--to", "wandb", "x", "--store", "{store}"], "--to wandb takes no directory"),
    ],
)
def test_errors_are_one_line_with_status_1(argv, message, store, not_a_store, tmp_path, capsys):
    paths = {"store": store, "not_a_store": not_a_store, "missing": str(tmp_path / "missing.db")}
    assert main([arg.format(**paths) for arg in argv]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.splitlines()
    assert line.startswith("jaxtrack: error: ")
    assert re.search(message, line), line
    assert "Traceback" not in captured.err


@pytest.mark.parametrize(
    ("module", "argv", "extra"),
    [
        ("matplotlib", ["plot", "exp-base"], "jaxtrack[plot]"),
        ("wandb", ["export", "exp-base", "--to", "wandb"], "jaxtrack[wandb]"),
    ],
)
def test_missing_optional_package_names_its_extra(module, argv, extra, store, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, module, None)  # as if it were not installed
    assert main([*argv, "--store", store]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("jaxtrack: error: ") and f"pip install '{extra}'" in line


@pytest.mark.parametrize(
    "argv",
    [[], ["show"], ["frobnicate"], ["export", "exp-base"], ["export", "exp-base", "--to", "wandb", "--mode", "cloud"]],
)
def test_usage_errors_exit_with_status_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "usage: jaxtrack" in capsys.readouterr().err


def test_python_dash_m_and_console_script_run_the_command_line(store):
    module = subprocess.run(
        [sys.executable, "-m", "jaxtrack", "runs", "--store", store, "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert module.returncode == 0, module.stderr
    assert [run["id"] for run in json.loads(module.stdout)] == ["exp-base", "exp-wide", "solo-7"]

    script = shutil.which("jaxtrack", path=os.path.dirname(sys.executable))
    if script is None:
        pytest.skip("the jaxtrack console script is not installed next to this Python")
    failed = subprocess.run([script, "show", "nope", "--store", store], capture_output=True, text=True, timeout=120)
    assert failed.returncode == 1
    assert failed.stdout == ""
    (line,) = failed.stderr.splitlines()
    assert line.startswith("jaxtrack: error: no run 'nope'")


def test_importing_the_command_line_loads_no_backend_package():
    script = (
        "import sys, jaxtrack.cli\n"
        "print(sorted(m for m in ('matplotlib', 'tensorboard', 'wandb', 'PIL') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
