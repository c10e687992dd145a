"""A worker in its own process: SIGTERM drains it (exit 0), SIGKILL loses
its tasks (`owner_lost`, or retried when the op is idempotent)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import Server, eventually

from tasktape import Client

SCRIPT = Path(__file__).with_name("worker_script.py")


class WorkerProcess:
    def __init__(self, url: str, worker_id: str, env: dict[str, str] | None = None) -> None:
        environment = dict(os.environ)
        environment.update(env or {})
        environment["PYTHONUNBUFFERED"] = "1"
        self.process = subprocess.Popen(
            [sys.executable, str(SCRIPT), url, worker_id],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=environment,
            text=True,
        )
        self.worker_id = worker_id
        self.url = url

    def wait_registered(self) -> None:
        def live() -> bool:
            assert self.process.poll() is None, self.output()
            workers = httpx.get(f"{self.url}/v1/workers").json()["workers"]
            return any(
                entry["worker_id"] == self.worker_id and entry["state"] == "live"
                for entry in workers
            )

        eventually(live, 20, f"worker {self.worker_id} registered")

    def output(self) -> str:
        if self.process.poll() is None:
            return "(still running)"
        assert self.process.stdout is not None
        return self.process.stdout.read()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
def spawn(worker_server: Server) -> Iterator[type[WorkerProcess]]:
    started: list[WorkerProcess] = []

    class Spawned(WorkerProcess):
        def __init__(self, url: str, worker_id: str, env: dict[str, str] | None = None) -> None:
            super().__init__(url, worker_id, env)
            started.append(self)

    yield Spawned
    for process in started:
        process.stop()


def test_sigterm_drains_and_exits_zero(spawn: type[WorkerProcess], worker_server: Server) -> None:
    worker = spawn(worker_server.url, f"pytest-term-{uuid.uuid4().hex[:6]}")
    worker.wait_registered()
    with Client(worker_server.url) as client:
        handle = client.submit("hold", {"seconds": 1.5})
        client.events(handle.task_id, 2, wait=10)
        worker.process.send_signal(signal.SIGTERM)
        code = worker.process.wait(30)
        assert code == 0, worker.output()
        assert "exited cleanly" in worker.output()
        row = client.get(handle.task_id)
        assert row.status == "succeeded", "the running op finished during the drain"
        assert row.result == {"attempt": 1}
        entries = httpx.get(f"{worker_server.url}/v1/workers").json()["workers"]
        assert all(
            entry["state"] != "live" for entry in entries if entry["worker_id"] == worker.worker_id
        )


def test_sigkill_loses_the_tasks_within_the_lease(
    spawn: type[WorkerProcess], worker_server: Server
) -> None:
    worker = spawn(worker_server.url, f"pytest-kill-{uuid.uuid4().hex[:6]}")
    worker.wait_registered()
    with Client(worker_server.url) as client:
        handle = client.submit("hold", {})
        client.events(handle.task_id, 2, wait=10)
        registration = httpx.get(f"{worker_server.url}/v1/workers").json()
        assert registration["workers"][0]["running"] == 1
        killed = time.monotonic()
        worker.process.kill()
        row = client.wait(handle.task_id, timeout=15)
        assert row.status == "failed"
        assert row.error is not None
        assert row.error["code"] == "owner_lost"
        assert time.monotonic() - killed < 2.0 + 1.5, "within lease_ttl_ms (2 s) and a bit"


def test_sigkill_retries_an_idempotent_op_on_another_worker(
    spawn: type[WorkerProcess], worker_server: Server
) -> None:
    first = spawn(worker_server.url, "pytest-idem-1", {"HOLD_IDEMPOTENT": "1"})
    first.wait_registered()
    with Client(worker_server.url) as client:
        handle = client.submit("hold", {"seconds": 0.5})
        eventually(lambda: client.get(handle.task_id).status == "running", 10, "running")
        first.process.kill()
        eventually(
            lambda: (
                client.get(handle.task_id).status == "pending"
                or client.get(handle.task_id).attempt >= 2
            ),
            10,
            "retried after owner_lost",
        )
        second = spawn(worker_server.url, "pytest-idem-2", {"HOLD_IDEMPOTENT": "1"})
        second.wait_registered()
        row = client.wait(handle.task_id, timeout=30)
        assert row.status == "succeeded", row
        assert row.result == {"attempt": 2}
        assert row.attempt == 2


def test_a_restarted_worker_takes_over_its_id_at_once(
    spawn: type[WorkerProcess], worker_server: Server
) -> None:
    worker_id = f"pytest-again-{uuid.uuid4().hex[:6]}"
    first = spawn(worker_server.url, worker_id)
    first.wait_registered()
    with Client(worker_server.url) as client:
        handle = client.submit("hold", {})
        client.events(handle.task_id, 2, wait=10)
        first.process.kill()
        again = spawn(worker_server.url, worker_id)
        started = time.monotonic()
        row = client.wait(handle.task_id, timeout=15)
        assert row.status == "failed"
        assert row.error is not None
        assert row.error["code"] in ("server_restart", "owner_lost")
        assert time.monotonic() - started < 10
        again.wait_registered()
        quick = client.submit("hold", {"seconds": 0.1})
        assert client.wait(quick.task_id, timeout=20).status == "succeeded"


def test_a_process_op_of_a_main_script_is_terminated_by_a_cancel(
    spawn: type[WorkerProcess], worker_server: Server
) -> None:
    worker = spawn(worker_server.url, f"pytest-main-{uuid.uuid4().hex[:6]}")
    worker.wait_registered()
    with Client(worker_server.url) as client:
        handle = client.submit("sleep_in_child", {})
        page = client.events(handle.task_id, 2, wait=30)
        pids = [event.payload["pid"] for event in page.events if event.kind == "pid"]
        assert pids, page
        client.cancel(handle.task_id)
        row = client.wait(handle.task_id, timeout=10)
        assert row.status == "cancelled"

        def gone() -> bool:
            try:
                os.kill(pids[0], 0)
            except ProcessLookupError:
                return True
            return False

        eventually(gone, 10, "the child is gone")
        worker.process.send_signal(signal.SIGTERM)
        assert worker.process.wait(30) == 0, worker.output()
