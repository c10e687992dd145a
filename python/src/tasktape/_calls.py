"""The API's requests and the follow/wait bookkeeping, without I/O.

`Client` and `AsyncClient` build every request here and differ only in how
they send it, so the two cannot drift apart. `FollowState` is the part of
following a tape that decides what to yield: it never repeats or skips a
seq, and says when to fall back to a page read.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import quote

from ._errors import TasktapeError
from ._models import Event, RetryPolicy, TaskHandle, format_time

__all__ = ["Call", "FollowState", "WaitState", "calls"]

#: How long a stream may stay silent before it counts as dropped (the server
#: sends a heartbeat every 15 s).
STREAM_IDLE_S = 45.0
#: Longest long-poll `wait` the client asks for, in seconds.
LONG_POLL_S = 30


@dataclass(frozen=True)
class Call:
    """One request: method, path (below the base URL), query, JSON body, and
    a read timeout in seconds that overrides the client's (for long-polls)."""

    method: str
    path: str
    params: dict[str, str | int] = field(default_factory=dict)
    json: Any = None
    read_timeout: float | None = None
    what: str = ""

    def describe(self) -> str:
        return self.what or f"{self.method} {self.path}"


def _task_path(task_id: str, tail: str = "") -> str:
    return f"/v1/tasks/{quote(str(task_id), safe='')}{tail}"


