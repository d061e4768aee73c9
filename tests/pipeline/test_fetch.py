"""Holding values at the call and fetching them later: donation-safe copies, one batched transfer, per-value failures."""

from __future__ import annotations

import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import jaxtrack as jt
from jaxtrack.pipeline.fetch import Unfetched, fetch, hold
from jaxtrack.store import RunStore
from support.backends import local_history, local_spec


def test_a_logged_array_is_recorded_although_the_next_step_donates_its_buffer(tmp_path: Path) -> None:
    """Case 6: ``jt.log({"w": params_leaf})`` then a step donating that buffer lost 20 of 20 whole reports."""
    store = tmp_path / "runs.db"
    jt.init_tracker(local_spec(store), run_id="donated")
    halve = jax.jit(lambda w: w * 0.5, donate_argnums=0)
    w = jnp.arange(1.0, 9.0)
    for step in range(20):
        jt.log({"w": w, "max": jnp.max(w), "i": step}, step=step)
        logged = w
        w = halve(w)
        assert logged.is_deleted()  # the buffer the report holds was donated: this is the case
    with warnings.catch_warnings():
        warnings.simplefilter("error", jt.DataLossWarning)
        jt.finish()
    history = local_history(store, "donated")
    assert sorted(history) == list(range(20))
    for step, row in history.items():
        assert row["i"] == step and row["max"] == 8.0 * 0.5**step
        assert row["w"].num == 8 and row["w"].max == 8.0 * 0.5**step


def test_hold_copies_jax_arrays_on_their_device_and_leaves_host_values_alone() -> None:
    w = jnp.arange(4.0)
    host = np.arange(3)
    held, nbytes = hold({"w": w, "h": host, "x": 1.5, "img": jt.Image(jnp.zeros((2, 2)))})
    assert held["w"] is not w and not held["w"].is_deleted()
    assert held["w"].unsafe_buffer_pointer() != w.unsafe_buffer_pointer()  # a copy, not the same buffer
    assert held["h"] is host and held["x"] == 1.5
    assert held["img"].pixels is not None and held["img"].pixels.unsafe_buffer_pointer() != 0
    assert nbytes == w.nbytes + host.nbytes + 16 + 16  # arrays by size, a number and the image's pixels
    owned, _ = hold({"w": w}, owned=True)  # an accumulator jaxtrack swapped out: nothing else can donate it
    assert owned["w"] is w


def test_fetch_copies_every_call_in_one_batch_and_keeps_key_order() -> None:
    payloads = [({"b": jnp.float32(1.0), "a": 2.0}, 3), ({"z": jnp.arange(2.0)}, None)]
    fetched = fetch(payloads)
    assert list(fetched[0][0]) == ["b", "a"]  # pytree flattening sorts keys; the report's order is kept
    assert isinstance(fetched[0][0]["b"], np.ndarray) and fetched[0][1] == 3
    np.testing.assert_array_equal(fetched[1][0]["z"], [0.0, 1.0])


def test_a_value_that_cannot_be_fetched_costs_only_itself(tmp_path: Path) -> None:
    deleted = jnp.arange(3.0)
    deleted.delete()
    (payload,) = fetch([{"gone": deleted, "kept": jnp.float32(4.0)}])
    assert isinstance(payload["gone"], Unfetched) and "deleted" in str(payload["gone"].error).lower()
    assert float(payload["kept"]) == 4.0

    store = tmp_path / "runs.db"
    tracker = jt.init_tracker(local_spec(store), run_id="unreadable")
    tracker.log({"kept": 1.0}, step=0)
    from jaxtrack.pipeline.calls import Call

    tracker._submit(Call("log", {"gone": deleted, "kept": 2.0}, step=1, owned=True))  # as if donated in flight
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        jt.finish()
    assert local_history(store, "unreadable") == {0: {"kept": 1.0}, 1: {"kept": 2.0}}
    assert any("1 value(s) left out that could not be read" in str(w.message) for w in caught)
    with RunStore(store) as runs:
        assert runs.run("unreadable").status == "finished"
