"""The store's artifacts and real symbolic links: nothing is copied from, or written to, outside the artifact and the store.

A directory artifact's links to a private key, ``/etc/shadow`` or another
directory are left out (links that stay inside are kept as links), loops are
found without walking them, a planted ``artifacts`` link is refused, and a
store whose artifacts table lists a path outside its ``artifacts`` folder
is refused by the reader. Links and files are real; the store is read back
through ``RunStore`` and plain ``sqlite3``.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

import jaxtrack as jt
from jaxtrack.store import RunStore, RunWriter
from jaxtrack.store import writer as writer_module
from jaxtrack.trackers.local import LocalTracker
from support.disk import fail_commits
from support.faults import WAIT
from support.links import (
    SECRET,
    LinkedArtifact,
    artifact_with_links,
    assert_copied_without_following_links,
    secret_files,
)


def _stored_copy(path: Path, run_id: str) -> Path:
    with RunStore(path) as store:
        (artifact,) = store.artifacts(run_id)
    return Path(artifact["path"])


def _assert_warning_names(caught: pytest.WarningsRecorder, artifact: LinkedArtifact) -> None:
    messages = " ".join(str(w.message) for w in caught if issubclass(w.category, jt.ArtifactWarning))
    for relative in artifact.refused:
        assert repr(relative) in messages, (relative, messages)


# ---- 1. links inside a directory artifact -------------------------------------------------------


def test_a_directory_artifact_keeps_its_inside_links_and_copies_nothing_its_other_links_point_to(
    tmp_path: Path,
) -> None:
    artifact = artifact_with_links(tmp_path)
    path = tmp_path / "store" / "runs.db"
    with pytest.warns(jt.ArtifactWarning) as caught, LocalTracker(path, run_id="links") as tracker:
        tracker.log_artifact(artifact.root, name="checkpoint", type="model")
    _assert_warning_names(caught, artifact)
    assert_copied_without_following_links(_stored_copy(path, "links"), artifact)
    assert secret_files(tmp_path / "store") == []


def test_a_link_loop_in_an_artifact_is_left_out_without_walking_it(tmp_path: Path) -> None:
    # shutil.copytree followed the link to the parent until Python's recursion limit (40 s).
    artifact = artifact_with_links(tmp_path, loops=True)
    path = tmp_path / "store" / "runs.db"
    with pytest.warns(jt.ArtifactWarning) as caught, RunWriter(path, run_id="loops") as writer:
        writer.add_artifact(artifact.root)
    _assert_warning_names(caught, artifact)
    messages = " ".join(str(w.message) for w in caught)
    assert "'self' (a link to a directory holding it, a loop)" in messages and "'cycle_a' (a link loop)" in messages
    assert "'broken' (a broken link)" in messages
    assert_copied_without_following_links(_stored_copy(path, "loops"), artifact)


def test_an_artifact_path_that_is_a_link_is_followed_once_and_the_links_inside_it_never(tmp_path: Path) -> None:
    artifact = artifact_with_links(tmp_path)
    given = tmp_path / "latest-checkpoint"
    given.symlink_to(artifact.root, target_is_directory=True)  # the user's own choice of path
    single = tmp_path / "best.bin"
    single.symlink_to(artifact.root / "params.bin")
    path = tmp_path / "store" / "runs.db"
    with pytest.warns(jt.ArtifactWarning), LocalTracker(path, run_id="given") as tracker:
        tracker.log_artifact(given)
        tracker.log_artifact(single)
    with RunStore(path) as store:
        directory, file = (Path(a["path"]) for a in store.artifacts("given"))
    assert directory.name == "latest-checkpoint" and not directory.is_symlink()
    assert_copied_without_following_links(directory, artifact)
    assert file.name == "best.bin" and not file.is_symlink() and file.read_bytes() == b"\x00\x01weights"


# ---- 2. the store's own folder ------------------------------------------------------------------


def test_a_planted_artifacts_link_is_refused_naming_it_and_nothing_is_written_through_it(tmp_path: Path) -> None:
    path = tmp_path / "store" / "runs.db"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    source = tmp_path / "notes.txt"
    source.write_text("notes")
    with RunWriter(path, run_id="planted") as writer:
        (path.parent / "artifacts").symlink_to(elsewhere, target_is_directory=True)
        with pytest.raises(jt.UnsafePathError, match=r"store/artifacts'.* is a link to .*elsewhere"):
            writer.add_artifact(source)
    assert list(elsewhere.iterdir()) == []
    assert RunStore(path).artifacts("planted") == []


def test_a_planted_link_as_a_runs_artifact_folder_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "store" / "runs.db"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    source = tmp_path / "notes.txt"
    source.write_text("notes")
    with RunWriter(path, run_id="planted") as writer:
        (path.parent / "artifacts").mkdir()
        (path.parent / "artifacts" / "1-planted").symlink_to(elsewhere, target_is_directory=True)
        with pytest.raises(jt.UnsafePathError, match=r"1-planted'"):
            writer.add_artifact(source)
    assert list(elsewhere.iterdir()) == []


# ---- 3. a store written by someone else ---------------------------------------------------------


@pytest.mark.parametrize("listed", ["/etc/passwd", "../../x", "artifacts/../../secret.txt", "artifacts/out"])
def test_a_store_listing_an_artifact_outside_its_artifacts_folder_is_refused_naming_the_path(
    tmp_path: Path, listed: str
) -> None:
    path = tmp_path / "shared" / "runs.db"
    source = tmp_path / "notes.txt"
    source.write_text("notes")
    with LocalTracker(path, run_id="hostile") as tracker:
        tracker.log_artifact(source)
    (tmp_path / "secret.txt").write_bytes(SECRET)
    (path.parent / "artifacts" / "out").symlink_to(tmp_path / "secret.txt")  # a link out, planted inside
    with sqlite3.connect(path) as db:
        db.execute("UPDATE artifacts SET path = ?", (listed,))
    with RunStore(path) as store, pytest.raises(jt.UnsafePathError) as raised:
        store.artifacts("hostile")
    assert repr(listed) in str(raised.value) and str(path) in str(raised.value)


def test_the_store_rejects_an_artifacts_folder_that_is_a_link_when_reading(tmp_path: Path) -> None:
    path = tmp_path / "shared" / "runs.db"
    source = tmp_path / "notes.txt"
    source.write_text("notes")
    with LocalTracker(path, run_id="moved") as tracker:
        tracker.log_artifact(source)
    os.rename(path.parent / "artifacts", tmp_path / "elsewhere")
    (path.parent / "artifacts").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with RunStore(path) as store, pytest.raises(jt.UnsafePathError, match="outside its artifacts folder"):
        store.artifacts("moved")


# ---- 4. failures while storing an artifact --------------------------------------------------------


def test_an_artifact_whose_commit_failed_leaves_no_folder_and_the_next_upload_of_its_name_is_stored(
    tmp_path: Path,
) -> None:
    path = tmp_path / "runs.db"
    source = tmp_path / "model.bin"
    source.write_bytes(b"weights")
    with RunWriter(path, run_id="retry") as writer:
        fail_commits(writer)
        with pytest.raises(jt.StoreError, match="disk is full"):
            writer.add_artifact(source, name="model")
        writer.add_artifact(source, name="model")  # before: "Directory not empty" for every later upload
    artifacts = RunStore(path).artifacts("retry")
    assert [(a["name"], a["version"]) for a in artifacts] == [("model", 1)]
    (run_dir,) = (path.parent / "artifacts").iterdir()
    assert sorted(p.name for p in run_dir.iterdir()) == ["1-model-v1"]  # no folder that no row names


def test_the_heartbeat_goes_on_while_an_artifact_copies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "runs.db"
    source = tmp_path / "model.bin"
    source.write_bytes(b"weights")
    writer = RunWriter(path, run_id="copying")
    beats: list[bool] = []
    copy = writer_module.copy_artifact

    def copy_and_beat(*args: Any, **kwargs: Any) -> None:
        # While the copy runs, another thread (the heartbeat's) must be able to beat.
        beater = threading.Thread(target=lambda: beats.append(writer._beat_now(0.0)))
        beater.start()
        beater.join(timeout=WAIT)
        beats.append(not beater.is_alive())
        copy(*args, **kwargs)

    monkeypatch.setattr(writer_module, "copy_artifact", copy_and_beat)
    writer.add_artifact(source, name="model")
    writer.close()
    assert beats == [True, True]  # before: the beat waited for the whole copy (the writer's lock)
