"""The worker's one sender: events and finishes of all runs, in order, in
batches, to `POST /v1/worker/report`.

Entries wait in `outbox` in the order they were made. The sender takes a
prefix as a batch (one item per task: that task's events in order, then its
finish), within `max_batch` items, `max_batch` events and a byte budget;
retries a batch that got no answer (the same batch first, so order holds;
each item's `offset`, its first event's number in the run, lets the server
skip what it wrote from a batch whose answer was lost);
on a 413 splits it (a lone event too large becomes a warning log line); on
a 422 gives up the item the server names; and stops a run whose item is
refused (`ok: false`: `lease_lost`, `task_ended`, `unknown_task`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._errors import TasktapeError
from ._runs import Run
from ._session import Backoff

if TYPE_CHECKING:
    from ._engine import Engine

__all__ = ["Reporter"]

log = logging.getLogger("tasktape.worker")

#: Bytes of JSON one report batch aims to stay under (the server's default
#: body limit is 1 MiB); halved after a 413.
BATCH_BYTES = 512 * 1024


@dataclass
class _Entry:
    """One queued event or finish of a run, with its JSON size."""

    run: Run
    event: dict[str, Any] | None = None
    finish: dict[str, Any] | None = None
    size: int = 0
    #: The event's number among its run's events, from 0.
    ordinal: int = 0


class Reporter:
    """The outbox and its sender loop (see the module docs)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.outbox: deque[_Entry] = deque()
        self.ready = asyncio.Event()
        self.batch_bytes = BATCH_BYTES
        self._in_flight = 0

    def add_event(self, run: Run, body: dict[str, Any]) -> None:
        ordinal = run.events_queued
        run.events_queued += 1
        self._add(_Entry(run, event=body, size=len(json.dumps(body)) + 1, ordinal=ordinal))

    def add_finish(self, run: Run, finish: dict[str, Any]) -> None:
        self._add(_Entry(run, finish=finish, size=len(json.dumps(finish)) + 64))

    def _add(self, entry: _Entry) -> None:
        self.outbox.append(entry)
        self.ready.set()

    def forget(self, run: Run) -> None:
        """Drops what waits for `run` (it was given up)."""
        kept = [entry for entry in self.outbox if entry.run is not run]
        if len(kept) != len(self.outbox):
            self.outbox = deque(kept)

    def clear(self) -> None:
        self.outbox.clear()

    def pending(self) -> bool:
        """Whether anything waits or is being sent."""
        return bool(self.outbox) or self._in_flight > 0

    def take_batch(self, max_batch: int) -> list[_Entry]:
        batch: list[_Entry] = []
        tasks: set[str] = set()
        events = 0
        size = 0
        while self.outbox:
            entry = self.outbox[0]
            new_task = entry.run.task_id not in tasks
            if batch and (
                (new_task and len(tasks) >= max_batch)
                or (entry.event is not None and events >= max_batch)
                or size + entry.size > self.batch_bytes
            ):
                break
            self.outbox.popleft()
            batch.append(entry)
            tasks.add(entry.run.task_id)
            size += entry.size
            if entry.event is not None:
                events += 1
        return batch

    @staticmethod
    def items(batch: list[_Entry]) -> list[dict[str, Any]]:
        items: dict[str, dict[str, Any]] = {}
        for entry in batch:
            item = items.get(entry.run.task_id)
            if item is None:
                item = {"task_id": entry.run.task_id, "lease": entry.run.lease, "events": []}
                items[entry.run.task_id] = item
            if entry.event is not None:
                item.setdefault("offset", entry.ordinal)
                item["events"].append(entry.event)
            if entry.finish is not None:
                item["finish"] = entry.finish
        return list(items.values())

    async def run(self) -> None:
        """The sender loop (see the module docs)."""
        engine = self.engine
        backoff = Backoff()
        batch: list[_Entry] = []
        while True:
            await engine.session_ready.wait()
            session = engine.session
            assert session is not None
            batch = [entry for entry in batch if entry.run.state != "abandoned"]
            self._in_flight = len(batch)
            if not batch:
                if not self.outbox:
                    self.ready.clear()
                    await self.ready.wait()
                    continue
                batch = self.take_batch(session.max_batch)
                self._in_flight = len(batch)
            items = self.items(batch)
            try:
                answer = await engine.call(
                    "/v1/worker/report", {"session": session.session, "items": items}
                )
            except TasktapeError as error:
                if engine.session is not session:
                    batch = []
                elif engine.session_unknown(error):
                    batch = []
                    engine.session_lost(session.epoch, "report answered session_unknown")
                elif error.status == 413:
                    batch = self._shrink(batch)
                elif error.status == 422:
                    batch = self._drop_refused(batch, items, error)
                elif error.retryable or error.status in (408, 429):
                    await asyncio.sleep(backoff.next())
                else:
                    log.error("report refused, dropping %d items: %s", len(items), error)
                    for entry in batch:
                        engine.abandon(entry.run, "lost")
                    batch = []
                continue
            backoff.reset()
            self._answers(batch, items, answer)
            batch = []

    def _shrink(self, batch: list[_Entry]) -> list[_Entry]:
        if len(batch) > 1:
            self.batch_bytes = max(4096, self.batch_bytes // 2)
            half = len(batch) // 2
            self.outbox.extendleft(reversed(batch[half:]))
            return batch[:half]
        entry = batch[0]
        if entry.event is not None:
            log.warning("task %s: an event too large for the server was dropped", entry.run.task_id)
            note = {
                "type": "log",
                "level": "warn",
                "message": f"tasktape: an event of {entry.size} bytes was too large; dropped",
                "ts": entry.event.get("ts"),
            }
            return [_Entry(entry.run, event=note, size=200, ordinal=entry.ordinal)]
        error = {"code": "result_too_large", "message": "the op's result was too large to report"}
        return [_Entry(entry.run, finish={"error": error}, size=200)]

    def _drop_refused(
        self, batch: list[_Entry], items: list[dict[str, Any]], error: TasktapeError
    ) -> list[_Entry]:
        found = re.search(r"items\[(\d+)\]", json.dumps([error.message, error.detail]))
        if found and int(found.group(1)) < len(items):
            task_id = items[int(found.group(1))]["task_id"]
            log.error("report item of task %s refused (%s); giving the task up", task_id, error)
            for entry in batch:
                if entry.run.task_id == task_id:
                    self.engine.abandon(entry.run, "lost")
            return [entry for entry in batch if entry.run.task_id != task_id]
        log.error("report refused (%s); dropping the batch", error)
        for entry in batch:
            self.engine.abandon(entry.run, "lost")
        return []

    def _answers(self, batch: list[_Entry], items: list[dict[str, Any]], answer: Any) -> None:
        answers = (answer or {}).get("items", [])
        by_task = {entry.run.task_id: entry.run for entry in batch}
        finished = {item["task_id"] for item in items if "finish" in item}
        for reply in answers:
            run = by_task.get(reply.get("task_id"))
            if run is None:
                continue
            if reply.get("ok"):
                if run.task_id in finished and run.state == "done":
                    self.engine.runs.pop(run.task_id, None)
            else:
                log.warning(
                    "task %s taken from this worker (%s: %s)",
                    run.task_id,
                    reply.get("code"),
                    reply.get("message"),
                )
                self.engine.abandon(run, "lost")
