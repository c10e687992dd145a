"""`Client`: every task route of the HTTP API, typed (and the helpers
`AsyncClient` shares with it).

`Client` and `AsyncClient` take the same arguments and have the same
methods (the async ones are coroutines or async iterators). Requests are
built in `_calls`; these modules only send them, turn answers into
dataclasses and non-2xx answers into `TasktapeError`. No module-level
state: each client owns its connection pool (close it, or use the client
as a context manager).
"""

from __future__ import annotations

import builtins
import json
import ssl
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

import httpx

from ._calls import STREAM_IDLE_S, Call, FollowState, WaitState, batch_results, calls
from ._errors import TasktapeError
from ._models import (
    BulkResult,
    CancelResult,
    Event,
    EventsPage,
    OpInfo,
    RetryPolicy,
    ServerInfo,
    TaskHandle,
    TaskPage,
    TaskRow,
)
from ._sse import SseDecoder
from ._version import USER_AGENT

__all__ = ["DEFAULT_URL", "Client"]

DEFAULT_URL = "http://127.0.0.1:8765"

T = TypeVar("T")


def _settings(
    url: str, token: str | None, timeout: float, verify: bool | str | ssl.SSLContext
) -> dict[str, Any]:
    headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if isinstance(verify, str):
        verify = ssl.create_default_context(cafile=verify)
    return {
        "base_url": url.rstrip("/"),
        "headers": headers,
        "timeout": httpx.Timeout(timeout, connect=min(timeout, 10.0)),
        "verify": verify,
        "follow_redirects": False,
    }


def _timeout(client_timeout: httpx.Timeout, read: float | None) -> httpx.Timeout:
    if read is None:
        return client_timeout
    return httpx.Timeout(
        connect=client_timeout.connect,
        read=read,
        write=client_timeout.write,
        pool=client_timeout.pool,
    )


def _body(response: httpx.Response, call: Call) -> Any:
    if response.status_code >= 300:
        raise TasktapeError.from_response(response)
    if response.status_code == 204 or not response.content:
        return None
    try:
        return response.json()
    except ValueError as error:
        raise TasktapeError.invalid_response(response, f"not JSON ({error})") from error


def _parse(response: httpx.Response, build: Callable[[Any], T], body: Any) -> T:
    try:
        return build(body)
    except (KeyError, TypeError, ValueError) as error:
        raise TasktapeError.invalid_response(
            response, f"unexpected body ({type(error).__name__}: {error})"
        ) from error


def _ops(body: Any) -> builtins.list[OpInfo]:
    return [OpInfo.from_json(op) for op in body["ops"]]


def _cancelled(body: Any) -> BulkResult:
    return BulkResult.from_json(body, "cancelled")


def _retried(body: Any) -> BulkResult:
    return BulkResult.from_json(body, "retried")


def _event(text: str) -> Event:
    return Event.from_json(json.loads(text))


