"""`Client` against a real server (the built-in `echo` op)."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from _proxy import Relay
from conftest import Server, ServerFactory, free_port

import tasktape
from tasktape import Client, TaskHandle, TasktapeError


def test_submit_wait_and_row(client: Client) -> None:
    handle = client.submit("echo", {"count": 3, "delay_ms": 200})
    assert handle.op == "echo"
    assert handle.status == "pending"
    assert handle.links["self"] == f"/v1/tasks/{handle.task_id}"
    row = client.wait(handle.task_id, timeout=30)
    assert row.status == "succeeded"
    assert row.terminal
    assert row.result == {"echoed": 3}
    assert row.error is None
    # Keyed by the server (16 hex characters), not the plain SHA-256.
    assert len(row.params_digest) == 16
    assert row.params_digest != "9fbc57e71c2c80a0"
    assert row.started_at is not None
    assert row.finished_at is not None
    assert row.created_at <= row.started_at <= row.finished_at
    assert row.created_at.tzinfo is not None
    assert row.attempt == 1


def test_events_page_is_the_whole_tape(client: Client) -> None:
    handle = client.submit("echo", {"count": 4})
    client.wait(handle.task_id, timeout=30)
    page = client.events(handle.task_id, 0, limit=1000)
    assert page.task_status == "succeeded"
    assert [event.seq for event in page.events] == list(range(1, 8))
    assert [event.type for event in page.events] == (
        ["task_started"] + ["progress"] * 4 + ["partial", "final"]
    )
    assert page.events[0].op == "echo"
    second = page.events[1]
    assert (second.phase, second.current, second.total, second.detail) == (
        "echo",
        1,
        4,
        {"step": 1},
    )
    assert page.events[5].kind == "echo_done"
    assert page.events[5].payload == {"count": 4}
    final = page.events[-1]
    assert final.is_final
    assert final.status == "succeeded"
    assert final.result == {"echoed": 4}
    assert page.last_seq == 7
    assert page.next_from_seq == 8
    assert not page.has_more
    assert final.to_json()["type"] == "final"
    later = client.events(handle.task_id, 3, limit=2)
    assert [event.seq for event in later.events] == [3, 4]
    assert later.has_more
    assert later.next_from_seq == 5


def test_events_long_poll_waits_for_the_next_event(client: Client) -> None:
    handle = client.submit("echo", {"count": 3, "delay_ms": 300})
    first = client.events(handle.task_id, 0, wait=10)
    assert first.events, "a long-poll from 0 returns once anything is on the tape"
    page = client.events(handle.task_id, first.next_from_seq, wait=10)
    assert page.events
    assert page.events[0].seq == first.next_from_seq
    client.wait(handle.task_id, timeout=30)


def test_follow_yields_every_event_once_in_order(client: Client) -> None:
    handle = client.submit("echo", {"count": 5, "delay_ms": 50})
    events = list(client.follow(handle.task_id))
    assert [event.seq for event in events] == list(range(1, 9))
    assert events[-1].is_final
    assert events[-1].status == "succeeded"
    # A finished tape is followed to its end at once; from_seq starts later.
    again = list(client.follow(handle.task_id, from_seq=6))
    assert [event.seq for event in again] == [6, 7, 8]


def test_follow_resumes_after_dropped_connections(server: Server) -> None:
    relay = Relay(server.url.removeprefix("http://"))
    try:
        with Client(relay.url, timeout=10) as client:
            handle = client.submit("echo", {"count": 30, "delay_ms": 60})
            seen: list[int] = []
            stop = threading.Event()

            def cutter() -> None:
                while not stop.wait(0.4):
                    relay.drop()

            threading.Thread(target=cutter, daemon=True).start()
            try:
                for event in client.follow(handle.task_id, reconnect_for=30):
                    seen.append(event.seq)
            finally:
                stop.set()
        assert seen == list(range(1, 34)), "no event repeated or skipped"
        assert relay.accepted > 2, "the connection was really cut and opened again"
    finally:
        relay.close()


def test_follow_gives_up_after_reconnect_for() -> None:
    with Client(f"http://127.0.0.1:{free_port()}", timeout=2) as client:
        started = time.monotonic()
        with pytest.raises(TasktapeError) as caught:
            list(client.follow(str(uuid.uuid4()), reconnect_for=1.0))
        assert caught.value.code == "connect_error"
        assert caught.value.status is None
        assert time.monotonic() - started < 10


def test_wait_times_out_and_the_task_goes_on(client: Client) -> None:
    handle = client.submit("echo", {"count": 1000, "delay_ms": 10})
    started = time.monotonic()
    with pytest.raises(TasktapeError) as caught:
        client.wait(handle.task_id, timeout=0.5)
    elapsed = time.monotonic() - started
    assert caught.value.code == "wait_timeout"
    assert elapsed < 2.5
    assert client.get(handle.task_id).status == "running"
    client.cancel(handle.task_id)
    assert client.wait(handle.task_id, timeout=30).status == "cancelled"


def test_cancel_is_idempotent(client: Client) -> None:
    handle = client.submit("echo", {"count": 100000, "delay_ms": 1})
    client.events(handle.task_id, 2, wait=10)  # running by now
    answer = client.cancel(handle.task_id)
    assert answer.task_id == handle.task_id
    assert answer.cancelled
    assert not answer.already_terminal
    row = client.wait(handle.task_id, timeout=30)
    assert row.status == "cancelled"
    again = client.cancel(handle.task_id)
    assert not again.cancelled
    assert again.already_terminal
    tail = client.events(handle.task_id, row_last(client, handle.task_id))
    assert tail.events[-1].status == "cancelled"


def row_last(client: Client, task_id: str) -> int:
    return client.events(task_id, 0, limit=1).last_seq


def test_list_pages_through_every_task(server: Server) -> None:
    with Client(server.url) as client:
        op_tasks = [client.submit("echo", {"count": 1, "delay_ms": i}) for i in range(5)]
        for handle in op_tasks:
            client.wait(handle.task_id, timeout=30)
        pages = list(client.list(op="echo", limit=2))
        assert all(len(page) <= 2 for page in pages)
        assert pages[-1].has_more is False
        assert pages[-1].next_cursor is None
        rows = [row for page in pages for row in page]
        ids = [row.task_id for row in rows]
        assert len(ids) == len(set(ids)), "no row twice"
        assert {handle.task_id for handle in op_tasks} <= set(ids)
        created = [row.created_at for row in rows]
        assert created == sorted(created, reverse=True), "newest first"
        assert all(row.result is None for row in rows), "summary rows"
        succeeded = [row for page in client.list(status="succeeded", limit=1000) for row in page]
        assert all(row.status == "succeeded" for row in succeeded)
        assert {handle.task_id for handle in op_tasks} <= {row.task_id for row in succeeded}
        none = list(client.list(status="failed", op="no-such-op"))
        assert len(none) == 1
        assert len(none[0]) == 0
        since = datetime.now(timezone.utc) + timedelta(hours=1)
        assert len(next(iter(client.list(created_after=since)))) == 0


def test_errors_are_the_servers_envelope(client: Client) -> None:
    missing = str(uuid.uuid4())
    with pytest.raises(TasktapeError) as caught:
        client.get(missing)
    error = caught.value
    assert (error.status, error.code) == (404, "not_found")
    assert missing in error.message
    assert error.response is not None
    assert error.response.status_code == 404
    assert "404 not_found" in str(error)

    with pytest.raises(TasktapeError) as caught:
        client.submit("echo", {"count": 1, "delay_ms": 20000})
    assert (caught.value.status, caught.value.code) == (422, "invalid_request")
    assert "delay_ms" in str(caught.value)

    with pytest.raises(TasktapeError) as caught:
        client.submit("no-such-op", {})
    assert (caught.value.status, caught.value.code) == (404, "op_not_found")

    with pytest.raises(TasktapeError) as caught:
        next(iter(client.list(cursor="garbage")))
    assert (caught.value.status, caught.value.code) == (400, "invalid_cursor")

    handle = client.submit("echo", {"count": 50, "delay_ms": 100})
    with pytest.raises(TasktapeError) as caught:
        client.delete(handle.task_id)
    assert (caught.value.status, caught.value.code) == (409, "task_not_terminal")
    client.cancel(handle.task_id)
    client.wait(handle.task_id, timeout=30)
    client.delete(handle.task_id)
    with pytest.raises(TasktapeError) as caught:
        client.get(handle.task_id)
    assert caught.value.status == 404


def test_idempotency_key(client: Client) -> None:
    key = f"py-{uuid.uuid4()}"
    first = client.submit("echo", {"count": 2}, idempotency_key=key)
    second = client.submit("echo", {"count": 2}, idempotency_key=key)
    assert first.task_id == second.task_id
    with pytest.raises(TasktapeError) as caught:
        client.submit("echo", {"count": 3}, idempotency_key=key)
    assert (caught.value.status, caught.value.code) == (409, "idempotency_key_conflict")


def test_run_at_priority_and_retry_are_sent(client: Client) -> None:
    later = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(hours=1)
    handle = client.submit(
        "echo",
        {"count": 1},
        run_at=later,
        priority=7,
        retry={"max_attempts": 3, "backoff": "fixed", "initial_ms": 100, "max_ms": 100},
    )
    row = client.get(handle.task_id)
    assert row.status == "pending"
    assert row.run_at == later
    assert row.priority == 7
    assert row.max_attempts == 3
    assert client.cancel(handle.task_id).cancelled
    assert client.get(handle.task_id).status == "cancelled"
    with pytest.raises(TasktapeError) as caught:
        client.submit("echo", {}, retry={"max_attempts": 0})
    assert caught.value.status == 422


def test_bulk_cancel_and_retry(client: Client) -> None:
    later = datetime.now(timezone.utc) + timedelta(hours=1)
    ids = [client.submit("echo", {"count": 1}, run_at=later).task_id for _ in range(3)]
    cancelled = client.bulk_cancel(ids=ids)
    assert (cancelled.matched, cancelled.acted) == (3, 3)
    assert {client.get(task_id).status for task_id in ids} == {"cancelled"}
    retried = client.bulk_retry(ids=ids, status=["cancelled"])
    assert (retried.matched, retried.acted) == (3, 3)
    retries = [
        row
        for page in client.list(op="echo", limit=1000)
        for row in page
        if row.retry_of in set(ids)
    ]
    assert sorted(row.retry_of or "" for row in retries) == sorted(ids)
    for row in retries:
        assert client.wait(row.task_id, timeout=30).status == "succeeded"
    with pytest.raises(TasktapeError) as caught:
        client.bulk_cancel()
    assert (caught.value.status, caught.value.code) == (422, "invalid_request")


def test_metadata_is_kept_filtered_and_carried_to_retries(client: Client) -> None:
    tenant = uuid.uuid4().hex[:12]
    later = datetime.now(timezone.utc) + timedelta(hours=1)
    mine = [
        client.submit(
            "echo", {"count": 1}, run_at=later, metadata={"tenant": tenant, "n": str(n)}
        ).task_id
        for n in range(3)
    ]
    other = client.submit("echo", {"count": 1}, run_at=later, metadata={"tenant": "x" + tenant})
    assert client.get(mine[0]).metadata == {"tenant": tenant, "n": "0"}
    listed = [row for page in client.list(metadata={"tenant": tenant}) for row in page]
    assert [row.task_id for row in listed] == list(reversed(mine))
    assert all(row.metadata["tenant"] == tenant for row in listed)
    one = [
        row.task_id for page in client.list(metadata={"tenant": tenant, "n": "1"}) for row in page
    ]
    assert one == [mine[1]]
    # Bulk actions filter on it; a retry carries it to the new task.
    cancelled = client.bulk_cancel(metadata={"tenant": tenant})
    assert (cancelled.matched, cancelled.acted) == (3, 3)
    assert client.get(other.task_id).status == "pending"
    retried = client.bulk_retry(metadata={"tenant": tenant, "n": "2"})
    assert (retried.matched, retried.acted) == (1, 1)
    fresh = [
        row
        for page in client.list(metadata={"tenant": tenant})
        for row in page
        if row.retry_of is not None
    ]
    assert [row.retry_of for row in fresh] == [mine[2]]
    assert fresh[0].metadata == {"tenant": tenant, "n": "2"}
    assert client.wait(fresh[0].task_id, timeout=30).status == "succeeded"
    client.cancel(other.task_id)
    # Bad metadata is a 422 naming the key.
    with pytest.raises(TasktapeError) as caught:
        client.submit("echo", {"count": 1}, metadata={"Bad Key": "1"})
    assert (caught.value.status, caught.value.code) == (422, "invalid_request")
    assert "metadata.Bad Key" in str(caught.value)


def test_ops_and_info(client: Client, server: Server) -> None:
    ops = {op.name: op for op in client.ops()}
    echo = ops["echo"]
    assert echo.params_schema["type"] == "object"
    assert "count" in echo.params_schema["properties"]
    assert echo.remote is False
    info = client.info()
    assert info.tasktape_version
    assert info.storage_backend == server.store
    assert info.auth_required is False


def test_token_is_sent_as_bearer(make_server: ServerFactory) -> None:
    server = make_server(args=("--token", "s3cret"))
    with Client(server.url) as anonymous:
        with pytest.raises(TasktapeError) as caught:
            anonymous.ops()
        assert (caught.value.status, caught.value.code) == (401, "unauthorized")
    with Client(server.url, token="s3cret") as client:
        assert client.info().auth_required is True
        handle = client.submit("echo", {"count": 2})
        assert client.wait(handle.task_id, timeout=30).result == {"echoed": 2}
        assert [event.seq for event in client.follow(handle.task_id)] == [1, 2, 3, 4, 5]


def test_unreachable_server_is_a_connect_error() -> None:
    with (
        Client(f"http://127.0.0.1:{free_port()}", timeout=2) as client,
        pytest.raises(TasktapeError) as caught,
    ):
        client.info()
    assert caught.value.code == "connect_error"
    assert caught.value.status is None
    assert caught.value.retryable


def test_public_names_are_documented() -> None:
    for name in tasktape.__all__:
        value = getattr(tasktape, name)
        if name != "__version__":
            assert value.__doc__, f"{name} has a docstring"


def test_submit_many_answers_each_submission_in_order(client: Client) -> None:
    results = client.submit_many(
        [
            {"op": "echo", "params": {"count": 1}},
            {"op": "no_such_op", "params": {}},
            {"op": "echo", "params": {"count": "three"}},
            {"op": "echo", "params": {"count": 2}, "idempotency_key": "many-a"},
            {"op": "echo", "params": {"count": 2}, "idempotency_key": "many-a"},
            {"op": "echo", "params": {"count": 1}, "run_at": datetime.now(timezone.utc)},
        ]
    )
    assert len(results) == 6
    first, unknown, bad, keyed, again, timed = results
    assert isinstance(first, TaskHandle)
    assert isinstance(unknown, TasktapeError)
    assert unknown.code == "op_not_found"
    assert isinstance(bad, TasktapeError)
    assert bad.code == "invalid_request"
    assert bad.detail["field"] == "count"
    assert isinstance(keyed, TaskHandle)
    assert isinstance(again, TaskHandle)
    assert again.task_id == keyed.task_id
    assert isinstance(timed, TaskHandle)
    assert client.wait(first.task_id, timeout=30).status == "succeeded"
    with pytest.raises(TasktapeError) as refused:
        client.submit_many([])
    assert refused.value.status == 422
