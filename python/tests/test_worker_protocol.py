"""The worker protocol route by route with raw HTTP (docs/WORKERS.md):
register, claim, report, heartbeat, signals, drain, deregister, and what
the server answers to bad input from a worker."""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from conftest import Server, ServerFactory, eventually

from tasktape import Client

OP = {
    "name": "resize",
    "description": "Resize the images in a folder",
    "params_schema": {
        "type": "object",
        "properties": {"src": {"type": "string"}},
        "required": ["src"],
    },
    "concurrency": 4,
    "retry": {"max_attempts": 1},
    "idempotent": False,
    "timeout_ms": None,
}


def registration(worker_id: str, ops: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "worker_id": worker_id,
        "host": "pytest-host",
        "pid": 4242,
        "version": "tasktape-py tests",
        "capacity": 8,
        "ops": ops if ops is not None else [OP],
    }


def now_ts() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


class RawWorker:
    """A worker spoken by hand: one session and its signal stream."""

    def __init__(self, url: str, ops: list[dict[str, Any]] | None = None) -> None:
        self.http = httpx.Client(base_url=url, timeout=40)
        self.worker_id = f"raw-{uuid.uuid4().hex[:8]}"
        answer = self.http.post("/v1/worker/register", json=registration(self.worker_id, ops))
        assert answer.status_code == 200, answer.text
        self.answer: dict[str, Any] = answer.json()
        self.session: str = self.answer["session"]
        self.signals: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        self._stream: httpx.Response | None = None
        self._beating = threading.Event()
        self._beater: threading.Thread | None = None
        #: Claimed tasks not finished yet: the heartbeats name them.
        self.held: set[str] = set()

    def post(self, route: str, body: dict[str, Any]) -> httpx.Response:
        return self.http.post(f"/v1/worker/{route}", json=body)

    def claim(self, max_tasks: int = 8, wait_ms: int = 5000, **ops: int) -> list[dict[str, Any]]:
        answer = self.post(
            "claim",
            {
                "session": self.session,
                "max": max_tasks,
                "ops": ops or {"resize": max_tasks},
                "wait_ms": wait_ms,
            },
        )
        assert answer.status_code == 200, answer.text
        tasks: list[dict[str, Any]] = answer.json()["tasks"]
        self.held.update(task["task_id"] for task in tasks)
        return tasks

    def report(self, *items: dict[str, Any]) -> httpx.Response:
        answer = self.post("report", {"session": self.session, "items": list(items)})
        for item in items:
            if "finish" in item and answer.status_code == 200:
                self.held.discard(item["task_id"])
        return answer

    def heartbeat(self, *task_ids: str) -> httpx.Response:
        return self.post("heartbeat", {"session": self.session, "tasks": list(task_ids)})

    def keep_beating(self) -> None:
        """Heartbeats every lease_interval_ms in a thread until `close()`."""
        interval = self.answer["lease_interval_ms"] / 1000

        def beat() -> None:
            while not self._beating.wait(interval):
                self.heartbeat(*sorted(self.held))

        self._beater = threading.Thread(target=beat, daemon=True)
        self._beater.start()

    def open_signals(self) -> None:
        """Reads the signal stream in a thread into `signals`."""
        ready = threading.Event()

        def read() -> None:
            with httpx.stream(
                "GET",
                f"{self.http.base_url}/v1/worker/signals",
                params={"session": self.session},
                timeout=httpx.Timeout(10, read=60),
            ) as response:
                self._stream = response
                event = ""
                data: list[str] = []
                try:
                    for line in response.iter_lines():
                        if line.startswith("event:"):
                            event = line[6:].strip()
                        elif line.startswith("data:"):
                            data.append(line[5:].strip())
                        elif line == "" and event:
                            if event == "ready":
                                ready.set()
                            else:
                                self.signals.put((event, json.loads("\n".join(data) or "{}")))
                            event, data = "", []
                except httpx.HTTPError:
                    return

        threading.Thread(target=read, daemon=True).start()
        assert ready.wait(10), "the signal stream said ready"

    def next_signal(self, timeout: float = 10.0) -> tuple[str, dict[str, Any]]:
        return self.signals.get(timeout=timeout)

    def close(self) -> None:
        self._beating.set()
        if self._beater is not None:
            # A heartbeat in flight finishes before the client closes.
            self._beater.join(timeout=45)
        if self._stream is not None:
            self._stream.close()
        self.http.close()


