"""`Worker` against a real server: ops of every kind, cancels, failures,
retries, time limits, concurrency, drain, and losing the server."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from _proxy import Relay
from conftest import SHORT_LEASE, Server, ServerFactory, WorkerFactory, eventually, free_port

from tasktape import AsyncClient, Client, Permanent, Task, TasktapeError, Worker


def tape(client: Client, task_id: str) -> list[dict[str, Any]]:
    return [event.to_json() for event in client.events(task_id, 0, limit=1000).events]


def wait_status(client: Client, task_id: str, status: str, timeout: float = 10.0) -> None:
    eventually(lambda: client.get(task_id).status == status, timeout, f"task {task_id} {status}")


def grace(worker: Worker) -> float:
    registration = worker.registration
    assert registration is not None
    return float(registration["cancel_grace_ms"]) / 1000


# Module-level ops, so that process isolation can find them in the child.


def resize(task: Task, src: str, width: int = 800) -> dict[str, Any]:
    """Resize the images in a folder."""
    files = ["a.png", "b.png", "c.png"]
    for i, name in enumerate(files, 1):
        task.raise_if_cancelled()
        task.progress("resize", i, len(files), detail={"file": name})
    task.log("info", f"resized to {width}")
    task.partial("summary", {"files": len(files), "src": src})
    return {"resized": len(files), "width": width}


def sleep_forever(task: Task, marker: str = "") -> None:
    task.partial("pid", {"pid": os.getpid()})
    time.sleep(3600)


def count_in_child(task: Task, n: int) -> dict[str, int]:
    for i in range(1, n + 1):
        task.progress("count", i, n)
    return {"counted": n, "pid": os.getpid()}


def test_thread_op_end_to_end(workers: WorkerFactory, worker_server: Server) -> None:
    worker = workers(concurrency=4)
    worker.op("resize", max_attempts=3)(resize)
    with Client(worker_server.url) as client:
        worker.start()
        handle = client.submit("resize", {"src": "/photos"})
        row = client.wait(handle.task_id, timeout=20)
        assert row.status == "succeeded", row
        assert row.result == {"resized": 3, "width": 800}
        assert row.max_attempts == 3
        events = tape(client, handle.task_id)
        assert [event["type"] for event in events] == [
            "task_started",
            "progress",
            "progress",
            "progress",
            "log",
            "partial",
            "final",
        ]
        assert events[1]["detail"] == {"file": "a.png"}
        assert (events[3]["current"], events[3]["total"]) == (3, 3)
        assert events[4]["message"] == "resized to 800"
        assert events[5]["payload"] == {"files": 3, "src": "/photos"}
        times = [event["ts"] for event in events]
        assert times == sorted(times), "a tape's times never go back"
        ops = {op.name: op for op in client.ops()}
        assert ops["resize"].remote is True
        assert ops["resize"].description == "Resize the images in a folder."
        assert ops["resize"].params_schema["required"] == ["src"]
        assert ops["resize"].raw["workers"] == 1
        with pytest.raises(TasktapeError) as caught:
            client.submit("resize", {"src": 5})
        assert (caught.value.status, caught.value.code) == (422, "invalid_request")
        with pytest.raises(TasktapeError) as caught:
            client.submit("resize", {"src": "/x", "bogus": 1})
        assert caught.value.status == 422
        listed = httpx.get(f"{worker_server.url}/v1/workers").json()["workers"]
        mine = [entry for entry in listed if entry["worker_id"] == worker.id]
        assert mine
        assert mine[0]["state"] == "live"
        assert mine[0]["ops"] == ["resize"]
        assert mine[0]["capacity"] == 4


def test_async_op_and_many_tasks(workers: WorkerFactory, worker_server: Server) -> None:
    worker = workers(concurrency=8)

    @worker.op("double")
    async def double(task: Task, x: int) -> dict[str, int]:
        await asyncio.sleep(0.05)
        task.progress("double", 1, 1)
        return {"y": 2 * x}

    with Client(worker_server.url) as client:
        worker.start()
        handles = [client.submit("double", {"x": i}) for i in range(30)]
        for i, handle in enumerate(handles):
            row = client.wait(handle.task_id, timeout=30)
            assert row.result == {"y": 2 * i}


def test_process_op_runs_in_a_child(workers: WorkerFactory, worker_server: Server) -> None:
    worker = workers()
    worker.op("count_in_child", isolation="process")(count_in_child)
    with Client(worker_server.url) as client:
        worker.start()
        handle = client.submit("count_in_child", {"n": 4})
        row = client.wait(handle.task_id, timeout=60)
        assert row.status == "succeeded", row
        assert row.result["counted"] == 4
        assert row.result["pid"] != os.getpid()
        progress = [event for event in tape(client, handle.task_id) if event["type"] == "progress"]
        assert [event["current"] for event in progress] == [1, 2, 3, 4]


def test_an_exception_fails_the_attempt_with_its_traceback(
    workers: WorkerFactory, worker_server: Server
) -> None:
    worker = workers()

    @worker.op("broken")
    def broken(task: Task) -> None:
        raise ValueError("the disk is made of cheese")

    with Client(worker_server.url) as client:
        worker.start()
        row = client.wait(client.submit("broken", {}).task_id, timeout=20)
        assert row.status == "failed"
        assert row.error is not None
        assert row.error["code"] == "op_error"
        assert row.error["message"] == "the disk is made of cheese"
        assert row.error["detail"]["type"] == "ValueError"
        assert "the disk is made of cheese" in row.error["detail"]["traceback"]
        assert "def broken" in row.error["detail"]["traceback"] or "broken" in str(row.error)


def test_retries_count_every_attempt_and_permanent_stops_them(
    workers: WorkerFactory, worker_server: Server
) -> None:
    worker = workers()
    attempts: list[int] = []
    fast = {"max_attempts": 3, "backoff": "fixed", "initial_ms": 50, "max_ms": 50, "jitter": False}

    @worker.op("flaky", retry=fast)
    def flaky(task: Task) -> dict[str, int]:
        attempts.append(task.attempt)
        if task.attempt < 3:
            raise RuntimeError(f"attempt {task.attempt} failed")
        return {"attempt": task.attempt}

    @worker.op("refuse", retry=fast)
    def refuse(task: Task) -> None:
        raise Permanent("bad input", code="bad_input", detail={"field": "src"})

    with Client(worker_server.url) as client:
        worker.start()
        row = client.wait(client.submit("flaky", {}).task_id, timeout=30)
        assert row.status == "succeeded"
        assert row.result == {"attempt": 3}
        assert row.attempt == 3
        assert attempts == [1, 2, 3]
        failed_parts = [
            event
            for event in tape(client, row.task_id)
            if event.get("kind") == "tasktape.attempt_failed"
        ]
        assert [part["payload"]["attempt"] for part in failed_parts] == [1, 2]

        refused = client.wait(client.submit("refuse", {}).task_id, timeout=30)
        assert refused.status == "failed"
        assert refused.attempt == 1
        assert refused.error is not None
        assert refused.error["code"] == "bad_input"
        assert refused.error["message"] == "bad input"
        assert refused.error.get("permanent") is True


def test_cancel_reaches_a_thread_op_at_once(workers: WorkerFactory, worker_server: Server) -> None:
    worker = workers()
    started = threading.Event()
    noticed: list[float] = []

    @worker.op("spin")
    def spin(task: Task) -> None:
        started.set()
        while not task.cancelled:
            time.sleep(0.005)
        noticed.append(time.monotonic())
        task.raise_if_cancelled()

    with Client(worker_server.url) as client:
        worker.start()
        assert worker.wait_signals_connected()
        handle = client.submit("spin", {})
        assert started.wait(10)
        sent = time.monotonic()
        assert client.cancel(handle.task_id).cancelled
        row = client.wait(handle.task_id, timeout=10)
        ended = time.monotonic()
        assert row.status == "cancelled"
        assert noticed
        assert noticed[0] - sent < 0.5, "the cancel reached the thread within 0.5 s"
        assert ended - sent < 1.5, "and the task ended within 1.5 s"


def test_cancel_cancels_an_async_op_at_its_next_await(
    workers: WorkerFactory, worker_server: Server
) -> None:
    worker = workers()
    started = threading.Event()
    cleaned: list[float] = []

    @worker.op("nap")
    async def nap(task: Task) -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        finally:
            cleaned.append(time.monotonic())

    with Client(worker_server.url) as client:
        worker.start()
        assert worker.wait_signals_connected()
        handle = client.submit("nap", {})
        assert started.wait(10)
        sent = time.monotonic()
        client.cancel(handle.task_id)
        row = client.wait(handle.task_id, timeout=10)
        assert row.status == "cancelled"
        assert cleaned
        assert cleaned[0] - sent < 0.5


def test_a_thread_op_that_ignores_a_cancel_ends_cancelled_after_the_grace(
    workers: WorkerFactory, worker_server: Server
) -> None:
    worker = workers()
    release = threading.Event()
    returned = threading.Event()

    @worker.op("stubborn")
    def stubborn(task: Task) -> dict[str, str]:
        task.progress("wait", 0)
        release.wait(30)
        task.progress("late", 1)
        returned.set()
        return {"late": "result"}

    with Client(worker_server.url) as client:
        worker.start()
        assert worker.wait_signals_connected()
        handle = client.submit("stubborn", {})
        client.events(handle.task_id, 2, wait=10)
        sent = time.monotonic()
        client.cancel(handle.task_id)
        row = client.wait(handle.task_id, timeout=10)
        assert row.status == "cancelled"
        assert time.monotonic() - sent < grace(worker) + 2.0
        before = tape(client, handle.task_id)
        release.set()
        assert returned.wait(10)
        time.sleep(0.5)
        after = tape(client, handle.task_id)
        assert after == before, "nothing written after final"
        assert after[-1]["type"] == "final"


def test_process_isolation_terminates_a_sleeping_function(
    workers: WorkerFactory, worker_server: Server
) -> None:
    worker = workers()
    worker.op("sleep_forever", isolation="process")(sleep_forever)
    with Client(worker_server.url) as client:
        worker.start()
        assert worker.wait_signals_connected()
        handle = client.submit("sleep_forever", {})
        page = client.events(handle.task_id, 2, wait=30)
        pids = [event.payload["pid"] for event in page.events if event.kind == "pid"]
        assert pids, page
        pid = pids[0]
        assert pid != os.getpid()
        sent = time.monotonic()
        client.cancel(handle.task_id)
        row = client.wait(handle.task_id, timeout=15)
        assert row.status == "cancelled"
        assert time.monotonic() - sent < grace(worker) + 2.0

        def gone() -> bool:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            return False

        eventually(gone, 10, "the child process is gone")


def test_time_limit_fails_the_run_with_timeout(
    workers: WorkerFactory, worker_server: Server
) -> None:
    worker = workers()

    @worker.op("slow", timeout=0.5)
    def slow(task: Task) -> None:
        while not task.cancelled:
            time.sleep(0.01)
        task.raise_if_cancelled()

    with Client(worker_server.url) as client:
        worker.start()
        started = time.monotonic()
        row = client.wait(client.submit("slow", {}).task_id, timeout=15)
        assert row.status == "failed"
        assert row.error is not None
        assert row.error["code"] == "timeout"
        assert time.monotonic() - started < 5


class Overlap:
    """Counts how many runs overlap, and on which workers they ran."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.most = 0
        self.by_worker: dict[str, int] = {}

    def enter(self, worker_id: str) -> None:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
            self.by_worker[worker_id] = self.by_worker.get(worker_id, 0) + 1

    def leave(self) -> None:
        with self.lock:
            self.now -= 1

    def op(self, worker_name: str, seconds: float) -> Callable[[Task], None]:
        """An op that takes `seconds` and counts itself (the same params
        schema on every worker, so the declarations agree)."""

        def run(task: Task) -> None:
            self.enter(worker_name)
            time.sleep(seconds)
            self.leave()

        return run


