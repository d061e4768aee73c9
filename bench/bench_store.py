"""How fast the local run store takes scalars: sustained scalars per second, side by side with TensorBoard.

    python bench/bench_store.py             # or: make bench

One process; for each report size (scalars per ``log`` call) the variants
run in turn, round after round (the order rotating), each writing the same
reports to a fresh run. A variant's score is the median over rounds of its
scalars per second; "vs tensorboard" is the median of its per-round ratio to
the TensorBoard writer. Values are NumPy float32 scalars, as reports fetched
from the device are.

Variants:
  local           the local store's own write: LocalTracker.log as its thread calls it (values normalised as
                  jaxtrack normalises them once per report), one committed transaction per report
  local_pipeline  jaxtrack.log to a LocalTracker, through the whole pipeline, until flush() returns
  tensorboard     TensorboardTracker.log as its thread calls it (event files, buffered, no per-report commit)

The target is 200,000 scalars/s into the store (``local``) at 100 scalars a report.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from bench_logging import machine, write_now  # the same machine line, and the same direct write

import jaxtrack as jt
from jaxtrack.trackers.local import LocalTracker
from jaxtrack.trackers.tensorboard import TensorboardTracker
from jaxtrack.values import NormalizedValues

REPORT_SIZES = (10, 100, 1000)
TARGET = ("local", 100, 200_000.0)


def reports(size: int, count: int) -> list[dict[str, Any]]:
    keys = [f"train/metric_{i:04d}" for i in range(size)]
    return [{key: np.float32(step + i * 1e-3) for i, key in enumerate(keys)} for step in range(count)]


def write_directly(tracker: jt.Tracker, batch: list[dict[str, Any]]) -> None:
    """Each report as the backend's thread gets it: normalised once, then its own ``log`` on this thread."""
    write = write_now(tracker)
    with tracker:
        for step, report in enumerate(batch):
            write(NormalizedValues(report).for_bins(tracker.histogram_bins), step=step)


def write_local(directory: str, batch: list[dict[str, Any]]) -> None:
    write_directly(LocalTracker(os.path.join(directory, "store.db")), batch)


def write_local_pipeline(directory: str, batch: list[dict[str, Any]]) -> None:
    tracker = LocalTracker(os.path.join(directory, "store.db"))
    with jt.current_tracker(tracker):
        for step, report in enumerate(batch):
            jt.log(report, step=step)
        jt.flush()
    tracker.finish()


def write_tensorboard(directory: str, batch: list[dict[str, Any]]) -> None:
    write_directly(TensorboardTracker(os.path.join(directory, "tb")), batch)


VARIANTS: dict[str, Callable[[str, list[dict[str, Any]]], None]] = {
    "local": write_local,
    "local_pipeline": write_local_pipeline,
    "tensorboard": write_tensorboard,
}


def bench_size(size: int, rounds: int, scalars: int) -> list[dict[str, Any]]:
    batch = reports(size, max(scalars // size, 1))
    total = len(batch) * size
    rates: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for round_index in range(rounds + 1):  # round 0 warms up (imports, caches) and is not counted
        names = list(VARIANTS)
        names = names[round_index % len(names) :] + names[: round_index % len(names)]
        for name in names:
            with tempfile.TemporaryDirectory(prefix="jaxtrack-bench-store-") as directory:
                start = time.perf_counter()
                VARIANTS[name](directory, batch)
                elapsed = time.perf_counter() - start
            if round_index:
                rates[name].append(total / elapsed)
    rows = []
    for name in VARIANTS:
        ratios = [mine / tb for mine, tb in zip(rates[name], rates["tensorboard"], strict=True)]
        target = TARGET[2] if (name, size) == TARGET[:2] else None
        rows.append(
            {
                "scalars_per_report": size,
                "variant": name,
                "scalars_per_sec": statistics.median(rates[name]),
                "vs_tensorboard": statistics.median(ratios),
                "target": target,
            }
        )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| scalars a report | variant | scalars/s | vs tensorboard | target |", "|---|---|---|---|---|"]
    for row in rows:
        target = row["target"]
        verdict = "" if target is None else f"≥ {target:,.0f} {'✓' if row['scalars_per_sec'] >= target else '✗'}"
        lines.append(
            f"| {row['scalars_per_report']} | {row['variant']} | {row['scalars_per_sec']:,.0f} | "
            f"{row['vs_tensorboard']:.2f} | {verdict} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--scalars", type=int, default=200_000, help="scalars written per variant per round")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(REPORT_SIZES), help="scalars per report")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args(argv)

    rows = [row for size in args.sizes for row in bench_size(size, args.rounds, args.scalars)]
    print(f"Machine: {machine()}\n")
    print(table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine(), "rows": rows}, f, indent=2)
    missed = [
        f"{r['variant']}@{r['scalars_per_report']}" for r in rows if r["target"] and r["scalars_per_sec"] < r["target"]
    ]
    if missed:
        print(f"\nBelow target: {', '.join(missed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