@pytest.fixture
def raw(worker_server: Server) -> Iterator[RawWorker]:
    worker = RawWorker(worker_server.url)
    yield worker
    worker.close()


@pytest.fixture
def client(worker_server: Server) -> Iterator[Client]:
    with Client(worker_server.url) as opened:
        yield opened


def tape(client: Client, task_id: str) -> list[dict[str, Any]]:
    return [event.to_json() for event in client.events(task_id, 0, limit=1000).events]


def test_register_answers_the_session_settings(raw: RawWorker, worker_server: Server) -> None:
    answer = raw.answer
    assert answer["worker_id"] == raw.worker_id
    assert answer["session"]
    # The session's lease: the server's lease_ttl_ms (2000) less one renewal
    # interval, so a worker stops before a peer could take its tasks.
    assert answer["lease_ttl_ms"] == 1500
    assert answer["lease_interval_ms"] == 500
    assert answer["cancel_grace_ms"] == 1000
    assert answer["max_batch"] >= 1
    ops = httpx.get(f"{worker_server.url}/v1/ops").json()["ops"]
    resize = next(op for op in ops if op["name"] == "resize")
    assert resize["remote"] is True
    assert resize["workers"] == 1
    assert resize["description"] == "Resize the images in a folder"
    workers = httpx.get(f"{worker_server.url}/v1/workers").json()["workers"]
    mine = next(entry for entry in workers if entry["worker_id"] == raw.worker_id)
    assert mine["host"] == "pytest-host"
    assert mine["pid"] == 4242
    assert mine["ops"] == ["resize"]
    assert mine["capacity"] == 8
    assert mine["state"] == "live"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"worker_id": "has space"}, "worker_id"),
        ({"worker_id": ""}, "worker_id"),
        ({"capacity": 0}, "capacity"),
        ({"capacity": 10001}, "capacity"),
        ({"ops": []}, "ops"),
        ({"ops": [{**OP, "name": "Bad Name"}]}, "ops[0].name"),
        ({"ops": [{**OP, "name": "tasks"}]}, "ops[0].name"),
        ({"ops": [{**OP, "concurrency": 0}]}, "ops[0].concurrency"),
        ({"ops": [{**OP, "params_schema": {"type": 5}}]}, "ops[0].params_schema"),
        ({"ops": [{**OP, "retry": {"max_attempts": 0}}]}, "ops[0].retry"),
    ],
)
def test_a_bad_registration_is_a_422_naming_the_field(
    worker_server: Server, change: dict[str, Any], field: str
) -> None:
    body = {**registration(f"raw-{uuid.uuid4().hex[:8]}"), **change}
    answer = httpx.post(f"{worker_server.url}/v1/worker/register", json=body)
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert error["code"] == "invalid_request"
    assert field in json.dumps(error), error


def test_an_op_the_server_runs_itself_cannot_be_registered(worker_server: Server) -> None:
    body = registration(f"raw-{uuid.uuid4().hex[:8]}", [{**OP, "name": "echo"}])
    answer = httpx.post(f"{worker_server.url}/v1/worker/register", json=body)
    assert answer.status_code in (409, 422), answer.text
    assert answer.json()["error"]["code"] in ("op_conflict", "invalid_request")


def test_claim_report_and_the_tape(raw: RawWorker, client: Client) -> None:
    raw.keep_beating()
    handle = client.submit("resize", {"src": "/photos"})
    tasks = raw.claim()
    assert len(tasks) == 1
    claimed = tasks[0]
    assert claimed["task_id"] == handle.task_id
    assert claimed["op"] == "resize"
    assert claimed["params"] == {"src": "/photos"}
    assert claimed["attempt"] == 1
    assert claimed["max_attempts"] == 1
    assert claimed["deadline"] is None
    assert claimed["lease"]
    assert client.get(handle.task_id).status == "running"
    events = [
        {"type": "progress", "phase": "resize", "current": 1, "total": 2, "ts": now_ts()},
        {"type": "log", "level": "info", "message": "halfway"},
        {"type": "partial", "kind": "thumb", "payload": {"file": "a.png"}},
        {"type": "progress", "phase": "resize", "current": 2, "total": 2, "detail": {"f": 1}},
    ]
    answer = raw.report(
        {
            "task_id": claimed["task_id"],
            "lease": claimed["lease"],
            "events": events,
            "finish": {"result": {"resized": 2}},
        }
    )
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"items": [{"task_id": claimed["task_id"], "ok": True}]}
    row = client.wait(handle.task_id, timeout=10)
    assert row.status == "succeeded"
    assert row.result == {"resized": 2}
    written = tape(client, handle.task_id)
    assert [event["type"] for event in written] == [
        "task_started",
        "progress",
        "log",
        "partial",
        "progress",
        "final",
    ]
    assert written[1]["phase"] == "resize"
    assert written[2]["message"] == "halfway"
    assert written[3]["payload"] == {"file": "a.png"}
    assert written[4]["detail"] == {"f": 1}
    times = [event["ts"] for event in written]
    assert times == sorted(times)
    again = raw.report(
        {
            "task_id": claimed["task_id"],
            "lease": claimed["lease"],
            "events": [],
            "finish": {"result": {"twice": True}},
        }
    )
    assert again.status_code == 200
    item = again.json()["items"][0]
    assert item["ok"] is False
    assert item["code"] == "task_ended"
    assert tape(client, handle.task_id) == written, "a second final is never written"


