"""A Server-Sent Events decoder fed line by line (no I/O here).

The task stream (`/v1/tasks/{id}/events/stream`) and the worker's signal
stream (`/v1/worker/signals`) both use it; the callers own the connection.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SseDecoder", "SseMessage"]


@dataclass(frozen=True)
class SseMessage:
    """One dispatched event: its `event:` name (default `message`), its data
    lines joined by newlines, and its `id:` (or `None`)."""

    event: str
    data: str
    id: str | None


class SseDecoder:
    """Turns the lines of an event stream into messages.

    `feed(line)` takes one line without its line ending and returns the
    message that an empty line completes, else `None`. Comment lines (`:
    ping`) are ignored, as are fields other than `event`, `data` and `id`.
    """

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None
        self._has_fields = False

    def feed(self, line: str) -> SseMessage | None:
        if line == "":
            if not self._has_fields:
                return None
            message = SseMessage(self._event or "message", "\n".join(self._data), self._id)
            self._event, self._data, self._id, self._has_fields = "", [], None, False
            return message
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            if "\0" not in value:
                self._id = value
        else:
            return None
        self._has_fields = True
        return None