def test_two_workers_share_an_ops_global_limit(make_server: ServerFactory) -> None:
    server = make_server(SHORT_LEASE + "\n[concurrency]\nshared = 2\n")
    overlap = Overlap()
    made = []
    for name in ("one", "two"):
        worker = Worker(server.url, id=f"pytest-share-{name}", concurrency=4, drain_timeout=5)
        worker.op("shared")(overlap.op(name, 0.4))
        made.append(worker)
    try:
        for worker in made:
            worker.start()
        with Client(server.url) as client:
            handles = [client.submit("shared", {}) for _ in range(8)]
            for handle in handles:
                assert client.wait(handle.task_id, timeout=30).status == "succeeded"
        assert overlap.most == 2, "the op's global limit holds across workers"
        assert set(overlap.by_worker) == {"one", "two"}, overlap.by_worker
    finally:
        for worker in made:
            worker.stop(timeout=20)


def test_an_ops_own_concurrency_caps_each_worker(
    workers: WorkerFactory, worker_server: Server
) -> None:
    overlap = Overlap()
    made = []
    for name in ("a", "b"):
        worker = workers(concurrency=8)
        worker.op("capped", concurrency=1)(overlap.op(name, 0.3))
        made.append(worker)
    for worker in made:
        worker.start()
    with Client(worker_server.url) as client:
        handles = [client.submit("capped", {}) for _ in range(6)]
        for handle in handles:
            assert client.wait(handle.task_id, timeout=30).status == "succeeded"
    assert overlap.most == 2, "one at a time on each of two workers"