def test_a_worker_clock_far_off_is_clamped(raw: RawWorker, client: Client) -> None:
    handle = client.submit("resize", {"src": "/x"})
    claimed = raw.claim()[0]
    answer = raw.report(
        {
            "task_id": claimed["task_id"],
            "lease": claimed["lease"],
            "events": [
                {"type": "log", "level": "info", "message": "past", "ts": "2001-01-01T00:00:00Z"},
                {"type": "log", "level": "info", "message": "future", "ts": "2099-01-01T00:00:00Z"},
            ],
            "finish": {"result": None},
        }
    )
    assert answer.status_code == 200, answer.text
    written = tape(client, handle.task_id)
    times = [event["ts"] for event in written]
    assert times == sorted(times), "never back"
    assert all(ts < "2090" for ts in times), "never ahead of the server"


def test_an_error_finish_fails_the_attempt(raw: RawWorker, client: Client) -> None:
    handle = client.submit("resize", {"src": "/x"})
    claimed = raw.claim()[0]
    error = {"code": "op_error", "message": "boom", "detail": {"type": "ValueError"}}
    raw.report(
        {"task_id": claimed["task_id"], "lease": claimed["lease"], "finish": {"error": error}}
    )
    row = client.wait(handle.task_id, timeout=10)
    assert row.status == "failed"
    assert row.error is not None
    assert row.error["code"] == "op_error"
    assert row.error["message"] == "boom"
    assert row.error["detail"] == {"type": "ValueError"}


def test_claim_long_polls_and_takes_at_most_what_it_asks(raw: RawWorker, client: Client) -> None:
    raw.keep_beating()
    started = time.monotonic()
    assert raw.claim(wait_ms=300) == []
    assert 0.25 < time.monotonic() - started < 3, "an empty claim waits wait_ms"

    got: list[list[dict[str, Any]]] = []
    waiting = threading.Thread(target=lambda: got.append(raw.claim(wait_ms=10000)))
    waiting.start()
    time.sleep(0.2)
    submitted = time.monotonic()
    client.submit("resize", {"src": "/late"})
    waiting.join(15)
    assert got
    assert len(got[0]) == 1
    assert time.monotonic() - submitted < 1.0, "a claim answers as soon as a task is due"

    for i in range(3):
        client.submit("resize", {"src": f"/{i}"})
    # One task is held already: `max` bounds this claim, not the total.
    assert len(raw.claim(max_tasks=2)) == 2
    assert len(raw.claim(max_tasks=8, resize=1)) == 1


def test_a_claim_with_several_ops_takes_any_of_them(worker_server: Server, client: Client) -> None:
    other = {**OP, "name": "zoom", "concurrency": None}
    raw = RawWorker(worker_server.url, [OP, other])
    try:
        handle = client.submit("zoom", {"src": "/z"})
        tasks = raw.claim(max_tasks=4, wait_ms=2000, resize=4, zoom=4)
        assert [task["task_id"] for task in tasks] == [handle.task_id]
        got: list[list[dict[str, Any]]] = []
        waiting = threading.Thread(
            target=lambda: got.append(raw.claim(max_tasks=4, wait_ms=10000, resize=4, zoom=4))
        )
        waiting.start()
        time.sleep(0.2)
        client.submit("zoom", {"src": "/z2"})
        waiting.join(15)
        assert got
        assert len(got[0]) == 1, "the long-poll woke for the second op's task"
    finally:
        raw.close()


