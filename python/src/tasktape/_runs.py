"""Running one claimed task: on the event loop, in a thread, or in a child
process, and turning how it ended into an outcome for the engine.

A `Run` is one attempt of one task on this worker. Its runner calls the op
and, whatever happens, hands exactly one outcome to `on_done` on the event
loop: `("result", value)`, `("error", error_object)` or `("cancelled",
None)`. Stopping a run (`Run.stop`) sets the task's cancel flag and, by
runner: cancels the coroutine, or leaves the thread to notice, or sends the
child SIGTERM then SIGKILL after the grace. This module knows no HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Callable
from datetime import datetime
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from ._models import parse_time
from ._ops import OpSpec
from ._task import Cancelled, Task, error_from_exception
from ._threads import Threads

__all__ = ["Outcome", "Run"]

#: Where thread ops run and process-isolated runs are watched.
_THREADS = Threads()

Outcome = tuple[str, Any]
"""`("result", value)`, `("error", {code, message, detail, permanent})` or
`("cancelled", None)`."""


#: What a run reports when even its error could not be described.
_UNREPORTABLE: Outcome = (
    "error",
    {
        "code": "op_error",
        "message": "the op failed and its error could not be described",
        "detail": {},
        "permanent": False,
    },
)


def _result_outcome(value: Any) -> Outcome:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as error:
        return (
            "error",
            {
                "code": "op_error",
                "message": f"the op's result is not JSON: {error}",
                "detail": {"type": "TypeError", "traceback": ""},
                "permanent": False,
            },
        )
    return ("result", value)


class Run:
    """One attempt of a claimed task on this worker.

    `state`: `running` → (`stopping`) → `done` (its outcome is being
    reported) or `abandoned` (taken from this worker or given up: nothing
    more is reported). `reason` says why it was asked to stop: `cancel`,
    `timeout`, `drain` or `lost`.
    """

    def __init__(
        self,
        spec: OpSpec,
        claimed: dict[str, Any],
        loop: asyncio.AbstractEventLoop,
        sink: Callable[[Run, dict[str, Any]], None],
        on_done: Callable[[Run, Outcome], None],
    ) -> None:
        self.spec = spec
        self.task_id: str = claimed["task_id"]
        self.lease: str = claimed["lease"]
        self.params: dict[str, Any] = dict(claimed.get("params") or {})
        deadline = claimed.get("deadline")
        self.deadline: datetime | None = parse_time(deadline) if isinstance(deadline, str) else None
        self.state = "running"
        #: Events queued for the server so far (the next one's number).
        self.events_queued = 0
        self.reason: str | None = None
        self.cancel_flag = threading.Event()
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._sink = sink
        self._on_done = on_done
        self._coroutine: asyncio.Task[None] | None = None
        self._process: BaseProcess | None = None
        self._process_lock = threading.Lock()
        self.task = Task(
            task_id=self.task_id,
            op=spec.name,
            attempt=int(claimed.get("attempt") or 1),
            max_attempts=int(claimed.get("max_attempts") or 1),
            deadline=self.deadline,
            params=self.params,
            sink=self._emit,
            cancel_flag=self.cancel_flag,
        )

    @property
    def active(self) -> bool:
        """Whether it still holds a slot (running, or asked to stop)."""
        return self.state in ("running", "stopping")

    def _emit(self, body: dict[str, Any]) -> None:
        if not self.active:
            return
        if threading.get_ident() == self._loop_thread:
            self._sink(self, body)
        else:
            with contextlib.suppress(RuntimeError):  # the loop has closed
                self._loop.call_soon_threadsafe(self._sink, self, body)

    def _done_from_thread(self, outcome: Outcome) -> None:
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._on_done, self, outcome)

    # -- starting ---------------------------------------------------------

    def start(self) -> None:
        if self.spec.runner == "async":
            self._coroutine = self._loop.create_task(self._run_coroutine())
        elif self.spec.runner == "thread":
            _THREADS.submit(self._run_thread)
        else:
            _THREADS.submit(self._run_process)

    async def _run_coroutine(self) -> None:
        try:
            value = await self.spec.function(self.task, **self.params)
            outcome = _result_outcome(value)
        except asyncio.CancelledError:
            outcome = ("cancelled", None)
        except Cancelled:
            outcome = ("cancelled", None)
        except Exception as error:
            outcome = ("error", error_from_exception(error))
        self._on_done(self, outcome)

    def _run_thread(self) -> None:
        outcome: Outcome = _UNREPORTABLE
        try:
            outcome = _result_outcome(self.spec.function(self.task, **self.params))
        except Cancelled:
            outcome = ("cancelled", None)
        except BaseException as error:
            outcome = ("error", error_from_exception(error))
        finally:
            # Reported whatever happened (an exception whose `str` raises
            # included): a run never holds its task and slot unreported.
            self._done_from_thread(outcome)

    def _run_process(self) -> None:
        context = multiprocessing.get_context("spawn")
        function = self.spec.function
        info = {
            "task_id": self.task_id,
            "op": self.spec.name,
            "attempt": self.task.attempt,
            "max_attempts": self.task.max_attempts,
            "deadline": self.task.deadline,
        }
        try:
            parent, child = context.Pipe(duplex=True)
        except Exception as error:  # no pipe (out of descriptors, say)
            self._done_from_thread(("error", error_from_exception(error)))
            return
        try:
            process = context.Process(
                target=child_main,
                args=(function.__module__, function.__qualname__, self.params, info, child),
                name=f"tasktape-{self.spec.name}",
            )
        except Exception as error:
            parent.close()
            child.close()
            self._done_from_thread(("error", error_from_exception(error)))
            return
        outcome: Outcome | None = None
        try:
            with self._process_lock:
                if self.cancel_flag.is_set():
                    self._done_from_thread(("cancelled", None))
                    return
                process.start()
                self._process = process
            child.close()
            while True:
                try:
                    kind, value = parent.recv()
                except (EOFError, OSError):
                    break
                if kind == "event":
                    self._emit(value)
                else:
                    outcome = (kind, value)
            process.join()
        except Exception as error:
            outcome = ("error", error_from_exception(error))
        finally:
            parent.close()
            child.close()  # idempotent; open still when the start failed
        if outcome is None:
            if self.cancel_flag.is_set():
                outcome = ("cancelled", None)
            else:
                code = process.exitcode
                outcome = (
                    "error",
                    {
                        "code": "process_died",
                        "message": f"the op's process ended without an outcome (exit code {code})",
                        "detail": {"exit_code": code},
                        "permanent": False,
                    },
                )
        self._done_from_thread(outcome)

    # -- stopping -----------------------------------------------------------

    def stop(self, reason: str, grace_s: float) -> None:
        """Asks the op to stop (on the loop thread): the cancel flag, plus
        cancelling the coroutine or terminating the child process."""
        if self.reason is None:
            self.reason = reason
        self.cancel_flag.set()
        if self._coroutine is not None and not self._coroutine.done():
            self._coroutine.cancel()
        with self._process_lock:
            process = self._process
        if process is not None and process.is_alive():
            process.terminate()
            self._loop.call_later(grace_s, self._kill_process)

    def _kill_process(self) -> None:
        with self._process_lock:
            process = self._process
        if process is not None and process.is_alive():
            process.kill()

    def kill_now(self) -> None:
        """Kills a child process at once (the worker is exiting)."""
        self.cancel_flag.set()
        self._kill_process()


def _die_with_parent() -> None:
    """On Linux, asks for SIGKILL when the worker process dies."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return


