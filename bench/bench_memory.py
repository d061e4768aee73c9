"""What a slow backend costs in memory: a large array logged every step, resident memory sampled as it goes.

    python bench/bench_memory.py             # or: make bench

A 1e6-element float32 array (4 MB) is logged with ``jaxtrack.log`` at every
step into a backend that takes 5 ms a report (slower than the loop), next to
nothing else. Resident memory (RSS) is read every ``--every`` steps; the table
shows it at each sample and its growth since the first. What waits for the
backend is bounded in bytes (the dispatcher's ``max_queued_bytes``, the
backend's ``max_pending_bytes``), so memory levels off; a queue bounded only
in calls would hold thousands of such arrays.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

import numpy as np

import jaxtrack as jt


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class SlowBackend(jt.NoopTracker):
    """Takes ``delay`` seconds a report: a backend that cannot keep up with the loop."""

    name = "slow"

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.reports = 0

    def log(self, metrics: Any, *, step: Any = None, commit: Any = None) -> None:
        time.sleep(self.delay)
        self.reports += 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--size", type=int, default=10**6)
    parser.add_argument("--delay", type=float, default=0.005)
    args = parser.parse_args(argv)

    backend = SlowBackend(args.delay)
    jt.current_tracker(backend)
    samples = []
    started = time.perf_counter()
    first = resident_bytes()
    for step in range(1, args.steps + 1):
        jt.log({"w": np.full(args.size, float(step), np.float32)}, step=step)
        if step % args.every == 0:
            samples.append((step, resident_bytes()))
    loop_secs = time.perf_counter() - started
    jt.finish()
    print(
        f"{args.steps} steps of a {args.size * 4 / 2**20:.0f} MiB array into a backend taking {args.delay * 1e3:g} ms"
    )
    print(f"loop {loop_secs:.1f} s; the backend received {backend.reports} reports\n")
    print("| step | resident memory | growth since start |")
    print("|---|---|---|")
    for step, rss in samples:
        print(f"| {step} | {rss / 2**20:,.0f} MiB | {(rss - first) / 2**20:+,.0f} MiB |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