class Client:
    """A synchronous client for a tasktape server.

    Args:
        url: the server's base URL (default `http://127.0.0.1:8765`).
        token: a bearer token, sent as `Authorization: Bearer …` when given.
        timeout: seconds any one network step may take (connect, read, write);
            long-polls and streams get their own, longer, read limits.
        verify: TLS verification: `True` (system roots), `False`, a CA file
            path, or an `ssl.SSLContext`.

    Every method raises `TasktapeError` when the call fails.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        verify: bool | str | ssl.SSLContext = True,
    ) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(**_settings(url, token, timeout, verify))

    def close(self) -> None:
        """Closes the connection pool."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, call: Call) -> tuple[httpx.Response, Any]:
        try:
            response = self._http.request(
                call.method,
                call.path,
                params=call.params or None,
                json=call.json,
                timeout=_timeout(self._http.timeout, call.read_timeout),
            )
        except httpx.TransportError as error:
            raise TasktapeError.from_transport(error, call.describe()) from error
        return response, _body(response, call)

    def submit(
        self,
        op: str,
        params: Mapping[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
        run_at: datetime | str | None = None,
        priority: int | None = None,
        retry: RetryPolicy | Mapping[str, Any] | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> TaskHandle:
        """Submits a task of `op` with `params`; answers its handle at once.

        The same `idempotency_key` with the same params answers the original
        task (no new one); with other params it is a 409
        `idempotency_key_conflict`. `run_at` delays it, `priority` (higher
        first) orders claims, `retry` overrides the op's retry policy.
        `metadata` (string keys `[a-z0-9_.-]` to string values, at most 32)
        is shown on the task's rows and matched by `list(metadata=...)` and
        the bulk actions.
        """
        call = calls.submit(op, params, idempotency_key, run_at, priority, retry, metadata)
        response, body = self._send(call)
        return _parse(response, TaskHandle.from_json, body)

    def submit_many(
        self, submissions: Iterable[Mapping[str, Any]]
    ) -> builtins.list[TaskHandle | TasktapeError]:
        """Submits up to 10,000 tasks in one request (`POST /v1/tasks/batch`).

        Each submission is a mapping as `POST /v1/tasks` takes one (`op`,
        `params`, and optionally `idempotency_key`, `run_at`, `priority`,
        `retry`). Answers one entry per submission, in order: its task's
        handle, or the `TasktapeError` that submission alone got (an unknown
        op, bad params, a key used with other params). A key given twice
        gives the first one's task to both. None, or more than 10,000, raises
        a 422 `TasktapeError` and nothing is written.
        """
        call = calls.submit_batch(submissions)
        response, body = self._send(call)
        return _parse(response, batch_results, body)

    def get(self, task_id: str) -> TaskRow:
        """The task's row (with `result`, `error`, `params`)."""
        response, body = self._send(calls.get(task_id))
        return _parse(response, TaskRow.from_json, body)

    def list(
        self,
        *,
        status: str | None = None,
        op: str | None = None,
        created_after: datetime | str | None = None,
        created_before: datetime | str | None = None,
        limit: int = 100,
        cursor: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> Iterator[TaskPage]:
        """Pages of summary rows, newest first, `limit` (1–1000) a page,
        following the cursor until the last page. Requests go out as the
        iterator is read. `metadata` keeps only tasks whose metadata holds
        every one of its keys with that value."""
        while True:
            call = calls.list_page(
                status, op, created_after, created_before, limit, cursor, metadata
            )
            response, body = self._send(call)
            page = _parse(response, TaskPage.from_json, body)
            yield page
            if not page.has_more or not page.next_cursor:
                return
            cursor = page.next_cursor

    def events(
        self, task_id: str, from_seq: int = 0, *, limit: int = 100, wait: float = 0
    ) -> EventsPage:
        """One page of the tape from `from_seq`; with `wait` (seconds, at most
        60) an empty page of a live task is held until an event lands."""
        response, body = self._send(calls.events(task_id, from_seq, limit, wait))
        return _parse(response, EventsPage.from_json, body)

    def follow(
        self, task_id: str, from_seq: int = 0, *, reconnect_for: float = 60.0
    ) -> Iterator[Event]:
        """The tape's events from `from_seq` as they happen, over Server-Sent
        Events, ending after `final`.

        A dropped connection is opened again with `Last-Event-ID` (and gaps
        are filled from the events pages), so every event comes exactly once
        and in order; failures are retried with backoff for `reconnect_for`
        seconds in a row before `TasktapeError` is raised.
        """
        state = FollowState(task_id, from_seq, reconnect_for)
        while not state.done:
            try:
                gap = yield from self._read_stream(state)
                if not state.done:
                    page_any = yield from self._read_page(state)
                    if not gap and not page_any and not state.done:
                        raise TasktapeError(
                            "transport_error", f"the event stream of {task_id} closed early"
                        )
                state.connected()
            except TasktapeError as error:
                time.sleep(state.failed(error))

    def _read_stream(self, state: FollowState) -> Generator[Event, None, bool]:
        headers, params = state.stream_request()
        path = calls.stream_path(state.task_id)
        timeout = _timeout(self._http.timeout, STREAM_IDLE_S)
        try:
            with self._http.stream(
                "GET", path, headers=headers, params=params or None, timeout=timeout
            ) as response:
                if response.status_code != 200:
                    response.read()
                    raise TasktapeError.from_response(response)
                state.connected()
                decoder = SseDecoder()
                for line in response.iter_lines():
                    message = decoder.feed(line)
                    if message is None or message.event == "heartbeat":
                        continue
                    event = _parse(response, _event, message.data)
                    fresh, gap = state.take([event])
                    yield from fresh
                    if gap:
                        return True
                    if state.done:
                        return False
        except httpx.TransportError as error:
            raise TasktapeError.from_transport(error, f"GET {path}") from error
        return False

    def _read_page(self, state: FollowState) -> Generator[Event, None, bool]:
        got_any = False
        while not state.done:
            page = self.events(state.task_id, state.next_seq, limit=1000)
            fresh, _ = state.take(page.events)
            got_any = got_any or bool(fresh)
            yield from fresh
            if not page.has_more or not fresh:
                state.page_done(page.task_status, bool(fresh))
                break
        return got_any

    def wait(self, task_id: str, timeout: float | None = None) -> TaskRow:
        """Waits (long-polling the tape) until the task ends and answers its
        row; raises `TasktapeError` `wait_timeout` after `timeout` seconds."""
        state = WaitState(task_id, timeout)
        first = self.events(task_id, 0, limit=1)
        state.seen(first.last_seq)
        status = first.task_status
        while status not in ("succeeded", "failed", "cancelled"):
            call = state.next_call()
            try:
                response, body = self._send(call)
            except TasktapeError as error:
                left = state.remaining()
                if error.code == "timeout" and left is not None and left <= 0:
                    raise state.timed_out() from error
                raise
            page = _parse(response, EventsPage.from_json, body)
            state.seen(page.last_seq)
            status = page.task_status
        return self.get(task_id)

    def cancel(self, task_id: str) -> CancelResult:
        """Asks the task to stop (idempotent): a pending one ends `cancelled`
        at once, a running one when its op stops."""
        response, body = self._send(calls.cancel(task_id))
        return _parse(response, CancelResult.from_json, body)

    def delete(self, task_id: str) -> None:
        """Deletes a finished task and its tape (409 `task_not_terminal` while it runs)."""
        self._send(calls.delete(task_id))

    def bulk_cancel(
        self,
        *,
        ids: Sequence[str] | None = None,
        status: str | Sequence[str] | None = None,
        op: str | None = None,
        created_after: datetime | str | None = None,
        created_before: datetime | str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> BulkResult:
        """Cancels every task matching all the given filters (at least one)."""
        call = calls.bulk("cancel", ids, status, op, created_after, created_before, metadata)
        response, body = self._send(call)
        return _parse(response, _cancelled, body)

    def bulk_retry(
        self,
        *,
        ids: Sequence[str] | None = None,
        status: str | Sequence[str] | None = None,
        op: str | None = None,
        created_after: datetime | str | None = None,
        created_before: datetime | str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> BulkResult:
        """Submits a new task (linked by `retry_of`) for every finished task
        matching all the given filters (at least one)."""
        call = calls.bulk("retry", ids, status, op, created_after, created_before, metadata)
        response, body = self._send(call)
        return _parse(response, _retried, body)

    def ops(self) -> builtins.list[OpInfo]:
        """The ops the server runs, with their params' JSON Schemas."""
        response, body = self._send(calls.ops())
        return _parse(response, _ops, body)

    def info(self) -> ServerInfo:
        """The server's version, storage backend and whether it needs a token."""
        response, body = self._send(calls.info())
        return _parse(response, ServerInfo.from_json, body)
