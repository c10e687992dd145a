"""A worker program for the tests that need a separate process:
`python worker_script.py URL WORKER_ID`. Serves `hold` (sleeps for
`seconds` or until cancelled; with HOLD_IDEMPOTENT=1 it is idempotent with
3 attempts) and `sleep_in_child` (process isolation, from `__main__`);
prints "exited cleanly" when `run()` returns."""

from __future__ import annotations

import os
import sys
import time

from tasktape import Task, Worker

worker = Worker(sys.argv[1], id=sys.argv[2], concurrency=4, drain_timeout=10)


IDEMPOTENT = os.environ.get("HOLD_IDEMPOTENT") == "1"
RETRY = {"max_attempts": 3, "backoff": "fixed", "initial_ms": 100, "max_ms": 100, "jitter": False}


@worker.op("hold", idempotent=IDEMPOTENT, retry=RETRY if IDEMPOTENT else None)
def hold(task: Task, seconds: float = 3600) -> dict[str, int]:
    """Sleeps `seconds` (until cancelled), then answers its attempt."""
    task.progress("hold", 0, None)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        task.raise_if_cancelled()
        time.sleep(0.01)
    return {"attempt": task.attempt}


@worker.op("sleep_in_child", isolation="process")
def sleep_in_child(task: Task) -> None:
    """Sleeps in a child process (found there as `__main__.sleep_in_child`)."""
    task.partial("pid", {"pid": os.getpid()})
    time.sleep(3600)


if __name__ == "__main__":
    print("starting", flush=True)
    worker.run()
    print("exited cleanly", flush=True)