def test_drain_lets_running_ops_finish(workers: WorkerFactory, worker_server: Server) -> None:
    worker = workers(drain_timeout=10)
    started = threading.Event()

    @worker.op("steady")
    def steady(task: Task) -> dict[str, bool]:
        started.set()
        time.sleep(1.0)
        return {"done": True}

    with Client(worker_server.url) as client:
        worker.start()
        running = client.submit("steady", {})
        assert started.wait(10)
        stopping = time.monotonic()
        worker.stop(timeout=20)
        assert time.monotonic() - stopping < 8
        row = client.get(running.task_id)
        assert row.status == "succeeded"
        assert row.result == {"done": True}
        later = client.submit("steady", {})
        time.sleep(0.5)
        assert client.get(later.task_id).status == "pending", "no worker: it waits"
        listed = httpx.get(f"{worker_server.url}/v1/workers").json()["workers"]
        assert all(entry["state"] != "live" for entry in listed if entry["worker_id"] == worker.id)


def test_drain_timeout_stops_what_still_runs(workers: WorkerFactory, worker_server: Server) -> None:
    worker = workers(drain_timeout=0.5)
    started = threading.Event()

    @worker.op("endless")
    def endless(task: Task) -> None:
        started.set()
        while not task.cancelled:
            time.sleep(0.01)
        task.raise_if_cancelled()

    with Client(worker_server.url) as client:
        worker.start()
        handle = client.submit("endless", {})
        assert started.wait(10)
        began = time.monotonic()
        worker.stop(timeout=20)
        assert time.monotonic() - began < 6
        row = client.wait(handle.task_id, timeout=10)
        assert row.status == "failed"
        assert row.error is not None
        assert row.error["code"] == "server_shutdown"


