"""Every example notebook: committed clean, kept in step with its plain script, and run top to bottom by a test.

The per-notebook modules next to this one execute each notebook and check
what it recorded; this one checks what holds for all of them.
"""

from __future__ import annotations

import pathlib

import nbformat
import pytest

from support.notebooks import EXAMPLES, committed_problems, unpaired_cells

NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))
TESTS = pathlib.Path(__file__).parent


def test_the_five_notebooks_are_there():
    assert [path.stem for path in NOTEBOOKS] == [
        "01_quickstart",
        "02_porting_from_clu",
        "03_several_backends",
        "04_data_parallel",
        "05_your_own_tracker",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_the_committed_notebook_has_no_outputs_and_no_paths_of_a_machine(path):
    assert committed_problems(path) == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_a_notebook_with_a_plain_script_is_in_step_with_it(path):
    """Paired notebooks name their script in jupytext's metadata; `jupytext --sync` mends a difference."""
    formats = nbformat.read(path, as_version=4).metadata.get("jupytext", {}).get("formats", "")
    script = path.with_suffix(".py")
    if "py:percent" not in formats:
        assert not script.exists(), f"{script.name} exists but {path.name} is not paired with it"
        return
    assert unpaired_cells(path, script) == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_every_notebook_is_executed_by_a_test(path):
    runners = [
        test.name for test in TESTS.glob("test_*.py") if path.name in (text := test.read_text()) and "execute(" in text
    ]
    assert runners, f"no test in {TESTS} executes {path.name}"