class Refusals:
    """A claimed task and a check that a report is refused with nothing written."""

    def __init__(self, raw: RawWorker, client: Client) -> None:
        raw.keep_beating()
        self.raw = raw
        self.client = client
        self.handle = client.submit("resize", {"src": "/x"})
        claimed = raw.claim()[0]
        self.good: dict[str, Any] = {
            "task_id": claimed["task_id"],
            "lease": claimed["lease"],
            "events": [{"type": "log", "level": "info", "message": "fine"}],
        }
        self.before = tape(client, self.handle.task_id)

    def refused(self, *items: dict[str, Any], status: int = 422) -> str:
        answer = self.raw.report(*items)
        assert answer.status_code == status, answer.text
        error: dict[str, Any] = answer.json()["error"]
        assert tape(self.client, self.handle.task_id) == self.before, "nothing written"
        return json.dumps(error)


@pytest.fixture
def refusals(raw: RawWorker, client: Client) -> Refusals:
    return Refusals(raw, client)


def test_a_report_with_an_unknown_event_type_names_it(refusals: Refusals) -> None:
    good = refusals.good
    error = refusals.refused(good, {**good, "events": [{"type": "bogus"}]})
    assert "invalid_request" in error
    assert "items[1].events[0].type" in error


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"events": [{"type": "progress", "phase": "p"}]}, "items[1].events[0]"),
        ({"events": [{"type": "final", "status": "succeeded"}]}, "items[1].events[0]"),
        ({"events": [{"type": "task_started", "task_id": "x", "op": "y"}]}, "items[1].events[0]"),
        ({"finish": {"neither": 1}}, "items[1].finish"),
        ({"finish": {"error": {"message": "no code"}}}, "items[1].finish"),
        ({"lease": 5}, "items[1].lease"),
    ],
)
def test_a_malformed_item_is_a_422_naming_it(
    refusals: Refusals, bad: dict[str, Any], field: str
) -> None:
    error = refusals.refused(refusals.good, {**refusals.good, **bad})
    assert "invalid_request" in error
    assert field in error


def test_more_than_max_batch_items_or_events_is_refused(refusals: Refusals) -> None:
    good = refusals.good
    max_batch = refusals.raw.answer["max_batch"]
    error = refusals.refused(*([good] * (max_batch + 1)))
    assert "invalid_request" in error or "payload_too_large" in error
    many_events = {**good, "events": [good["events"][0]] * (max_batch + 1)}
    error = refusals.refused(many_events)
    assert "invalid_request" in error or "payload_too_large" in error


def test_an_oversize_body_is_a_413(refusals: Refusals) -> None:
    huge = {
        **refusals.good,
        "events": [{"type": "log", "level": "info", "message": "x" * 2_000_000}],
    }
    error = refusals.refused(huge, status=413)
    assert "payload_too_large" in error


def test_a_report_without_session_or_json_is_refused(refusals: Refusals) -> None:
    raw = refusals.raw
    answer = raw.post("report", {"items": [refusals.good]})
    assert answer.status_code == 422, answer.text
    answer = raw.post("report", {"session": raw.session, "items": "nope"})
    assert answer.status_code == 422, answer.text
    answer = raw.http.post(
        "/v1/worker/report",
        content=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == "invalid_json"
    assert tape(refusals.client, refusals.handle.task_id) == refusals.before


def test_unknown_tasks_and_stale_leases_are_refused_per_item(
    raw: RawWorker, client: Client
) -> None:
    raw.keep_beating()
    handle = client.submit("resize", {"src": "/x"})
    claimed = raw.claim()[0]
    before = tape(client, handle.task_id)
    log = [{"type": "log", "level": "info", "message": "should not land"}]
    answer = raw.report(
        {"task_id": str(uuid.uuid4()), "lease": claimed["lease"], "events": log},
        {"task_id": claimed["task_id"], "lease": "stale-" + claimed["lease"], "events": log},
        {"task_id": claimed["task_id"], "lease": claimed["lease"], "events": []},
    )
    assert answer.status_code == 200, answer.text
    items = answer.json()["items"]
    assert [item["ok"] for item in items] == [False, False, True]
    assert items[0]["code"] == "unknown_task"
    assert items[1]["code"] == "lease_lost"
    assert all(item["message"] for item in items[:2])
    assert tape(client, handle.task_id) == before, "a stale item's writes are refused whole"


def test_heartbeats_name_the_tasks_and_stop_lost_ones(raw: RawWorker, client: Client) -> None:
    raw.keep_beating()
    handle = client.submit("resize", {"src": "/x"})
    claimed = raw.claim()[0]
    answer = raw.heartbeat(claimed["task_id"])
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"stop": []}
    client.cancel(handle.task_id)
    grace = raw.answer["cancel_grace_ms"] / 1000
    time.sleep(grace + 0.5)
    assert client.get(handle.task_id).status == "cancelled", "ended past the grace"
    answer = raw.heartbeat(claimed["task_id"])
    assert answer.json()["stop"] == [claimed["task_id"]]
    stranger = str(uuid.uuid4())
    assert stranger in raw.heartbeat(stranger).json()["stop"]