def test_the_servers_drain_signal_ends_the_worker(
    workers: WorkerFactory, worker_server: Server
) -> None:
    worker = workers()
    worker.op("resize")(resize)
    worker.start()
    assert worker.wait_signals_connected()
    answer = httpx.post(f"{worker_server.url}/v1/workers/{worker.id}/drain")
    assert answer.status_code in (200, 202, 204), answer.text
    thread = worker._thread
    assert thread is not None
    thread.join(15)
    assert not thread.is_alive(), "the worker drained and ended by itself"


def test_op_conflict_refuses_the_registration(workers: WorkerFactory) -> None:
    first = workers()
    first.op("conflicted", schema={"type": "object", "properties": {"a": {"type": "string"}}})(
        resize
    )
    first.start()
    second = workers()
    second.op("conflicted", schema={"type": "object", "properties": {"a": {"type": "integer"}}})(
        resize
    )
    with pytest.raises(TasktapeError) as caught:
        second.start()
    error = caught.value
    assert (error.status, error.code) == (409, "op_conflict")
    assert error.detail["op"] == "conflicted"
    assert "params_schema" in error.detail["fields"]
    assert "conflicted" in error.message


def test_a_live_worker_id_is_not_taken(workers: WorkerFactory) -> None:
    first = workers(id="pytest-same-id")
    first.op("resize")(resize)
    first.start()
    assert first.wait_signals_connected()
    second = workers(id="pytest-same-id")
    second.op("resize")(resize)
    with pytest.raises(TasktapeError) as caught:
        second.start(timeout=60)
    assert (caught.value.status, caught.value.code) == (409, "worker_id_in_use")


def test_a_crashed_and_restarted_server_makes_the_worker_register_again(
    make_server: ServerFactory, tmp_path: Any
) -> None:
    port = free_port()
    data_dir = tmp_path / "data"
    server = make_server(SHORT_LEASE, listen=f"127.0.0.1:{port}", data_dir=data_dir)
    worker = Worker(server.url, id="pytest-restart", drain_timeout=5)
    worker.op("resize")(resize)
    worker.start()
    try:
        first_session = (worker.registration or {})["session"]
        # A crash, not a drain: a draining server tells its workers to drain
        # (and so exit); one that died forgets their sessions.
        server.kill()
        again = make_server(SHORT_LEASE, listen=f"127.0.0.1:{port}", data_dir=data_dir)
        eventually(
            lambda: (worker.registration or {}).get("session") not in (None, first_session),
            20,
            "the worker registered again",
        )
        with Client(again.url) as client:
            row = client.wait(client.submit("resize", {"src": "/x"}).task_id, timeout=20)
            assert row.status == "succeeded"
    finally:
        worker.stop(timeout=20)


