"""Reads what an offline W&B run wrote: the ``run-<id>.wandb`` transaction log and its files.

wandb 0.31 no longer ships a Python reader for the transaction log, so this is
one, for tests. The file is LevelDB's log format behind a 7-byte W&B header:

* header: ``b":W&B"``, the magic ``0xBEE1`` as 2 little-endian bytes, version ``0``;
* then 32 KiB blocks (the first one 7 bytes shorter, the W&B header fills
  them) of chunks, each with a 7-byte header: checksum (uint32 LE), payload
  length (uint16 LE), chunk type (1 FULL, 2 FIRST, 3 MIDDLE, 4 LAST);
* a block tail too short for a chunk header (under 7 bytes) is zero padding.

The checksum is checked, and it is *not* LevelDB's masked CRC-32C: wandb-core
writes the plain CRC-32 of zlib (IEEE polynomial) over the type byte and the
payload. Every reassembled record is a ``wandb.proto.wandb_internal_pb2.Record``.

wandb writes the file asynchronously, even after ``run.finish()`` returned
(the ``wandb-core`` service flushes it a moment later), so :func:`read_run`
waits, up to ``timeout`` seconds, for the run's ``exit`` record to appear::

    run = read_run(tmp_path)  # the one run under the ``dir=`` given to wandb.init
    run.history[0]["loss"], run.summary["best_loss"], run.config["lr"], run.artifacts[0].paths
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import struct
import time
import zlib
from collections.abc import Iterable, Iterator
from typing import Any

from wandb.proto import wandb_internal_pb2 as pb

WANDB_HEADER = b":W&B" + struct.pack("<H", 0xBEE1) + b"\x00"
BLOCK_SIZE = 32 * 1024
CHUNK_HEADER_SIZE = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


class WandbFileError(ValueError):
    """The transaction log is not in the format described in this module's docstring."""


def iter_record_bytes(data: bytes, *, check_crc: bool = True) -> Iterator[bytes]:
    """The serialized records in the bytes of a ``.wandb`` file, in order.

    A truncated last chunk (the file is still being written) ends the
    iteration quietly; anything else malformed raises :class:`WandbFileError`.
    """
    if data[: len(WANDB_HEADER)] != WANDB_HEADER:
        raise WandbFileError(f"not a W&B transaction log: starts with {data[:7]!r}, expected {WANDB_HEADER!r}")
    pos = len(WANDB_HEADER)
    pending: bytearray | None = None  # the chunks of a record split over blocks
    while pos < len(data):
        room = BLOCK_SIZE - pos % BLOCK_SIZE
        if room < CHUNK_HEADER_SIZE:
            if any(data[pos : pos + room]):
                raise WandbFileError(f"non-zero block padding at offset {pos}")
            pos += room
            continue
        if pos + CHUNK_HEADER_SIZE > len(data):
            return  # a chunk header still being written
        crc, length, kind = struct.unpack_from("<IHB", data, pos)
        start = pos + CHUNK_HEADER_SIZE
        if start + length > len(data):
            return  # a payload still being written
        if length > room - CHUNK_HEADER_SIZE:
            raise WandbFileError(f"chunk at offset {pos} runs past its block ({length} bytes, {room} left)")
        payload = data[start : start + length]
        if check_crc and zlib.crc32(bytes([kind]) + payload) != crc:
            raise WandbFileError(f"checksum mismatch in the chunk at offset {pos}")
        pos = start + length
        if kind == FULL:
            if pending is not None:
                raise WandbFileError(f"FULL chunk at offset {start - CHUNK_HEADER_SIZE} inside a split record")
            yield payload
        elif kind == FIRST:
            if pending is not None:
                raise WandbFileError(f"FIRST chunk at offset {start - CHUNK_HEADER_SIZE} inside a split record")
            pending = bytearray(payload)
        elif kind in (MIDDLE, LAST):
            if pending is None:
                raise WandbFileError(f"chunk of type {kind} at offset {start - CHUNK_HEADER_SIZE} with no FIRST")
            pending += payload
            if kind == LAST:
                yield bytes(pending)
                pending = None
        else:
            raise WandbFileError(f"unknown chunk type {kind} at offset {start - CHUNK_HEADER_SIZE}")


def parse_records(data: bytes, *, check_crc: bool = True) -> list[pb.Record]:
    """The ``Record`` protos in the bytes of a ``.wandb`` file."""
    records = []
    for raw in iter_record_bytes(data, check_crc=check_crc):
        record = pb.Record()
        record.ParseFromString(raw)
        records.append(record)
    return records


@dataclasses.dataclass(frozen=True)
class Metric:
    """A ``define_metric`` record."""

    name: str
    glob_name: str
    step_metric: str


@dataclasses.dataclass(frozen=True)
class Artifact:
    """An artifact record: what ``run.log_artifact`` stored."""

    name: str
    type: str
    digest: str
    aliases: tuple[str, ...]
    paths: tuple[str, ...]
    """The paths of the manifest's entries, relative to the artifact root."""


