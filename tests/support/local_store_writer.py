"""A separate process that writes one run into a local store, for tests/store/test_writer.py.

    python local_store_writer.py PATH RUN_ID NUM_STEPS [take-over]

Logs ``{"i": step, "x": float(step), "note": "step <step>"}`` at steps
``0 .. NUM_STEPS - 1`` with a :class:`~jaxtrack.LocalTracker` (``NUM_STEPS``
``0``: until it is killed), and prints each step on its own line, flushed,
once ``tracker.flush()`` has returned after its ``log``, so the parent knows
that report is committed (``log`` only queues it for the tracker's thread).
Prints ``done`` after ``finish``. With ``take-over``, it takes the run from
a live writer (``LocalTracker(take_over=True)``).
"""

from __future__ import annotations

import itertools
import sys


def main(path: str, run_id: str, num_steps: int, take_over: bool = False) -> None:
    from jaxtrack.trackers.local import LocalTracker

    tracker = LocalTracker(path, run_id=run_id, **({"take_over": True} if take_over else {}))
    steps = itertools.count() if num_steps == 0 else range(num_steps)
    for step in steps:
        tracker.log({"i": step, "x": float(step), "note": f"step {step}"}, step=step)
        tracker.flush()
        print(step, flush=True)
    tracker.finish()
    print("done", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), take_over=sys.argv[4:] == ["take-over"])