def test_lost_heartbeats_stop_the_ops_and_the_task_ends_owner_lost(
    workers: WorkerFactory, worker_server: Server
) -> None:
    relay = Relay(worker_server.url.removeprefix("http://"))
    stopped: list[float] = []
    started = threading.Event()
    worker = workers(url=relay.url, timeout=1.0)
    worker.op("resize")(resize)

    @worker.op("patient")
    def patient(task: Task) -> None:
        started.set()
        while not task.cancelled:
            time.sleep(0.01)
        stopped.append(time.monotonic())

    try:
        with Client(worker_server.url) as client:
            worker.start()
            ttl = (worker.registration or {})["lease_ttl_ms"] / 1000
            handle = client.submit("patient", {})
            assert started.wait(10)
            cut = time.monotonic()
            relay.refuse = True
            relay.drop()
            row = client.wait(handle.task_id, timeout=ttl + 10)
            assert row.status == "failed"
            assert row.error is not None
            assert row.error["code"] == "owner_lost"
            eventually(lambda: bool(stopped), ttl + 5, "the worker stopped its op itself")
            assert stopped[0] - cut < ttl + 1.0, "within lease_ttl of the last good heartbeat"
            relay.refuse = False
            again = client.submit("resize", {"src": "/x"})
            assert client.wait(again.task_id, timeout=ttl + 20).status == "succeeded"
    finally:
        relay.close()


async def test_run_async_on_the_callers_loop(worker_server: Server) -> None:
    worker = Worker(worker_server.url, id="pytest-async-run", drain_timeout=5)

    @worker.op("hello")
    async def hello(task: Task, name: str) -> str:
        return f"hello {name}"

    running = asyncio.create_task(worker.run_async())
    try:
        for _ in range(500):
            if worker.registration is not None:
                break
            await asyncio.sleep(0.02)
        async with AsyncClient(worker_server.url) as client:
            handle = await client.submit("hello", {"name": "loop"})
            row = await client.wait(handle.task_id, timeout=20)
            assert row.result == "hello loop"
    finally:
        worker.stop()
        await asyncio.wait_for(running, 20)


def test_events_are_batched_and_progress_never_waits(
    workers: WorkerFactory, worker_server: Server
) -> None:
    worker = workers()
    spent: list[float] = []
    steps = 3000

    @worker.op("burst")
    def burst(task: Task) -> int:
        began = time.monotonic()
        for i in range(1, steps + 1):
            task.progress("burst", i, steps)
        spent.append(time.monotonic() - began)
        return steps

    with Client(worker_server.url) as client:
        worker.start()
        reports_before = sum("route=/v1/worker/report" in line for line in worker_server.lines)
        handle = client.submit("burst", {})
        row = client.wait(handle.task_id, timeout=60)
        assert row.status == "succeeded"
        events = client.events(handle.task_id, 0, limit=1000)
        currents = []
        from_seq = 0
        while True:
            page = client.events(handle.task_id, from_seq, limit=1000)
            currents += [event.current for event in page.events if event.type == "progress"]
            if not page.has_more:
                break
            from_seq = page.next_from_seq
        assert currents == list(range(1, steps + 1)), "every event, in order"
        assert events.events[0].type == "task_started"
        reports = sum("route=/v1/worker/report" in line for line in worker_server.lines)
        assert reports - reports_before < steps / 20, "sent in batches"
        assert spent[0] < 1.0, "progress calls only queue"


def test_a_report_whose_answer_was_lost_is_sent_again_and_written_once(
    workers: WorkerFactory, worker_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tasktape import _engine

    original = _engine.Engine.call
    lost: list[int] = []

    async def lose_an_answer(
        self: _engine.Engine, path: str, body: dict[str, Any], **kwargs: Any
    ) -> Any:
        answer = await original(self, path, body, **kwargs)
        # The server wrote the report; its answer never arrives.
        if path == "/v1/worker/report" and not lost:
            events = sum(len(item.get("events", [])) for item in body["items"])
            if events:
                lost.append(events)
                raise TasktapeError("transport_error", "the answer was lost (test)")
        return answer

    monkeypatch.setattr(_engine.Engine, "call", lose_an_answer)
    worker = workers()

    @worker.op("steps")
    def steps(task: Task) -> int:
        for i in range(1, 6):
            task.progress("steps", i, 5)
            time.sleep(0.01)
        return 5

    with Client(worker_server.url) as client:
        worker.start()
        handle = client.submit("steps", {})
        row = client.wait(handle.task_id, timeout=30)
        assert row.status == "succeeded"
        assert lost, "an answer was lost"
        page = client.events(handle.task_id, 0, limit=1000)
        currents = [event.current for event in page.events if event.type == "progress"]
        assert currents == [1, 2, 3, 4, 5], "each event once, in order"
