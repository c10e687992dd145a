"""`AsyncClient`: the asyncio twin of `Client` (see `_client`)."""

from __future__ import annotations

import asyncio
import builtins
import ssl
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import httpx

from ._calls import STREAM_IDLE_S, Call, FollowState, WaitState, batch_results, calls
from ._client import (
    DEFAULT_URL,
    _body,
    _cancelled,
    _event,
    _ops,
    _parse,
    _retried,
    _settings,
    _timeout,
)
from ._compat import quiet_missing_sniffio
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

quiet_missing_sniffio()

__all__ = ["AsyncClient"]


class AsyncClient:
    """The asyncio twin of `Client`: the same arguments and methods, as
    coroutines (`list` and `follow` are async iterators)."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        verify: bool | str | ssl.SSLContext = True,
    ) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.AsyncClient(**_settings(url, token, timeout, verify))

    async def aclose(self) -> None:
        """Closes the connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _send(self, call: Call) -> tuple[httpx.Response, Any]:
        try:
            response = await self._http.request(
                call.method,
                call.path,
                params=call.params or None,
                json=call.json,
                timeout=_timeout(self._http.timeout, call.read_timeout),
            )
        except httpx.TransportError as error:
            raise TasktapeError.from_transport(error, call.describe()) from error
        return response, _body(response, call)

    async def submit(
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
        """See `Client.submit`."""
        call = calls.submit(op, params, idempotency_key, run_at, priority, retry, metadata)
        response, body = await self._send(call)
        return _parse(response, TaskHandle.from_json, body)

    async def submit_many(
        self, submissions: Iterable[Mapping[str, Any]]
    ) -> builtins.list[TaskHandle | TasktapeError]:
        """See `Client.submit_many`."""
        call = calls.submit_batch(submissions)
        response, body = await self._send(call)
        return _parse(response, batch_results, body)

    async def get(self, task_id: str) -> TaskRow:
        """See `Client.get`."""
        response, body = await self._send(calls.get(task_id))
        return _parse(response, TaskRow.from_json, body)

    async def list(
        self,
        *,
        status: str | None = None,
        op: str | None = None,
        created_after: datetime | str | None = None,
        created_before: datetime | str | None = None,
        limit: int = 100,
        cursor: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> AsyncIterator[TaskPage]:
        """See `Client.list`."""
        while True:
            call = calls.list_page(
                status, op, created_after, created_before, limit, cursor, metadata
            )
            response, body = await self._send(call)
            page = _parse(response, TaskPage.from_json, body)
            yield page
            if not page.has_more or not page.next_cursor:
                return
            cursor = page.next_cursor

    async def events(
        self, task_id: str, from_seq: int = 0, *, limit: int = 100, wait: float = 0
    ) -> EventsPage:
        """See `Client.events`."""
        response, body = await self._send(calls.events(task_id, from_seq, limit, wait))
        return _parse(response, EventsPage.from_json, body)

    async def follow(
        self, task_id: str, from_seq: int = 0, *, reconnect_for: float = 60.0
    ) -> AsyncIterator[Event]:
        """See `Client.follow`."""
        state = FollowState(task_id, from_seq, reconnect_for)
        while not state.done:
            try:
                gap = False
                async for item in self._read_stream(state):
                    if item is None:
                        gap = True
                    else:
                        yield item
                got_any = False
                while not state.done:
                    page = await self.events(state.task_id, state.next_seq, limit=1000)
                    fresh, _ = state.take(page.events)
                    got_any = got_any or bool(fresh)
                    for event in fresh:
                        yield event
                    if not page.has_more or not fresh:
                        state.page_done(page.task_status, bool(fresh))
                        break
                if not gap and not got_any and not state.done:
                    raise TasktapeError(
                        "transport_error", f"the event stream of {task_id} closed early"
                    )
                state.connected()
            except TasktapeError as error:
                await asyncio.sleep(state.failed(error))

    async def _read_stream(self, state: FollowState) -> AsyncIterator[Event | None]:
        """The stream's fresh events; `None` last when a gap needs a page read."""
        headers, params = state.stream_request()
        path = calls.stream_path(state.task_id)
        timeout = _timeout(self._http.timeout, STREAM_IDLE_S)
        try:
            async with self._http.stream(
                "GET", path, headers=headers, params=params or None, timeout=timeout
            ) as response:
                if response.status_code != 200:
                    await response.aread()
                    raise TasktapeError.from_response(response)
                state.connected()
                decoder = SseDecoder()
                async for line in response.aiter_lines():
                    message = decoder.feed(line)
                    if message is None or message.event == "heartbeat":
                        continue
                    event = _parse(response, _event, message.data)
                    fresh, gap = state.take([event])
                    for item in fresh:
                        yield item
                    if gap:
                        yield None
                        return
                    if state.done:
                        return
        except httpx.TransportError as error:
            raise TasktapeError.from_transport(error, f"GET {path}") from error

    async def wait(self, task_id: str, timeout: float | None = None) -> TaskRow:
        """See `Client.wait`."""
        state = WaitState(task_id, timeout)
        first = await self.events(task_id, 0, limit=1)
        state.seen(first.last_seq)
        status = first.task_status
        while status not in ("succeeded", "failed", "cancelled"):
            call = state.next_call()
            try:
                response, body = await self._send(call)
            except TasktapeError as error:
                left = state.remaining()
                if error.code == "timeout" and left is not None and left <= 0:
                    raise state.timed_out() from error
                raise
            page = _parse(response, EventsPage.from_json, body)
            state.seen(page.last_seq)
            status = page.task_status
        return await self.get(task_id)

    async def cancel(self, task_id: str) -> CancelResult:
        """See `Client.cancel`."""
        response, body = await self._send(calls.cancel(task_id))
        return _parse(response, CancelResult.from_json, body)

    async def delete(self, task_id: str) -> None:
        """See `Client.delete`."""
        await self._send(calls.delete(task_id))

    async def bulk_cancel(
        self,
        *,
        ids: Sequence[str] | None = None,
        status: str | Sequence[str] | None = None,
        op: str | None = None,
        created_after: datetime | str | None = None,
        created_before: datetime | str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> BulkResult:
        """See `Client.bulk_cancel`."""
        call = calls.bulk("cancel", ids, status, op, created_after, created_before, metadata)
        response, body = await self._send(call)
        return _parse(response, _cancelled, body)

    async def bulk_retry(
        self,
        *,
        ids: Sequence[str] | None = None,
        status: str | Sequence[str] | None = None,
        op: str | None = None,
        created_after: datetime | str | None = None,
        created_before: datetime | str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> BulkResult:
        """See `Client.bulk_retry`."""
        call = calls.bulk("retry", ids, status, op, created_after, created_before, metadata)
        response, body = await self._send(call)
        return _parse(response, _retried, body)

    async def ops(self) -> builtins.list[OpInfo]:
        """See `Client.ops`."""
        response, body = await self._send(calls.ops())
        return _parse(response, _ops, body)

    async def info(self) -> ServerInfo:
        """See `Client.info`."""
        response, body = await self._send(calls.info())
        return _parse(response, ServerInfo.from_json, body)
