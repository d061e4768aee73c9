"""Running the example notebooks as a user would, and checking what is committed of them.

A notebook runs top to bottom in a fresh Jupyter kernel (this Python, through
``nbclient``) with a temporary directory as its working directory, so the runs
it records land there; the tests then read them back. What is committed is the
notebook without outputs: no run ids, timings or paths of the machine that ran it.
"""

from __future__ import annotations

import os
import pathlib
import re
from collections.abc import Iterator

import jupytext
import nbformat
from nbclient import NotebookClient

EXAMPLES = pathlib.Path(__file__).parents[2] / "examples"

# Per cell: a kernel that compiles a few JAX functions on a busy 2-core machine is slow, never hung.
CELL_TIMEOUT_SECS = 300

# Paths that would name the machine a notebook ran on.
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/])/(?:home|Users|work|tmp|root|var|private)/|[A-Za-z]:\\\\")


def execute(name: str, cwd: str | os.PathLike[str]) -> nbformat.NotebookNode:
    """Runs ``examples/<name>`` top to bottom in ``cwd``; a cell that raises fails the test with its traceback."""
    notebook = nbformat.read(EXAMPLES / name, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_SECS,
        kernel_name="python3",  # jupyter_client runs the "python3" kernel with this interpreter
        resources={"metadata": {"path": os.fspath(cwd)}},
    )
    client.execute()
    return notebook


def text_outputs(notebook: nbformat.NotebookNode) -> Iterator[tuple[int, str, str]]:
    """``(cell index, kind, text)`` of every stream and plain-text result the run produced."""
    for index, cell in enumerate(notebook.cells):
        for output in cell.get("outputs", []):
            if output.output_type == "stream":
                yield index, output.name, output.text
            elif output.output_type in ("execute_result", "display_data") and "text/plain" in output.data:
                yield index, output.output_type, output.data["text/plain"]


def image_outputs(notebook: nbformat.NotebookNode) -> list[bytes]:
    """The PNG images the run displayed (plots), decoded."""
    import base64

    return [
        base64.b64decode(output.data["image/png"])
        for cell in notebook.cells
        for output in cell.get("outputs", [])
        if output.output_type in ("execute_result", "display_data") and "image/png" in output.data
    ]


def committed_problems(path: pathlib.Path) -> list[str]:
    """What is wrong with the notebook as committed: outputs, execution counts, a machine's absolute paths."""
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    problems = []
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None):
            problems.append(f"cell {index} has outputs or an execution count (clear them before committing)")
        if _ABSOLUTE_PATH.search(cell.source):
            problems.append(f"cell {index} names an absolute path: {_ABSOLUTE_PATH.search(cell.source).group(0)!r}")
    return problems


def unpaired_cells(notebook_path: pathlib.Path, script_path: pathlib.Path) -> list[str]:
    """Cells that differ between a notebook and its plain-script version (``jupytext --sync`` mends it)."""
    notebook = nbformat.read(notebook_path, as_version=4)
    script = jupytext.read(script_path)
    ours = [(cell.cell_type, cell.source.strip()) for cell in notebook.cells]
    theirs = [(cell.cell_type, cell.source.strip()) for cell in script.cells]
    if len(ours) != len(theirs):
        return [f"{notebook_path.name} has {len(ours)} cells, {script_path.name} has {len(theirs)}"]
    return [f"cell {index} differs" for index, (a, b) in enumerate(zip(ours, theirs, strict=True)) if a != b]