def test_signals_carry_cancel_then_stop(raw: RawWorker, client: Client) -> None:
    raw.keep_beating()
    raw.open_signals()
    handle = client.submit("resize", {"src": "/x"})
    claimed = raw.claim()[0]
    sent = time.monotonic()
    client.cancel(handle.task_id)
    event, data = raw.next_signal(5)
    assert (event, data) == ("cancel", {"task_id": claimed["task_id"]})
    assert time.monotonic() - sent < 0.5, "the cancel is pushed at once"
    event, data = raw.next_signal(raw.answer["cancel_grace_ms"] / 1000 + 5)
    assert event == "stop"
    assert data["task_id"] == claimed["task_id"]
    assert data["code"]
    assert time.monotonic() - sent >= raw.answer["cancel_grace_ms"] / 1000 - 0.1
    row = client.wait(handle.task_id, timeout=2)
    assert row.status == "cancelled"
    late = raw.report(
        {"task_id": claimed["task_id"], "lease": claimed["lease"], "finish": {"result": 1}}
    )
    assert late.json()["items"][0]["ok"] is False


def test_a_cancel_finished_within_the_grace(raw: RawWorker, client: Client) -> None:
    raw.keep_beating()
    raw.open_signals()
    handle = client.submit("resize", {"src": "/x"})
    claimed = raw.claim()[0]
    client.cancel(handle.task_id)
    assert raw.next_signal(5)[0] == "cancel"
    error = {"code": "cancelled", "message": "stopped"}
    answer = raw.report(
        {"task_id": claimed["task_id"], "lease": claimed["lease"], "finish": {"error": error}}
    )
    assert answer.json()["items"][0]["ok"] is True
    row = client.wait(handle.task_id, timeout=5)
    assert row.status == "cancelled"


def test_a_time_limit_is_a_deadline_and_a_cancel(worker_server: Server, client: Client) -> None:
    raw = RawWorker(worker_server.url, [{**OP, "timeout_ms": 500}])
    try:
        raw.keep_beating()
        raw.open_signals()
        handle = client.submit("resize", {"src": "/x"})
        claimed = raw.claim()[0]
        assert claimed["deadline"] is not None
        event, data = raw.next_signal(5)
        assert (event, data["task_id"]) == ("cancel", claimed["task_id"])
        row = client.wait(handle.task_id, timeout=10)
        assert row.status == "failed"
        assert row.error is not None
        assert row.error["code"] == "timeout"
    finally:
        raw.close()


def test_drain_and_deregister(raw: RawWorker, client: Client, worker_server: Server) -> None:
    raw.keep_beating()
    handle = client.submit("resize", {"src": "/x"})
    claimed = raw.claim()[0]
    assert claimed["task_id"] == handle.task_id
    answer = raw.post("drain", {"session": raw.session})
    assert answer.status_code == 204, answer.text
    client.submit("resize", {"src": "/later"})
    started = time.monotonic()
    assert raw.claim(wait_ms=10000) == []
    assert time.monotonic() - started < 1.0, "a draining worker's claims answer at once"
    workers = httpx.get(f"{worker_server.url}/v1/workers").json()["workers"]
    assert next(e for e in workers if e["worker_id"] == raw.worker_id)["state"] == "draining"
    answer = raw.post("deregister", {"session": raw.session})
    assert answer.status_code == 204, answer.text
    row = client.wait(handle.task_id, timeout=10)
    assert row.status == "failed"
    assert row.error is not None
    assert row.error["code"] == "server_shutdown"
    assert raw.heartbeat().status_code == 409


