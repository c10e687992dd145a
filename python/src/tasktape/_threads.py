"""The threads plain-function ops run in: reused when idle, never a cap.

Starting a thread for every run cost more than a no-op run itself, so a
thread that finished a run waits for the next one. A fixed-size pool would
not do: a function that ignores its cancel keeps its thread after its task
ended, and a run queued behind it would never start. So a run goes to an
idle thread when there is one and to a new thread otherwise; a thread idle
for `idle_s` exits.
"""

from __future__ import annotations

import contextvars
import logging
import os
import queue
import threading
from collections.abc import Callable

__all__ = ["Threads"]


class Threads:
    """Runs callables in daemon threads, reusing idle ones."""

    def __init__(self, name: str = "tasktape-op", idle_s: float = 30.0) -> None:
        self._name = name
        self._idle_s = idle_s
        self._lock = threading.Lock()
        #: Threads waiting for a job that no `submit` has counted on yet.
        self._idle = 0
        self._started = 0
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._after_fork)

    def submit(self, job: Callable[[], None]) -> None:
        """Runs `job` in an idle thread, or in a new one."""
        with self._lock:
            reuse = self._idle > 0
            if reuse:
                self._idle -= 1
            else:
                self._started += 1
                number = self._started
        self._jobs.put(job)
        if not reuse:
            threading.Thread(target=self._serve, name=f"{self._name}-{number}", daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                job = self._jobs.get(timeout=self._idle_s)
            except queue.Empty:
                with self._lock:
                    # An idle thread nobody counted on may go; when every
                    # waiting thread is counted on, a job is on its way.
                    if self._idle > 0:
                        self._idle -= 1
                        return
                continue
            try:
                # A fresh context per run: nothing one run set is seen by
                # the next in this thread.
                contextvars.Context().run(job)
            except BaseException:  # the job's own handling failed: keep serving
                logging.getLogger("tasktape").exception("a worker thread's job raised")
            with self._lock:
                self._idle += 1

    def _after_fork(self) -> None:
        """In a forked child: no thread of the parent's is there."""
        self._lock = threading.Lock()
        self._idle = 0
        self._jobs = queue.SimpleQueue()
