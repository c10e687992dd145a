"""`AsyncClient` against a real server: the same calls as `Client`."""

from __future__ import annotations

import asyncio
import threading
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from _proxy import Relay
from conftest import Server

from tasktape import AsyncClient, TasktapeError


async def test_submit_follow_wait(server: Server) -> None:
    async with AsyncClient(server.url, timeout=10) as client:
        handle = await client.submit("echo", {"count": 3, "delay_ms": 50})
        seqs = [event.seq async for event in client.follow(handle.task_id)]
        assert seqs == [1, 2, 3, 4, 5, 6]
        row = await client.wait(handle.task_id, timeout=30)
        assert row.status == "succeeded"
        assert row.result == {"echoed": 3}
        page = await client.events(handle.task_id, 0, limit=1000)
        assert page.events[-1].is_final
        assert (await client.get(handle.task_id)).params_digest == row.params_digest


async def test_follow_resumes_after_dropped_connections(server: Server) -> None:
    relay = Relay(server.url.removeprefix("http://"))
    stop = threading.Event()

    def cutter() -> None:
        while not stop.wait(0.4):
            relay.drop()

    try:
        async with AsyncClient(relay.url, timeout=10) as client:
            handle = await client.submit("echo", {"count": 25, "delay_ms": 60})
            threading.Thread(target=cutter, daemon=True).start()
            seqs = [event.seq async for event in client.follow(handle.task_id, reconnect_for=30)]
        assert seqs == list(range(1, 29))
        assert relay.accepted > 2
    finally:
        stop.set()
        relay.close()


async def test_list_cancel_bulk_and_errors(server: Server) -> None:
    async with AsyncClient(server.url) as client:
        later = datetime.now(timezone.utc) + timedelta(hours=1)
        ids = [(await client.submit("echo", {}, run_at=later)).task_id for _ in range(3)]
        listed = [
            row.task_id async for page in client.list(status="pending", limit=2) for row in page
        ]
        assert set(ids) <= set(listed)
        one = await client.cancel(ids[0])
        assert one.cancelled
        rest = await client.bulk_cancel(ids=ids[1:])
        assert (rest.matched, rest.acted) == (2, 2)
        retried = await client.bulk_retry(ids=ids[:1])
        assert (retried.matched, retried.acted) == (1, 1)
        with pytest.raises(TasktapeError) as caught:
            await client.get(str(uuid.uuid4()))
        assert (caught.value.status, caught.value.code) == (404, "not_found")
        ops = await client.ops()
        assert "echo" in {op.name for op in ops}
        info = await client.info()
        assert info.storage_backend == server.store


async def test_wait_timeout(server: Server) -> None:
    async with AsyncClient(server.url) as client:
        handle = await client.submit("echo", {"count": 1000, "delay_ms": 10})
        with pytest.raises(TasktapeError) as caught:
            await client.wait(handle.task_id, timeout=0.5)
        assert caught.value.code == "wait_timeout"
        await client.cancel(handle.task_id)
        row = await client.wait(handle.task_id, timeout=30)
        assert row.status == "cancelled"


async def test_many_followers_at_once(server: Server) -> None:
    async with AsyncClient(server.url) as client:
        handles = [await client.submit("echo", {"count": 5, "delay_ms": 20}) for _ in range(10)]

        async def follow(task_id: str) -> list[int]:
            return [event.seq async for event in client.follow(task_id)]

        tapes = await asyncio.gather(*(follow(handle.task_id) for handle in handles))
        assert all(tape == list(range(1, 9)) for tape in tapes)


async def test_submit_many(server: Server) -> None:
    async with AsyncClient(server.url, timeout=10) as client:
        results = await client.submit_many(
            [{"op": "echo", "params": {"count": 1}}, {"op": "no_such_op"}]
        )
        handle, refused = results
        assert not isinstance(handle, TasktapeError)
        assert (await client.wait(handle.task_id, timeout=30)).status == "succeeded"
        assert isinstance(refused, TasktapeError)
        assert refused.code == "op_not_found"