def test_the_admin_drain_is_pushed_to_the_worker(raw: RawWorker, worker_server: Server) -> None:
    raw.keep_beating()
    raw.open_signals()
    answer = httpx.post(f"{worker_server.url}/v1/workers/{raw.worker_id}/drain")
    assert answer.status_code in (200, 202, 204), answer.text
    assert raw.next_signal(5)[0] == "drain"


def test_a_claimed_task_never_named_ends_owner_lost(raw: RawWorker, client: Client) -> None:
    raw.keep_beating()
    handle = client.submit("resize", {"src": "/x"})
    raw.claim()
    raw.held.clear()  # as if the claim's answer was lost on the way
    ttl = raw.answer["lease_ttl_ms"] / 1000
    started = time.monotonic()
    row = client.wait(handle.task_id, timeout=ttl + 5)
    assert row.status == "failed"
    assert row.error is not None
    assert row.error["code"] == "owner_lost"
    assert time.monotonic() - started < ttl + 1.5


def test_lapsed_heartbeats_end_the_session(raw: RawWorker, client: Client) -> None:
    handle = client.submit("resize", {"src": "/x"})
    claimed = raw.claim()[0]
    raw.heartbeat(claimed["task_id"])
    ttl = raw.answer["lease_ttl_ms"] / 1000
    row = client.wait(handle.task_id, timeout=ttl + 5)
    assert row.status == "failed"
    assert row.error is not None
    assert row.error["code"] == "owner_lost"
    for route, body in (
        ("heartbeat", {"session": raw.session, "tasks": []}),
        ("claim", {"session": raw.session, "max": 1, "ops": {"resize": 1}, "wait_ms": 0}),
        ("report", {"session": raw.session, "items": []}),
        ("drain", {"session": raw.session}),
    ):
        answer = raw.post(route, body)
        assert answer.status_code == 409, (route, answer.text)
        assert answer.json()["error"]["code"] == "session_unknown"
    signals = httpx.get(
        f"{raw.http.base_url}/v1/worker/signals", params={"session": raw.session}, timeout=5
    )
    assert signals.status_code == 409


def test_worker_tokens_are_scoped(make_server: ServerFactory) -> None:
    server = make_server(
        """
[[tokens]]
name = "boss"
token = "admin-token"
scope = "admin"

[[tokens]]
name = "resizer"
token = "worker-token"
scope = "worker"
ops = ["resize"]
"""
    )
    as_worker = {"Authorization": "Bearer worker-token"}
    answer = httpx.post(
        f"{server.url}/v1/worker/register", json=registration("tok-1"), headers=as_worker
    )
    assert answer.status_code == 200, answer.text
    other = registration("tok-2", [{**OP, "name": "other"}])
    answer = httpx.post(f"{server.url}/v1/worker/register", json=other, headers=as_worker)
    assert answer.status_code == 403, answer.text
    assert answer.json()["error"]["code"] == "op_not_allowed"
    answer = httpx.get(f"{server.url}/v1/tasks", headers=as_worker)
    assert answer.status_code == 403, answer.text
    answer = httpx.post(f"{server.url}/v1/worker/register", json=registration("tok-3"))
    assert answer.status_code == 401
    admin = {"Authorization": "Bearer admin-token"}
    answer = httpx.post(
        f"{server.url}/v1/worker/register",
        json=registration("tok-4", [{**OP, "name": "other"}]),
        headers=admin,
    )
    assert answer.status_code == 200, answer.text


def test_an_unknown_session_is_409(worker_server: Server) -> None:
    for route in ("claim", "report", "heartbeat", "drain", "deregister"):
        answer = httpx.post(
            f"{worker_server.url}/v1/worker/{route}",
            json={
                "session": "no-such-session",
                "max": 1,
                "ops": {"resize": 1},
                "items": [],
                "tasks": [],
            },
        )
        assert answer.status_code == 409, (route, answer.text)
        assert answer.json()["error"]["code"] == "session_unknown"


def test_the_declaration_outlives_the_worker(worker_server: Server, client: Client) -> None:
    raw = RawWorker(worker_server.url)
    raw.post("deregister", {"session": raw.session})
    raw.close()
    handle = client.submit("resize", {"src": "/kept"})
    assert client.get(handle.task_id).status == "pending"
    from tasktape import TasktapeError

    with pytest.raises(TasktapeError) as caught:
        client.submit("resize", {"src": 5})
    assert caught.value.status == 422
    eventually(lambda: True)
