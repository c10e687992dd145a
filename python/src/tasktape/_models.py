"""Plain data the API answers with: task rows, tape events, pages.

Every class here is a frozen dataclass built from the server's JSON by its
`from_json` class method; fields the API may add later are kept in `raw`
(the object as it came), so nothing is lost. Timestamps are timezone-aware
`datetime`s in UTC.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal, TypedDict

__all__ = [
    "TERMINAL",
    "BulkResult",
    "CancelResult",
    "Event",
    "EventsPage",
    "OpInfo",
    "RetryPolicy",
    "ServerInfo",
    "TaskHandle",
    "TaskPage",
    "TaskRow",
    "format_time",
    "parse_time",
]

Status = Literal["pending", "running", "succeeded", "failed", "cancelled"]
"""A task's status; the last three are terminal."""

TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
"""The terminal statuses: a task in one of them never changes again."""


class _RetryRequired(TypedDict):
    max_attempts: int


class RetryPolicy(_RetryRequired, total=False):
    """A retry policy as the server takes it (in a submit or an op declaration).

    `max_attempts` counts every attempt, the first included (1–100);
    `backoff` is `"exponential"` (the default, ×2 per attempt) or `"fixed"`;
    `initial_ms` (default 1000) and `max_ms` (default 300000) bound the wait;
    `jitter` (default true) moves each wait by up to ±20 %.
    """

    backoff: Literal["exponential", "fixed"]
    initial_ms: int
    max_ms: int
    jitter: bool


def parse_time(text: str) -> datetime:
    """Reads an API timestamp (`2026-11-27T22:05:20.213Z`, or any RFC 3339 offset)."""
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def format_time(moment: datetime) -> str:
    """Writes a time as the API does: UTC, milliseconds, `Z` (naive means UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    moment = moment.astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _time_or_none(value: Any) -> datetime | None:
    return parse_time(value) if isinstance(value, str) else None


def _dict_or_none(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


@dataclass(frozen=True)
class TaskHandle:
    """What a submit answers: the new (or, for a repeated idempotency key,
    the original) task's id and where to find it."""

    task_id: str
    op: str
    status: str
    created_at: datetime
    links: dict[str, str] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> TaskHandle:
        return cls(
            task_id=body["task_id"],
            op=body["op"],
            status=body["status"],
            created_at=parse_time(body["created_at"]),
            links=dict(body.get("links") or {}),
            raw=dict(body),
        )


@dataclass(frozen=True)
class TaskRow:
    """A task as `GET /v1/tasks/{id}` shows it.

    List pages carry summary rows: the same fields with `result`, `error`
    and `params` left `None`. `error` is the error object (`code`,
    `message`, and whatever else the failure carried, e.g. `detail`).
    """

    task_id: str
    op: str
    status: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    params_digest: str
    result: Any = None
    error: dict[str, Any] | None = None
    attempt: int = 0
    max_attempts: int = 0
    run_at: datetime | None = None
    priority: int = 0
    retry_of: str | None = None
    params: Any = None
    metadata: dict[str, str] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def terminal(self) -> bool:
        """Whether the task has ended (succeeded, failed or cancelled)."""
        return self.status in TERMINAL

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> TaskRow:
        return cls(
            task_id=body["task_id"],
            op=body["op"],
            status=body["status"],
            created_at=parse_time(body["created_at"]),
            started_at=_time_or_none(body.get("started_at")),
            finished_at=_time_or_none(body.get("finished_at")),
            params_digest=body.get("params_digest", ""),
            result=body.get("result"),
            error=_dict_or_none(body.get("error")),
            attempt=int(body.get("attempt") or 0),
            max_attempts=int(body.get("max_attempts") or 0),
            run_at=_time_or_none(body.get("run_at")),
            priority=int(body.get("priority") or 0),
            retry_of=body.get("retry_of"),
            params=body.get("params"),
            metadata=dict(body.get("metadata") or {}),
            raw=dict(body),
        )


@dataclass(frozen=True)
class TaskPage:
    """One page of `GET /v1/tasks`, newest first. Iterating it gives its rows."""

    tasks: list[TaskRow]
    next_cursor: str | None
    has_more: bool

    def __iter__(self) -> Iterator[TaskRow]:
        return iter(self.tasks)

    def __len__(self) -> int:
        return len(self.tasks)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> TaskPage:
        return cls(
            tasks=[TaskRow.from_json(row) for row in body["tasks"]],
            next_cursor=body.get("next_cursor"),
            has_more=bool(body.get("has_more")),
        )


_ENVELOPE = ("type", "seq", "ts")