@dataclasses.dataclass
class RunFiles:
    """What one offline run wrote, decoded."""

    run_dir: pathlib.Path
    wandb_file: pathlib.Path
    records: list[pb.Record]
    run: pb.RunRecord | None
    """The first run record: id, project, tags, name..."""
    history: list[dict[str, Any]]
    """One dict per history row, in order; nested values (media) are rebuilt as dicts."""
    summary: dict[str, Any]
    """The run summary after every summary update and removal."""
    config: dict[str, Any]
    """The run config: the run record's, then every config update and removal."""
    metrics: list[Metric]
    artifacts: list[Artifact]
    files: list[str]
    """Paths (relative to the files dir) named by ``files`` records."""
    exited: bool
    """Whether the ``exit`` record, written by ``finish()``, is there."""

    @property
    def files_dir(self) -> pathlib.Path:
        return self.run_dir / "files"

    def column(self, key: str) -> list[Any]:
        """``key``'s value in every history row that has it."""
        return [row[key] for row in self.history if key in row]


def find_wandb_files(root: str | os.PathLike[str]) -> list[pathlib.Path]:
    """Every ``run-*.wandb`` file under ``root`` (a ``dir=`` given to ``wandb.init``, or a run dir).

    ``latest-run`` (a symlink to the newest run dir) is skipped so each run is found once.
    """
    root = pathlib.Path(root)
    if root.is_file():
        return [root]
    found = []
    for path in sorted(root.rglob("run-*.wandb")):
        if "latest-run" not in path.relative_to(root).parts:
            found.append(path)
    return found


def read_run(path: str | os.PathLike[str], *, timeout: float = 15.0, check_crc: bool = True) -> RunFiles:
    """Reads the one run under ``path`` (a ``.wandb`` file, a run dir, or the ``dir=`` of ``wandb.init``).

    Waits up to ``timeout`` seconds for the file to appear and to hold the
    ``exit`` record, as wandb finishes writing it after ``finish()`` returns;
    then returns what was read, complete or not (see :attr:`RunFiles.exited`).
    """
    deadline = time.monotonic() + timeout
    while True:
        candidates = find_wandb_files(path)
        if len(candidates) > 1:
            raise WandbFileError(f"{len(candidates)} runs under {os.fspath(path)!r}: {[str(c) for c in candidates]}")
        if candidates:
            records = parse_records(candidates[0].read_bytes(), check_crc=check_crc)
            if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
                return decode(candidates[0], records)
        elif time.monotonic() > deadline:
            raise FileNotFoundError(f"no run-*.wandb file under {os.fspath(path)!r}")
        time.sleep(0.05)


def decode(wandb_file: pathlib.Path, records: list[pb.Record]) -> RunFiles:
    """Turns the records of one run into a :class:`RunFiles`."""
    run: pb.RunRecord | None = None
    history: list[dict[str, Any]] = []
    summary: dict[str, Any] = {}
    config: dict[str, Any] = {}
    metrics: list[Metric] = []
    artifacts: list[Artifact] = []
    files: list[str] = []
    exited = False
    for record in records:
        kind = record.WhichOneof("record_type")
        if kind == "run" and run is None:
            run = record.run
            _apply(config, record.run.config.update, record.run.config.remove)
        elif kind == "history":
            row: dict[str, Any] = {}
            _apply(row, record.history.item, ())
            history.append(row)
        elif kind == "summary":
            _apply(summary, record.summary.update, record.summary.remove)
        elif kind == "config":
            _apply(config, record.config.update, record.config.remove)
        elif kind == "metric":
            m = record.metric
            metrics.append(Metric(name=m.name, glob_name=m.glob_name, step_metric=m.step_metric))
        elif kind == "artifact":
            a = record.artifact
            artifacts.append(
                Artifact(
                    name=a.name,
                    type=a.type,
                    digest=a.digest,
                    aliases=tuple(a.aliases),
                    paths=tuple(entry.path for entry in a.manifest.contents),
                )
            )
        elif kind == "files":
            files.extend(f.path for f in record.files.files)
        elif kind == "exit":
            exited = True
    return RunFiles(
        run_dir=wandb_file.parent,
        wandb_file=wandb_file,
        records=records,
        run=run,
        history=history,
        summary=summary,
        config=config,
        metrics=metrics,
        artifacts=artifacts,
        files=files,
        exited=exited,
    )


def _key_path(item: Any) -> list[str]:
    """An item's key: ``key`` if set, else the path ``nested_key`` (media values are split into their fields)."""
    return [item.key] if item.key else list(item.nested_key)


def _apply(target: dict[str, Any], updates: Iterable[Any], removals: Iterable[Any]) -> None:
    for item in updates:
        *parents, last = _key_path(item)
        node = target
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = json.loads(item.value_json)
    for item in removals:
        *parents, last = _key_path(item)
        node = target
        for part in parents:
            node = node.get(part, {})
        node.pop(last, None)
