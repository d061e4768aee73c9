"""``jaxtrack.multihost`` in one process; two real processes are in ``tests/multihost``."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

import jaxtrack
import jaxtrack as jt
from jaxtrack import multihost
from jaxtrack.multihost import _agreed_run_id, _id_payload


def test_one_process_is_process_0_and_writes() -> None:
    assert multihost.process_index() == 0
    assert multihost.process_count() == 1
    assert multihost.is_primary_process()
    assert multihost.writes() and multihost.writes(all_processes=True)
    assert multihost.per_process("run-1") == "run-1"


@pytest.mark.parametrize("index, expected", [(0, (True, True, "run")), (1, (False, True, "run-process1"))])
def test_which_process_writes(monkeypatch: pytest.MonkeyPatch, index: int, expected: tuple) -> None:
    monkeypatch.setattr(multihost, "process_index", lambda: index)
    assert (multihost.writes(), multihost.writes(all_processes=True), multihost.per_process("run")) == expected


def test_one_process_uses_the_given_run_id_or_makes_one_up() -> None:
    made = []

    def new() -> str:
        made.append("new-id")
        return "new-id"

    assert multihost.agree_on_run_id("given", new) == "given"
    assert made == []
    assert multihost.agree_on_run_id(None, new) == "new-id"
    assert made == ["new-id"]


def _everyone(*payloads: np.ndarray) -> np.ndarray:
    return np.stack(payloads)  # what process_allgather returns on every process


def test_made_up_ids_agree_on_process_0s() -> None:
    everyone = _everyone(_id_payload("20240101-000000-aaaaaa", given=False), _id_payload("other", given=False))
    assert _agreed_run_id(everyone, "other") == "20240101-000000-aaaaaa"
    assert _agreed_run_id(everyone, "20240101-000000-aaaaaa") == "20240101-000000-aaaaaa"


def test_a_given_id_of_any_length_is_checked_to_be_the_same() -> None:
    long_id = "x" * 1000 + "é"
    everyone = _everyone(_id_payload(long_id, given=True), _id_payload(long_id, given=True))
    assert _agreed_run_id(everyone, long_id) == long_id
    differs_after_the_shown_text = "x" * 1000 + "e"
    everyone = _everyone(_id_payload(long_id, given=True), _id_payload(differs_after_the_shown_text, given=True))
    with pytest.raises(ValueError, match="different run ids"):
        _agreed_run_id(everyone, long_id)


def test_different_or_partly_given_ids_raise_on_every_process() -> None:
    everyone = _everyone(_id_payload("a", given=True), _id_payload("b", given=True))
    for own in ("a", "b"):
        with pytest.raises(ValueError, match=r"different run ids \(process 0: 'a', process 1: 'b'\)"):
            _agreed_run_id(everyone, own)
    everyone = _everyone(_id_payload("a", given=True), _id_payload("made-up", given=False))
    for own in ("a", "made-up"):
        with pytest.raises(ValueError, match=r"given on processes \[0\] but not on \[1\]"):
            _agreed_run_id(everyone, own)


def test_a_made_up_id_too_long_to_share_is_an_error() -> None:
    with pytest.raises(ValueError, match="at most 255 bytes"):
        _id_payload("x" * 300, given=False)


def test_init_tracker_shares_the_id_through_agree_on_run_id(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def agree(run_id, new):
        calls.append(run_id)
        return "from-process-0"

    monkeypatch.setattr(jaxtrack.api, "agree_on_run_id", agree)
    with jt.init_tracker({"type": "noop"}):
        pass
    with jt.init_tracker([{"type": "noop"}], run_id="given"):
        pass
    assert calls == [None, "given"]


def test_replicate_sharded_leaves_one_process_trees_alone() -> None:
    for tree in ({"loss": 1.0}, ({"b": jnp.ones(3), "a": np.zeros(2)},), [jnp.float32(2.0)], ()):
        assert multihost.replicate_sharded(tree) is tree


def test_all_processes_backends_write_their_own_run_on_process_1(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Process 1 of a multi-process run: by default it writes nothing; with all_processes,
    # each backend writes a run of its own beside process 0's.
    from jaxtrack.store import RunStore

    monkeypatch.setattr(multihost, "process_index", lambda: 1)
    store = tmp_path / "runs.db"
    with jt.init_tracker(
        [
            {"type": "local", "path": str(store)},
            {"type": "tensorboard", "logdir": str(tmp_path / "tb")},
        ],
        run_id="shared",
    ):
        jt.log({"loss": 1.0}, step=0)
    assert not store.exists() and not (tmp_path / "tb").exists()

    with jt.init_tracker(
        [
            {"type": "local", "path": str(store), "all_processes": True},
            {"type": "tensorboard", "logdir": str(tmp_path / "tb"), "all_processes": True},
        ],
        run_id="shared",
    ):
        jt.log({"loss": 2.0}, step=3)
    with RunStore(store) as runs:
        assert [run.id for run in runs.runs()] == ["shared-process1"]
        assert runs.history("shared-process1") == [{"step": 3, "loss": 2.0}]
    assert [path.name for path in (tmp_path / "tb").iterdir()] == ["shared-process1"]
