"""A separate process that appends JSON lines until it is killed, for tests/trackers/test_jsonl.py.

    python jsonl_writer.py PATH READY_STEP

Logs ``{"i": step, "x": float(step), "text": <64 KiB>}`` at steps ``0, 1, ...``
with a ``type: json_logger`` tracker built by ``jaxtrack.init_tracker``, without
waiting for the writes, so the tracker's thread is always in the middle of
writing when the process is killed. After the report of ``READY_STEP`` it waits
for the writes once (``flush``), prints ``ready`` (flushed) and goes on logging.
"""

from __future__ import annotations

import itertools
import sys

TEXT_BYTES = 64 * 1024  # a line long enough that a kill is likely to land while one is written


def main(path: str, ready_step: int) -> None:
    import jaxtrack as jt

    tracker = jt.init_tracker({"type": "json_logger", "path": path})
    text = "x" * TEXT_BYTES
    for step in itertools.count():
        tracker.log({"i": step, "x": float(step), "text": text}, step=step)
        if step == ready_step:
            tracker.flush()
            print("ready", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
