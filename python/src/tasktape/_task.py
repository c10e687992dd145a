"""What an op sees: its `Task` handle, and the exceptions it may raise.

A `Task` turns the op's progress, log and partial calls into tape events and
hands them to a sink (the worker's queue, or the pipe to the worker from a
child process); it never waits for the network. It knows nothing of
sessions, leases or HTTP.
"""

from __future__ import annotations

import json
import threading
import traceback
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any

from ._models import format_time

__all__ = ["Cancelled", "Permanent", "Task", "error_from_exception"]

EventSink = Callable[[dict[str, Any]], None]


class Permanent(Exception):
    """Raise it from an op to fail the task without another attempt.

    The task's error is `{"code": code, "message": message, "detail": detail}`
    marked `permanent: true`, so the op's retry policy does not try again.
    Any other exception fails the attempt (code `op_error`, with the type and
    traceback in `detail`) and may be retried.
    """

    def __init__(self, message: str, *, code: str = "op_error", detail: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.detail = detail


class Cancelled(BaseException):
    """Raised by `Task.raise_if_cancelled()` once the task is asked to stop.

    Like `asyncio.CancelledError` (which an `async def` op gets instead, at
    its next `await`), it derives from `BaseException` so that a broad
    `except Exception:` does not swallow it.
    """


def _qualified(kind: type) -> str:
    module = kind.__module__
    return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"


def error_from_exception(error: BaseException) -> dict[str, Any]:
    """The finish error for an exception an op raised."""
    if isinstance(error, Permanent):
        return {
            "code": error.code,
            "message": error.message,
            "detail": error.detail,
            "permanent": True,
        }
    message = str(error) or type(error).__name__
    return {
        "code": "op_error",
        "message": message,
        "detail": {
            "type": _qualified(type(error)),
            "traceback": "".join(
                traceback.format_exception(type(error), error, error.__traceback__)
            ),
        },
        "permanent": False,
    }


def _now() -> str:
    return format_time(datetime.now(timezone.utc))


def _checked_json(value: Any, what: str) -> Any:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"{what} must be JSON (dicts, lists, str, int, float, bool, None): {error}"
        ) from error
    return value


class Task:
    """The handle an op function gets as its first argument.

    Attributes:
        task_id: the task's id.
        op: the op's name.
        attempt: this attempt's number (1 for the first).
        max_attempts: how many attempts the task may have in all.
        deadline: when the run's time limit ends (UTC), or `None`.
        params: the task's params, as the op's function receives them.

    `progress`, `log` and `partial` queue an event and return at once; the
    worker sends the events in order, in batches. They may be called from any
    thread. After the run ended (or was taken from this worker) they do
    nothing.
    """

    def __init__(
        self,
        *,
        task_id: str,
        op: str,
        attempt: int,
        max_attempts: int,
        deadline: datetime | None,
        params: Mapping[str, Any],
        sink: EventSink,
        cancel_flag: threading.Event | None = None,
    ) -> None:
        self.task_id = task_id
        self.op = op
        self.attempt = attempt
        self.max_attempts = max_attempts
        self.deadline = deadline
        self.params = dict(params)
        self._sink = sink
        self._cancel_flag = cancel_flag if cancel_flag is not None else threading.Event()

    def __repr__(self) -> str:
        return f"Task(task_id={self.task_id!r}, op={self.op!r}, attempt={self.attempt})"

    @property
    def cancelled(self) -> bool:
        """Whether the task was asked to stop (a cancel, its time limit, a lost
        lease, or the worker's drain running out)."""
        return self._cancel_flag.is_set()

    def raise_if_cancelled(self) -> None:
        """Raises `Cancelled` when the task was asked to stop."""
        if self._cancel_flag.is_set():
            raise Cancelled(f"task {self.task_id} was cancelled")

    def progress(
        self,
        phase: str,
        current: int,
        total: int | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        """Reports `current` of `total` (`None`: unknown) in `phase`, with an
        optional JSON object of detail."""
        if not isinstance(phase, str):
            raise TypeError("phase must be a str")
        if isinstance(current, bool) or not isinstance(current, int) or current < 0:
            raise TypeError("current must be an int >= 0")
        if total is not None and (
            isinstance(total, bool) or not isinstance(total, int) or total < 0
        ):
            raise TypeError("total must be an int >= 0 or None")
        body: dict[str, Any] = {
            "type": "progress",
            "phase": phase,
            "current": current,
            "total": total or 0,
            "detail": None if detail is None else _checked_json(dict(detail), "detail"),
            "ts": _now(),
        }
        self._sink(body)

    def log(self, level: str, message: str) -> None:
        """Writes a log line (`level`: e.g. `debug`, `info`, `warn`, `error`)."""
        if not isinstance(level, str) or not isinstance(message, str):
            raise TypeError("level and message must be str")
        self._sink({"type": "log", "level": level, "message": message, "ts": _now()})

    def partial(self, kind: str, payload: Any) -> None:
        """Publishes a partial result: any JSON `payload` labelled `kind`."""
        if not isinstance(kind, str):
            raise TypeError("kind must be a str")
        self._sink(
            {
                "type": "partial",
                "kind": kind,
                "payload": _checked_json(payload, "payload"),
                "ts": _now(),
            }
        )
