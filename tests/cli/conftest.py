"""The store every command line test reads, written once: three runs (see ``support.cli.write_runs``)."""

from __future__ import annotations

import pytest

from support.cli import write_runs


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Three runs: ``exp-base`` (finished, every kind of value, NaNs), ``exp-wide`` (failed), ``solo-7`` (no name)."""
    directory = tmp_path_factory.mktemp("store")
    path = str(directory / "runs.db")
    with pytest.MonkeyPatch.context() as patch:
        # Away from this checkout: the trackers' git queries must not touch the repository under test.
        patch.chdir(directory)
        write_runs(path)
    return path
