"""A training script that ends in one of several ways, for tests/test_run.py.

    python process_exit_worker.py SCENARIO STORE_PATH RUN_ID

Every scenario records into the local store at ``STORE_PATH`` as run
``RUN_ID`` (``jaxtrack.init_tracker({"type": "local", ...})``), logs
``{"i": step, "x": float(step)}`` at steps 0, 1, 2, ... and prints each step
on its own line, flushed, once ``jaxtrack.log`` has returned, so the parent
knows which reports the training loop handed over. Scenarios:

``loop``
    logs forever in a plain loop, a step every 2 ms (the parent sends SIGTERM).
``train``
    logs forever from a ``jaxtrack.train`` callback, a step every 2 ms (the
    parent sends SIGTERM).
``raise``
    logs 20 steps, then raises ``ValueError("boom from the worker")``, uncaught.
``interrupt``
    logs 20 steps, then raises ``KeyboardInterrupt``, uncaught.
``exit``
    logs 20 steps, then returns without ``jaxtrack.finish()``.
``own-handler``
    installs its own SIGTERM handler first; prints ``handler kept`` (or
    ``handler replaced``) once jaxtrack is set up, then logs forever, a step
    every 2 ms. Its handler calls ``jaxtrack.finish(status="killed")``,
    prints ``own handler ran`` and exits with status 7.
``hung-exit`` / ``hung-sigterm``
    a user backend that hangs in its first ``log`` (under the default
    ``block`` policy, ``max_pending`` 20, ``block_timeout`` 1 s) next to the
    local store; finish timeouts of 3 s. Logs 2,000 steps (far more than the
    hung backend's room), prints ``trained``, then returns (``hung-exit``)
    or waits for the parent's SIGTERM (``hung-sigterm``).
``sigterm-in-submit``
    logs 20 steps, then sends itself SIGTERM from inside the dispatcher's lock,
    as ``jaxtrack.log`` holds it for a moment whenever it wakes the dispatcher
    (a SIGTERM that arrives then runs the handler with the lock held), with
    a SIGTERM budget of 2 seconds.
"""

from __future__ import annotations

import itertools
import os
import signal
import sys
import time

STEPS = 20
STEP_SECS = 0.002
"""The pace of the endless scenarios: a training step's worth of time between reports. As in a real
training loop, a signal then lands mostly outside jaxtrack's own calls; one that lands inside a
``jaxtrack.log`` holding the dispatcher's lock is the ``sigterm-in-submit`` scenario (a known bug)."""


def log_step(step: int, *, pace: bool = False) -> None:
    import jaxtrack as jt

    if pace:
        time.sleep(STEP_SECS)
    jt.log({"i": step, "x": float(step)}, step=step)
    print(step, flush=True)


def main(scenario: str, path: str, run_id: str) -> None:
    if scenario == "own-handler":

        def on_sigterm(signum, frame):
            import jaxtrack as jt

            jt.finish(status="killed")
            print("own handler ran", flush=True)
            sys.exit(7)

        signal.signal(signal.SIGTERM, on_sigterm)

    import jaxtrack as jt

    spec: list[object] = [{"type": "local", "path": path}]
    if scenario.startswith("hung-"):
        import threading

        from jaxtrack import run

        run.FINISH_TIMEOUT_SECS = run.SIGTERM_FINISH_TIMEOUT_SECS = 3.0

        class Hung(jt.NoopTracker):
            name = "hung"
            max_pending = 20
            block_timeout = 1.0

            def log(self, metrics, *, step=None, commit=None):
                threading.Event().wait()  # for ever

        spec.append(Hung())
    jt.init_tracker(spec, run_id=run_id)

    if scenario == "own-handler":
        kept = signal.getsignal(signal.SIGTERM) is on_sigterm
        print("handler kept" if kept else "handler replaced", flush=True)
        for step in itertools.count():
            log_step(step, pace=True)
    elif scenario == "loop":
        for step in itertools.count():
            log_step(step, pace=True)
    elif scenario == "train":

        def record(step: int, state: int) -> None:
            log_step(step, pace=True)

        jt.train(lambda state, batch: state + batch, 0, itertools.repeat(1), 10**9, callbacks=[record])
    elif scenario == "sigterm-in-submit":
        for step in range(STEPS):
            log_step(step)
        from jaxtrack import pipeline, run

        run.SIGTERM_FINISH_TIMEOUT_SECS = 2.0
        with pipeline.default_dispatcher()._cond:  # what Dispatcher.submit does to wake its thread
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(60)  # the handler runs here: at once, or when the sleep is interrupted
        print("survived SIGTERM", flush=True)
    elif scenario in ("hung-exit", "hung-sigterm"):
        for step in range(STEPS * 100):
            log_step(step)
        print("trained", flush=True)
        if scenario == "hung-sigterm":
            time.sleep(600)  # the parent sends SIGTERM
    elif scenario in ("raise", "interrupt", "exit"):
        for step in range(STEPS):
            log_step(step)
        if scenario == "raise":
            raise ValueError("boom from the worker")
        if scenario == "interrupt":
            raise KeyboardInterrupt
    else:
        raise SystemExit(f"unknown scenario {scenario!r}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])