def _resolve(module_name: str, qualname: str) -> Callable[..., Any]:
    target: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        target = getattr(target, part)
    return target  # type: ignore[no-any-return]


def child_main(
    module_name: str,
    qualname: str,
    params: dict[str, Any],
    info: dict[str, Any],
    conn: Connection,
) -> None:
    """A process-isolated run's child: finds the op function by module and
    name, runs it, sends events and then its outcome over `conn`."""
    _die_with_parent()
    cancel_flag = threading.Event()
    send_lock = threading.Lock()

    def send(kind: str, value: Any) -> None:
        with send_lock:
            conn.send((kind, value))

    def on_term(signum: int, frame: object) -> None:
        first = not cancel_flag.is_set()
        cancel_flag.set()
        if first:
            raise Cancelled("the task was cancelled")

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    task = Task(
        task_id=info["task_id"],
        op=info["op"],
        attempt=info["attempt"],
        max_attempts=info["max_attempts"],
        deadline=info["deadline"],
        params=params,
        sink=lambda body: send("event", body),
        cancel_flag=cancel_flag,
    )
    outcome: Outcome
    try:
        function = _resolve(module_name, qualname)
        function = getattr(function, "__tasktape_function__", function)
        if asyncio.iscoroutinefunction(function):
            value = asyncio.run(function(task, **params))
        else:
            value = function(task, **params)
        outcome = _result_outcome(value)
    except Cancelled:
        outcome = ("cancelled", None)
    except BaseException as error:
        outcome = ("error", error_from_exception(error))
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        send(*outcome)
        conn.close()
    except (OSError, ValueError):
        pass
    os._exit(0)