@dataclass(frozen=True)
class Event:
    """One event of a task's tape.

    `type` is `task_started`, `progress`, `log`, `partial` or `final`
    (`heartbeat` only on streams, never stored); `data` holds the body's
    other fields, which the properties below read by type (each is `None`
    on events of the other types):

    - `task_started`: `op`
    - `progress`: `phase`, `current`, `total` (0 = unknown), `detail`
    - `log`: `level`, `message`
    - `partial`: `kind`, `payload`
    - `final`: `status`, `result` (succeeded), `error` (failed)
    """

    type: str
    seq: int
    ts: datetime
    data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Event:
        return cls(
            type=body["type"],
            seq=int(body["seq"]),
            ts=parse_time(body["ts"]),
            data={key: value for key, value in body.items() if key not in _ENVELOPE},
        )

    def to_json(self) -> dict[str, Any]:
        """The event as the API writes it."""
        return {"type": self.type, **self.data, "seq": self.seq, "ts": format_time(self.ts)}

    def _text(self, key: str, kind: str) -> str | None:
        value = self.data.get(key) if self.type == kind else None
        return value if isinstance(value, str) else None

    @property
    def is_final(self) -> bool:
        """Whether this is the tape's last event."""
        return self.type == "final"

    @property
    def op(self) -> str | None:
        return self._text("op", "task_started")

    @property
    def phase(self) -> str | None:
        return self._text("phase", "progress")

    @property
    def current(self) -> int | None:
        return int(self.data["current"]) if self.type == "progress" else None

    @property
    def total(self) -> int | None:
        return int(self.data.get("total") or 0) if self.type == "progress" else None

    @property
    def detail(self) -> Any:
        return self.data.get("detail") if self.type == "progress" else None

    @property
    def level(self) -> str | None:
        return self._text("level", "log")

    @property
    def message(self) -> str | None:
        return self._text("message", "log")

    @property
    def kind(self) -> str | None:
        return self._text("kind", "partial")

    @property
    def payload(self) -> Any:
        return self.data.get("payload") if self.type == "partial" else None

    @property
    def status(self) -> str | None:
        return self._text("status", "final")

    @property
    def result(self) -> Any:
        return self.data.get("result") if self.type == "final" else None

    @property
    def error(self) -> dict[str, Any] | None:
        return _dict_or_none(self.data.get("error")) if self.type == "final" else None


@dataclass(frozen=True)
class EventsPage:
    """One page of `GET /v1/tasks/{id}/events`."""

    task_id: str
    task_status: str
    events: list[Event]
    next_from_seq: int
    has_more: bool
    last_seq: int

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> EventsPage:
        return cls(
            task_id=body["task_id"],
            task_status=body["task_status"],
            events=[Event.from_json(event) for event in body["events"]],
            next_from_seq=int(body["next_from_seq"]),
            has_more=bool(body["has_more"]),
            last_seq=int(body["last_seq"]),
        )


@dataclass(frozen=True)
class CancelResult:
    """What `POST /v1/tasks/{id}/cancel` answers."""

    task_id: str
    cancelled: bool
    already_terminal: bool

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> CancelResult:
        return cls(
            task_id=body["task_id"],
            cancelled=bool(body["cancelled"]),
            already_terminal=bool(body["already_terminal"]),
        )


@dataclass(frozen=True)
class BulkResult:
    """What a bulk cancel or retry answers: how many tasks matched the filter
    and how many were acted on (`cancelled` or `retried`)."""

    matched: int
    acted: int

    @classmethod
    def from_json(cls, body: Mapping[str, Any], key: str) -> BulkResult:
        return cls(matched=int(body["matched"]), acted=int(body[key]))


@dataclass(frozen=True)
class OpInfo:
    """An op the server runs (`GET /v1/ops`); `remote` ops are served by workers."""

    name: str
    description: str
    params_schema: dict[str, Any]
    remote: bool = False
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> OpInfo:
        return cls(
            name=body["name"],
            description=body.get("description") or "",
            params_schema=dict(body.get("params_schema") or {}),
            remote=bool(body.get("remote", False)),
            raw=dict(body),
        )


@dataclass(frozen=True)
class ServerInfo:
    """What `GET /v1/info` answers; other fields are in `raw`."""

    tasktape_version: str
    storage_backend: str
    auth_required: bool
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> ServerInfo:
        return cls(
            tasktape_version=body.get("tasktape_version", ""),
            storage_backend=body.get("storage_backend", ""),
            auth_required=bool(body.get("auth_required", False)),
            raw=dict(body),
        )
