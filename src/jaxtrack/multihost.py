"""Multi-process (``jax.distributed``) runs: which process writes, global values, one run id.

Every process runs the same training code and makes the same jaxtrack calls.
By default only process 0 writes to backends, so a run appears once however
many hosts train it; the other processes make the same calls with no side
effects (no files, no W&B run) and keep doing the same device work, so the
hosts never fall out of step.

Values are global. A logged array that no process holds whole (a batch
sharded over every host's devices) is gathered with a collective, which every
process must join in the same order: it is dispatched on the thread that logs
it ([`replicate_sharded`][jaxtrack.multihost.replicate_sharded], called at the
call as it is queued, by ``jaxtrack.pipeline.fetch.hold``), in program order
with the training steps, never on the dispatcher's thread, whose collectives
would race with the training thread's. The dispatcher then reads each
process's local copy of the replicated value. So
``jaxtrack.log`` of such an array must be called on every process, as the
training step is.

The run id is the same on every process: [`jaxtrack.init_tracker`][jaxtrack.init_tracker]
shares the one process 0 made up ([`agree_on_run_id`][jaxtrack.multihost.agree_on_run_id]), so a restarted
job given that id resumes the run everywhere. Call
``jax.distributed.initialize`` before ``init_tracker``.

A backend that should write on every process (per-host system metrics, say)
checks [`writes`][jaxtrack.multihost.writes] with ``all_processes=True`` and keeps the processes'
outputs apart with [`per_process`][jaxtrack.multihost.per_process].
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxtrack.values.convert import with_key_order


def process_index() -> int:
    """This process's index in a ``jax.distributed`` run (0 when there is one process).

    Examples:
        >>> process_index()
        0
    """
    return jax.process_index()


def process_count() -> int:
    """How many processes take part in the run (1 without ``jax.distributed``).

    Examples:
        >>> process_count()
        1
    """
    return jax.process_count()


def is_primary_process() -> bool:
    """Whether this process is the one that writes to backends (process 0).

    Examples:
        >>> is_primary_process()
        True
    """
    return process_index() == 0


def writes(all_processes: bool = False) -> bool:
    """Whether a backend writes in this process: process 0 only, or every process with ``all_processes``.

    Examples:
        >>> writes(), writes(all_processes=True)
        (True, True)
    """
    return all_processes or is_primary_process()


def per_process(name: str) -> str:
    """``name`` on process 0 (and in a one-process run), ``name-process<i>`` on process ``i``.

    For backends that write on every process (``all_processes``): process 0
    writes the run itself, the others runs, directories or files of their own
    beside it.

    Examples:
        >>> per_process("20240101-120000-abcdef")  # process 0: the name itself
        '20240101-120000-abcdef'
    """
    index = process_index()
    return name if index == 0 else f"{name}-process{index}"


# ---- global values ---------------------------------------------------------------------------------


def replicate_sharded(tree: Any) -> Any:
    """``tree`` with every array that other processes hold parts of replicated onto all its devices.

    The copy is dispatched, not waited for: the training thread goes on, and
    each process later reads the whole value from its own devices (what
    ``jax.device_get`` does with a replicated array). It is a collective, so
    every process must call this with the same arrays, in the same order
    relative to its other device work: call it on the thread that runs the
    training steps. Returns ``tree`` itself when there is nothing to gather
    (always in a one-process run); otherwise a tree of the same structure,
    mappings keeping their key order. An array on devices none of which is
    this process's (a pipeline stage on other hosts) is left as it is: this
    process takes no part in its computations, and cannot read it.

    Examples:
        >>> import numpy as np
        >>> tree = {"loss": np.float32(0.5)}
        >>> replicate_sharded(tree) is tree
        True
    """
    global _one_process
    if _one_process:
        return tree  # the common case, at the cost of a global look-up
    try:
        leaves, treedef = jax.tree_util.tree_flatten(tree)
    except (TypeError, ValueError):
        return tree  # e.g. a dict whose keys cannot be sorted: left to the tracker, which names the problem
    picked = []
    for i, leaf in enumerate(leaves):
        if isinstance(leaf, jax.Array):
            # A JAX array exists, so the runtime is up and asking the process count starts nothing.
            if jax.process_count() == 1:
                _one_process = True
                return tree
            if not leaf.is_fully_addressable and not leaf.is_fully_replicated and leaf.sharding.addressable_devices:
                picked.append(i)
    if not picked:
        return tree
    arrays = [leaves[i] for i in picked]
    gathered = _replicator(tuple(_replicated(array.sharding) for array in arrays))(*arrays)
    for i, array in zip(picked, gathered, strict=True):
        leaves[i] = array
    return with_key_order(tree, jax.tree_util.tree_unflatten(treedef, leaves))


_one_process = False  # known once a JAX array was seen in a one-process run (the count never changes then)


def _replicated(sharding: jax.sharding.Sharding) -> NamedSharding:
    """A sharding that puts a whole copy of the value on each device of ``sharding``."""
    if isinstance(sharding, NamedSharding):
        return NamedSharding(sharding.mesh, PartitionSpec(), memory_kind=sharding.memory_kind)
    # Any device order holds the same replicated value; jax.devices()'s is the same in every process.
    devices = [device for device in jax.devices() if device in sharding.device_set]
    return NamedSharding(Mesh(np.array(devices), ("devices",)), PartitionSpec(), memory_kind=sharding.memory_kind)


def _identity(*arrays: Any) -> tuple[Any, ...]:
    return arrays


@functools.lru_cache(maxsize=256)
def _replicator(shardings: tuple[NamedSharding, ...]) -> Callable[..., tuple[jax.Array, ...]]:
    return jax.jit(_identity, out_shardings=shardings)


# ---- one run id ------------------------------------------------------------------------------------

_ID_TEXT_BYTES = 255  # the length is one byte; made-up ids are ~22 characters
_DIGEST_BYTES = 32


def agree_on_run_id(run_id: str | None, new: Callable[[], str]) -> str:
    """The run id every process of the run uses: ``run_id``, or one made up by process 0 with ``new()``.

    With one process this is ``run_id``, or ``new()`` when it is ``None``.
    With several (``jax.distributed``), every process must call it at the same
    point (it is a collective, as [`jaxtrack.init_tracker`][jaxtrack.init_tracker] is called by
    every process): when no process gives an id, all use the one process 0
    made up, so a resumed run is found again on every host; a given id must be
    the same on every process, and is checked to be. A mismatch, or an id given
    on some processes only, raises ``ValueError`` on every process, so none
    is left waiting for the others.

    Examples:
        >>> agree_on_run_id("demo", new=lambda: "unused")
        'demo'
    """
    if process_count() == 1:
        return run_id if run_id is not None else new()
    from jax.experimental import multihost_utils

    own = run_id if run_id is not None else new()
    everyone = multihost_utils.process_allgather(_id_payload(own, given=run_id is not None))
    return _agreed_run_id(np.asarray(everyone), own)


def _id_payload(run_id: str, *, given: bool) -> np.ndarray:
    """``run_id`` as fixed-size bytes: given or made up, its length, its SHA-256, its text (up to 255 bytes)."""
    text = run_id.encode("utf-8")
    if not given and len(text) > _ID_TEXT_BYTES:
        raise ValueError(f"a made-up run id must be at most {_ID_TEXT_BYTES} bytes to be shared, got {run_id!r}")
    shown = text[:_ID_TEXT_BYTES]  # a given id is compared by digest; the text is for messages
    payload = np.zeros(2 + _DIGEST_BYTES + _ID_TEXT_BYTES, np.uint8)
    payload[0] = given
    payload[1] = len(shown)
    payload[2 : 2 + _DIGEST_BYTES] = np.frombuffer(hashlib.sha256(text).digest(), np.uint8)
    payload[2 + _DIGEST_BYTES : 2 + _DIGEST_BYTES + len(shown)] = np.frombuffer(shown, np.uint8)
    return payload


def _agreed_run_id(everyone: np.ndarray, own: str) -> str:
    """The run id from every process's ``_id_payload`` (one row each, process 0's first); ``own`` is ours.

    The same rows reach every process, so every process returns the same id or
    raises the same error.
    """
    given = everyone[:, 0].astype(bool)

    def text(row: np.ndarray) -> str:
        return bytes(row[2 + _DIGEST_BYTES : 2 + _DIGEST_BYTES + int(row[1])]).decode("utf-8", "replace")

    if not given.any():
        return text(everyone[0])
    if not given.all():
        raise ValueError(
            f"init_tracker: a run_id was given on processes {np.flatnonzero(given).tolist()} "
            f"but not on {np.flatnonzero(~given).tolist()}; give the same run_id on every process, "
            "or none (process 0 then makes one up for all)"
        )
    digests = everyone[:, 2 : 2 + _DIGEST_BYTES]
    if not (digests == digests[0]).all():
        ids = ", ".join(f"process {i}: {text(row)!r}" for i, row in enumerate(everyone))
        raise ValueError(f"init_tracker: the processes of the run were given different run ids ({ids})")
    return own


__all__ = [
    "agree_on_run_id",
    "is_primary_process",
    "per_process",
    "process_count",
    "process_index",
    "replicate_sharded",
    "writes",
]