def _time(value: datetime | str | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return format_time(value)


def _filter_body(
    ids: Sequence[str] | None,
    status: str | Sequence[str] | None,
    op: str | None,
    created_after: datetime | str | None,
    created_before: datetime | str | None,
    metadata: Mapping[str, str] | None,
) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if ids is not None:
        body["ids"] = [str(task_id) for task_id in ids]
    if status is not None:
        body["status"] = status if isinstance(status, str) else list(status)
    if op is not None:
        body["op"] = op
    if created_after is not None:
        body["created_after"] = _time(created_after)
    if created_before is not None:
        body["created_before"] = _time(created_before)
    if metadata:
        body["metadata"] = dict(metadata)
    return body


class calls:
    """Builders for every route the client uses."""

    @staticmethod
    def submit(
        op: str,
        params: Mapping[str, Any] | None,
        idempotency_key: str | None,
        run_at: datetime | str | None,
        priority: int | None,
        retry: RetryPolicy | Mapping[str, Any] | None,
        metadata: Mapping[str, str] | None = None,
    ) -> Call:
        body: dict[str, Any] = {"op": op, "params": dict(params) if params is not None else {}}
        if idempotency_key is not None:
            body["idempotency_key"] = idempotency_key
        if run_at is not None:
            body["run_at"] = _time(run_at)
        if priority is not None:
            body["priority"] = priority
        if retry is not None:
            body["retry"] = dict(retry)
        if metadata:
            body["metadata"] = dict(metadata)
        return Call("POST", "/v1/tasks", json=body, what=f"submit {op}")

    @staticmethod
    def submit_batch(submissions: Iterable[Mapping[str, Any]]) -> Call:
        tasks: list[dict[str, Any]] = []
        for submission in submissions:
            body = dict(submission)
            if isinstance(body.get("run_at"), datetime):
                body["run_at"] = _time(body["run_at"])
            if isinstance(body.get("retry"), Mapping):
                body["retry"] = dict(body["retry"])
            tasks.append(body)
        return Call("POST", "/v1/tasks/batch", json={"tasks": tasks}, what="submit a batch")

    @staticmethod
    def get(task_id: str) -> Call:
        return Call("GET", _task_path(task_id))

    @staticmethod
    def list_page(
        status: str | None,
        op: str | None,
        created_after: datetime | str | None,
        created_before: datetime | str | None,
        limit: int,
        cursor: str | None,
        metadata: Mapping[str, str] | None = None,
    ) -> Call:
        params: dict[str, str | int] = {"limit": limit}
        for meta_key, meta_value in (metadata or {}).items():
            params[f"meta.{meta_key}"] = meta_value
        for key, value in (
            ("status", status),
            ("op", op),
            ("created_after", _time(created_after)),
            ("created_before", _time(created_before)),
            ("cursor", cursor),
        ):
            if value is not None:
                params[key] = value
        return Call("GET", "/v1/tasks", params=params)

    @staticmethod
    def events(task_id: str, from_seq: int, limit: int, wait: float) -> Call:
        seconds = max(0, min(60, int(wait + 0.999)))
        return Call(
            "GET",
            _task_path(task_id, "/events"),
            params={"from_seq": from_seq, "limit": limit, "wait": seconds},
            read_timeout=seconds + 15.0 if seconds else None,
        )

    @staticmethod
    def cancel(task_id: str) -> Call:
        return Call("POST", _task_path(task_id, "/cancel"), json={})

    @staticmethod
    def delete(task_id: str) -> Call:
        return Call("DELETE", _task_path(task_id))

    @staticmethod
    def bulk(
        action: str,
        ids: Sequence[str] | None,
        status: str | Sequence[str] | None,
        op: str | None,
        created_after: datetime | str | None,
        created_before: datetime | str | None,
        metadata: Mapping[str, str] | None = None,
    ) -> Call:
        body = _filter_body(ids, status, op, created_after, created_before, metadata)
        return Call("POST", f"/v1/tasks/{action}", json=body)

    @staticmethod
    def ops() -> Call:
        return Call("GET", "/v1/ops")

    @staticmethod
    def info() -> Call:
        return Call("GET", "/v1/info")

    @staticmethod
    def stream_path(task_id: str) -> str:
        return _task_path(task_id, "/events/stream")


class FollowState:
    """What a follower has seen: the next seq it wants, whether `final` came,
    and how long connections have been failing.

    Call order: `stream_request()` before each connection; `take()` with
    every event a stream or page brings (it returns the ones to hand out, in
    order, and whether a gap means the stream must be left for a page read);
    `page_done()` after a page read; `failed()` after a retryable failure (it
    returns the pause before the next try, or raises once failures have
    lasted `reconnect_for` seconds); `connected()` after anything worked.
    """

    def __init__(self, task_id: str, from_seq: int, reconnect_for: float) -> None:
        self.task_id = task_id
        self.next_seq = max(1, from_seq)
        self.done = False
        self.reconnect_for = reconnect_for
        self._failing_since: float | None = None
        self._failures = 0

    def stream_request(self) -> tuple[dict[str, str], dict[str, str | int]]:
        """Headers and query for (re)opening the stream at `next_seq`."""
        headers = {"Accept": "text/event-stream"}
        if self.next_seq > 1:
            headers["Last-Event-ID"] = str(self.next_seq - 1)
            return headers, {}
        return headers, {"from_seq": self.next_seq}

    def take(self, events: Sequence[Event]) -> tuple[list[Event], bool]:
        """The events to hand out (each seq once, in order), and whether one
        came past a gap (then read a page to fill it)."""
        fresh: list[Event] = []
        for event in events:
            if self.done or event.seq < self.next_seq:
                continue
            if event.seq > self.next_seq:
                return fresh, True
            fresh.append(event)
            self.next_seq = event.seq + 1
            if event.is_final:
                self.done = True
        return fresh, False

    def page_done(self, task_status: str, got_any: bool) -> None:
        """A page read ended; a terminal task with nothing past `next_seq` is done."""
        from ._models import TERMINAL

        if not got_any and task_status in TERMINAL:
            self.done = True

    def connected(self) -> None:
        self._failing_since = None
        self._failures = 0

    def failed(self, error: TasktapeError) -> float:
        if not error.retryable:
            raise error
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        if now - self._failing_since >= self.reconnect_for:
            raise error
        pause = min(2.0, 0.1 * float(2 ** min(self._failures, 5)))
        self._failures += 1
        return pause * (0.8 + 0.4 * random.random())


class WaitState:
    """`Client.wait`'s bookkeeping: where the next long-poll starts and how
    long it may wait before the caller's deadline."""

    def __init__(self, task_id: str, timeout: float | None) -> None:
        self.task_id = task_id
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.from_seq = 0

    def remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    def next_call(self) -> Call:
        """The next long-poll, or raises `wait_timeout` when time is up."""
        left = self.remaining()
        if left is not None and left <= 0:
            raise self.timed_out()
        wait = float(LONG_POLL_S) if left is None else min(float(LONG_POLL_S), left)
        call = calls.events(self.task_id, self.from_seq, 1000, wait)
        if left is not None and call.read_timeout is not None:
            # Never hold on past the caller's deadline.
            call = Call(call.method, call.path, call.params, None, max(0.05, left + 0.5))
        return call

    def seen(self, last_seq: int) -> None:
        self.from_seq = last_seq + 1

    def timed_out(self) -> TasktapeError:
        return TasktapeError(
            "wait_timeout",
            f"task {self.task_id} did not end in time; it goes on",
            detail={"task_id": self.task_id},
        )


def decode_json(text: str) -> Any:
    return json.loads(text)


def batch_results(body: Any) -> list[TaskHandle | TasktapeError]:
    """`POST /v1/tasks/batch`'s answer: a handle, or that submission's error."""
    results: list[TaskHandle | TasktapeError] = []
    for result in body["results"]:
        if not isinstance(result, dict):
            raise TypeError(f"a result is not an object: {result!r}")
        error = result.get("error")
        if error is None:
            results.append(TaskHandle.from_json(result))
        else:
            results.append(
                TasktapeError(error["code"], error["message"], detail=error.get("detail"))
            )
    return results
