"""The worker's session with the server: register, claim, report,
heartbeat, signals, drain. Everything here runs on one asyncio loop.

Loops (each an asyncio task, all started after the first registration):

- **claims**: a long-poll asking for the free slots (`max` = free in all,
  `ops` = free per op); starts a `Run` for each task it gets.
- **sender** (`_reporter.Reporter`): the one place that talks `POST
  /v1/worker/report`; events and finishes of all runs, in order, batched.
- **heartbeats**: every `lease_interval_ms`, naming the tasks it holds;
  stops the ones the server names in `stop`.
- **watchdog**: when no heartbeat succeeded for `lease_ttl_ms` (counted from
  when the last good one was sent), stops every run and registers again.
- **signals**: the held-open `GET /v1/worker/signals` stream (`cancel`,
  `stop`, `drain`), reopened when it drops.

A `409 session_unknown` from any call stops every run and registers again.
Shutdown (`request_stop`) is a drain: `POST /v1/worker/drain`, no new
claims, running ops get `drain_timeout`, then are cancelled; the outbox is
flushed; `POST /v1/worker/deregister`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from ._compat import quiet_missing_sniffio
from ._errors import TasktapeError
from ._ops import OpSpec
from ._reporter import Reporter
from ._runs import Outcome, Run
from ._session import Backoff, Session
from ._sse import SseDecoder
from ._version import WORKER_VERSION

quiet_missing_sniffio()

__all__ = ["Engine", "EngineConfig"]

log = logging.getLogger("tasktape.worker")

CLAIM_WAIT_MS = 30000


@dataclass
class EngineConfig:
    url: str
    token: str | None
    worker_id: str
    capacity: int
    drain_timeout: float
    timeout: float
    verify: Any
    ops: dict[str, OpSpec]


class Engine:
    """One worker process's session loops (see the module docs)."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.loop = asyncio.get_running_loop()
        headers = {"User-Agent": WORKER_VERSION.replace(" ", "/")}
        if config.token:
            headers["Authorization"] = f"Bearer {config.token}"
        self.http = httpx.AsyncClient(
            base_url=config.url.rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(config.timeout, connect=min(config.timeout, 10.0)),
            verify=config.verify,
        )
        self.session: Session | None = None
        self.session_ready = asyncio.Event()
        self.runs: dict[str, Run] = {}
        self.reporter = Reporter(self)
        self.slot_freed = asyncio.Event()
        self.stop_requested = asyncio.Event()
        self.hurry = asyncio.Event()
        self.signals_connected = asyncio.Event()
        self.draining = False
        self.fatal: BaseException | None = None
        self.last_heartbeat_ok = time.monotonic()
        self._epoch = 0
        self._reregistering: asyncio.Task[None] | None = None
        self._early_cancels: deque[str] = deque(maxlen=1000)
        self._loops: list[asyncio.Task[None]] = []

    # -- HTTP -------------------------------------------------------------

    async def call(
        self, path: str, body: dict[str, Any], *, read_timeout: float | None = None
    ) -> Any:
        """POSTs `body`; answers the JSON (or None for 204); raises `TasktapeError`."""
        timeout = self.http.timeout
        if read_timeout is not None:
            timeout = httpx.Timeout(
                connect=timeout.connect, read=read_timeout, write=timeout.write, pool=timeout.pool
            )
        try:
            response = await self.http.post(path, json=body, timeout=timeout)
        except httpx.TransportError as error:
            raise TasktapeError.from_transport(error, f"POST {path}") from error
        if response.status_code >= 300:
            raise TasktapeError.from_response(response)
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError as error:
            raise TasktapeError.invalid_response(response, "not JSON") from error

    @staticmethod
    def session_unknown(error: TasktapeError) -> bool:
        return error.status == 409 and error.code == "session_unknown"

    # -- registration -------------------------------------------------------

    def registration_body(self) -> dict[str, Any]:
        return {
            "worker_id": self.config.worker_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "version": WORKER_VERSION,
            "capacity": self.config.capacity,
            "ops": [spec.declaration() for spec in self.config.ops.values()],
        }

    async def register(self) -> None:
        """Registers once; raises `TasktapeError` when refused or unreachable."""
        sent_at = time.monotonic()
        answer = await self.call("/v1/worker/register", self.registration_body())
        try:
            self._epoch += 1
            self.session = Session(
                session=answer["session"],
                epoch=self._epoch,
                lease_ttl_s=answer["lease_ttl_ms"] / 1000,
                lease_interval_s=answer["lease_interval_ms"] / 1000,
                cancel_grace_s=answer["cancel_grace_ms"] / 1000,
                max_batch=int(answer.get("max_batch") or 1000),
                answer=dict(answer),
            )
        except (KeyError, TypeError) as error:
            raise TasktapeError(
                "invalid_response", f"POST /v1/worker/register: unexpected body ({error})"
            ) from error
        self.last_heartbeat_ok = sent_at
        self.signals_connected.clear()
        self.session_ready.set()
        log.info(
            "registered worker %s (session %s, %d ops)",
            self.config.worker_id,
            self.session.session,
            len(self.config.ops),
        )

    @staticmethod
    def _refusal_is_final(error: TasktapeError) -> bool:
        if error.status is None or error.status in (408, 429) or error.status >= 500:
            return False
        return not (error.status == 409 and error.code == "worker_id_in_use")

    async def register_first(self) -> bool:
        """The first registration: a refusal (`op_conflict`, `worker_id_in_use`,
        `invalid_request`, …) raises; an unreachable server is tried again
        until it answers or a stop is requested (then False)."""
        backoff = Backoff(cap=5.0)
        while not self.stop_requested.is_set():
            try:
                await self.register()
                return True
            except TasktapeError as error:
                if self._refusal_is_final(error) or error.code == "worker_id_in_use":
                    raise
                log.warning("registration failed (%s); trying again", error)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.stop_requested.wait(), backoff.next())
        return False

    def session_lost(self, epoch: int, why: str) -> None:
        """The session `epoch` is gone: stop every run and register again."""
        if self.session is None or self.session.epoch != epoch:
            return
        if self._reregistering is not None and not self._reregistering.done():
            return
        log.warning("session lost (%s): stopping %d runs, registering again", why, len(self.runs))
        self.session_ready.clear()
        for run in list(self.runs.values()):
            self.abandon(run, "lost")
        self.reporter.clear()
        self._reregistering = self.loop.create_task(self._reregister())

    async def _reregister(self) -> None:
        backoff = Backoff(cap=5.0)
        while not self.stop_requested.is_set():
            try:
                await self.register()
                self.slot_freed.set()
                return
            except TasktapeError as error:
                if self._refusal_is_final(error):
                    log.error("registering again was refused: %s", error)
                    self.fatal = error
                    self.request_stop(hurry=True)
                    return
                log.warning("registering again failed (%s); trying again", error)
            await asyncio.sleep(backoff.next())

    # -- runs ---------------------------------------------------------------

    def running_counts(self) -> tuple[int, dict[str, int]]:
        per_op: dict[str, int] = {}
        total = 0
        for run in self.runs.values():
            if run.active:
                total += 1
                per_op[run.spec.name] = per_op.get(run.spec.name, 0) + 1
        return total, per_op

    def free_slots(self) -> tuple[int, dict[str, int]]:
        total, per_op = self.running_counts()
        free = self.config.capacity - total
        ops: dict[str, int] = {}
        if free <= 0:
            return 0, ops
        for name, spec in self.config.ops.items():
            cap = min(spec.concurrency or self.config.capacity, self.config.capacity)
            room = min(cap - per_op.get(name, 0), free)
            if room > 0:
                ops[name] = room
        return (free if ops else 0), ops

    def start_run(self, claimed: dict[str, Any]) -> None:
        spec = self.config.ops.get(claimed.get("op", ""))
        if spec is None or claimed["task_id"] in self.runs:
            log.error("claim answered a task of an op this worker does not serve: %s", claimed)
            return
        run = Run(spec, claimed, self.loop, self.enqueue_event, self.finished)
        self.runs[run.task_id] = run
        limits = []
        if run.deadline is not None:
            limits.append(run.deadline.timestamp() - time.time())
        if spec.timeout is not None:
            limits.append(spec.timeout)
        if limits:
            self.loop.call_later(max(0.0, min(limits)), self._time_limit, run)
        run.start()
        if run.task_id in self._early_cancels:
            self.cancel(run, "cancel")

    def _time_limit(self, run: Run) -> None:
        if run.state == "running":
            self.cancel(run, "timeout")

    def grace(self) -> float:
        return self.session.cancel_grace_s if self.session else 5.0

    def cancel(self, run: Run, reason: str) -> None:
        """Asks a run to stop; past the grace it is given up (the server
        ends the task anyway and refuses later writes)."""
        if run.state != "running":
            return
        run.state = "stopping"
        grace = self.grace()
        run.stop(reason, grace)
        self.loop.call_later(grace, self._grace_over, run)

    def _grace_over(self, run: Run) -> None:
        if run.state == "stopping":
            log.warning("task %s did not stop within the grace; giving it up", run.task_id)
            self.abandon(run, run.reason or "cancel")

    def abandon(self, run: Run, reason: str) -> None:
        """Stops a run and reports nothing more for it."""
        if run.state == "abandoned":
            return
        was_active = run.active
        run.state = "abandoned"
        run.stop(reason, self.grace())
        self.runs.pop(run.task_id, None)
        self.reporter.forget(run)
        if was_active:
            self.slot_freed.set()

    def enqueue_event(self, run: Run, body: dict[str, Any]) -> None:
        if run.active:
            self.reporter.add_event(run, body)

    def finished(self, run: Run, outcome: Outcome) -> None:
        """A run's op ended: queue its finish (or nothing, when given up)."""
        if not run.active:
            return
        kind, value = outcome
        finish: dict[str, Any] | None
        if run.reason == "drain" and kind != "result":
            # Stopped by the worker's own drain: the deregistration ends it
            # server_shutdown (retried when the op is idempotent).
            finish = None
        elif kind == "result":
            finish = {"result": value}
        elif kind == "cancelled":
            timed_out = run.reason == "timeout"
            finish = {
                "error": {
                    "code": "timeout" if timed_out else "cancelled",
                    "message": "the op passed its time limit"
                    if timed_out
                    else "the op stopped after a cancel",
                    "permanent": False,
                }
            }
        else:
            finish = {"error": value}
        if finish is None:
            self.abandon(run, "drain")
            return
        run.state = "done"
        self.slot_freed.set()
        self.reporter.add_finish(run, finish)

    def held_task_ids(self) -> list[str]:
        return [run.task_id for run in self.runs.values() if run.state != "abandoned"]

    # -- loops ----------------------------------------------------------------

    def start_loops(self) -> None:
        loops = (self._claims, self.reporter.run, self._heartbeats, self._watchdog, self._signals)
        for body in loops:
            self._loops.append(self.loop.create_task(self._guard(body)))

    async def _guard(self, body: Callable[[], Awaitable[None]]) -> None:
        try:
            await body()
        except asyncio.CancelledError:
            raise
        except Exception as error:  # a bug: fail loudly rather than hang
            log.exception("worker loop %s failed", body.__name__)
            self.fatal = error
            self.request_stop(hurry=True)

    async def _claims(self) -> None:
        backoff = Backoff()
        while not self.draining:
            await self.session_ready.wait()
            session = self.session
            assert session is not None
            free, ops = self.free_slots()
            if free == 0:
                self.slot_freed.clear()
                if self.free_slots()[0] == 0:
                    await self.slot_freed.wait()
                continue
            body = {"session": session.session, "max": free, "ops": ops, "wait_ms": CLAIM_WAIT_MS}
            try:
                answer = await self.call(
                    "/v1/worker/claim", body, read_timeout=CLAIM_WAIT_MS / 1000 + 15
                )
            except TasktapeError as error:
                if self.session_unknown(error):
                    self.session_lost(session.epoch, "claim answered session_unknown")
                    continue
                log.warning("claim failed: %s", error)
                await asyncio.sleep(backoff.next())
                continue
            backoff.reset()
            if self.session is not session:
                continue
            for claimed in (answer or {}).get("tasks", []):
                self.start_run(claimed)

    async def _heartbeats(self) -> None:
        while True:
            await self.session_ready.wait()
            session = self.session
            assert session is not None
            await asyncio.sleep(session.lease_interval_s)
            if self.session is not session or not self.session_ready.is_set():
                continue
            sent_at = time.monotonic()
            body = {"session": session.session, "tasks": self.held_task_ids()}
            try:
                answer = await self.call(
                    "/v1/worker/heartbeat", body, read_timeout=max(1.0, session.lease_interval_s)
                )
            except TasktapeError as error:
                if self.session_unknown(error):
                    self.session_lost(session.epoch, "heartbeat answered session_unknown")
                else:
                    log.warning("heartbeat failed: %s", error)
                continue
            if self.session is not session:
                continue
            self.last_heartbeat_ok = max(self.last_heartbeat_ok, sent_at)
            for task_id in (answer or {}).get("stop", []):
                run = self.runs.get(task_id)
                if run is not None:
                    self.abandon(run, "lost")

    async def _watchdog(self) -> None:
        while True:
            await asyncio.sleep(0.2)
            session = self.session
            if session is None or not self.session_ready.is_set():
                continue
            if time.monotonic() - self.last_heartbeat_ok >= session.lease_ttl_s:
                self.session_lost(session.epoch, "no heartbeat succeeded for lease_ttl_ms")

    async def _signals(self) -> None:
        backoff = Backoff(cap=2.0)
        while True:
            await self.session_ready.wait()
            session = self.session
            assert session is not None
            try:
                await self._read_signals(session)
                backoff.reset()
            except TasktapeError as error:
                if self.session_unknown(error):
                    self.session_lost(session.epoch, "signals answered session_unknown")
                    continue
                log.warning("signal stream: %s", error)
            self.signals_connected.clear()
            await asyncio.sleep(backoff.next())

    async def _read_signals(self, session: Session) -> None:
        timeout = httpx.Timeout(self.http.timeout.connect, read=45.0, write=10.0, pool=10.0)
        path = "/v1/worker/signals"
        try:
            async with self.http.stream(
                "GET",
                path,
                params={"session": session.session},
                headers={"Accept": "text/event-stream"},
                timeout=timeout,
            ) as response:
                if response.status_code != 200:
                    await response.aread()
                    raise TasktapeError.from_response(response)
                decoder = SseDecoder()
                async for line in response.aiter_lines():
                    message = decoder.feed(line)
                    if message is not None and self.session is session:
                        self._signal(message.event, message.data)
        except httpx.TransportError as error:
            raise TasktapeError.from_transport(error, f"GET {path}") from error

    def _signal(self, event: str, data: str) -> None:
        try:
            body = json.loads(data) if data else {}
        except ValueError:
            body = {}
        task_id = body.get("task_id") if isinstance(body, dict) else None
        if event == "ready":
            self.signals_connected.set()
        elif event == "cancel" and isinstance(task_id, str):
            run = self.runs.get(task_id)
            if run is None:
                self._early_cancels.append(task_id)
            else:
                self.cancel(run, "cancel")
        elif event == "stop" and isinstance(task_id, str):
            run = self.runs.get(task_id)
            if run is not None:
                self.abandon(run, "lost")
        elif event == "drain":
            log.info("the server asked this worker to drain")
            self.request_stop()

    # -- stopping -------------------------------------------------------------

    def request_stop(self, hurry: bool = False) -> None:
        """Begins the drain; a second request (or `hurry`) skips the wait."""
        if self.stop_requested.is_set() or hurry:
            self.hurry.set()
        self.stop_requested.set()
        self.slot_freed.set()

    async def _wait_idle(self, limit: float) -> None:
        deadline = time.monotonic() + limit
        while any(run.active for run in self.runs.values()):
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self.slot_freed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.slot_freed.wait(), min(left, 0.5))

    async def _flush(self, limit: float) -> None:
        deadline = time.monotonic() + limit
        while (self.reporter.pending() or any(r.state == "done" for r in self.runs.values())) and (
            time.monotonic() < deadline
        ):
            if not self.session_ready.is_set():
                return
            await asyncio.sleep(0.05)

    async def shutdown(self) -> None:
        """The drain (see the module docs), then everything is closed."""
        self.draining = True
        self.slot_freed.set()
        session = self.session if self.session_ready.is_set() else None
        if session is not None and self.fatal is None:
            with contextlib.suppress(TasktapeError):
                await self.call("/v1/worker/drain", {"session": session.session}, read_timeout=5)
        claims = self._loops[0] if self._loops else None
        if claims is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(claims), 5.0)
            claims.cancel()
        if not self.hurry.is_set():
            waiting = asyncio.ensure_future(self._wait_idle(self.config.drain_timeout))
            hurried = asyncio.ensure_future(self.hurry.wait())
            await asyncio.wait({waiting, hurried}, return_when=asyncio.FIRST_COMPLETED)
            waiting.cancel()
            hurried.cancel()
        for run in list(self.runs.values()):
            if run.active:
                self.cancel(run, "drain")
        await self._wait_idle(self.grace() + 0.5)
        if self.fatal is None:
            await self._flush(10.0)
        session = self.session if self.session_ready.is_set() else None
        if session is not None and self.fatal is None:
            with contextlib.suppress(TasktapeError):
                await self.call(
                    "/v1/worker/deregister", {"session": session.session}, read_timeout=5
                )
        await self.close()

    async def close(self) -> None:
        for task in self._loops:
            task.cancel()
        if self._reregistering is not None:
            self._reregistering.cancel()
        for task in [*self._loops, *([self._reregistering] if self._reregistering else [])]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for run in list(self.runs.values()):
            run.kill_now()
        await self.http.aclose()
