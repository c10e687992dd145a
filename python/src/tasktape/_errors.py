"""The one exception the package raises for anything a call could not do.

`TasktapeError` carries the server's error envelope
(`{"error": {"code", "message", "detail"}}`) with the HTTP status and the
response attached; failures that never reached an answer (the server cannot
be reached, a time limit passed, a body that is not what the API promises)
are the same type with `status` `None` and a client-side `code`.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

__all__ = ["TasktapeError"]


class TasktapeError(Exception):
    """A call to the server failed.

    Attributes:
        code: the server's error code (`not_found`, `invalid_request`,
            `unauthorized`, `session_unknown`, …), or one of the client's own
            for failures without an answer: `connect_error` (the server cannot
            be reached), `timeout` (a network time limit passed),
            `transport_error` (the connection broke), `invalid_response` (a
            body that is not the API's), `wait_timeout` (`Client.wait` gave
            up; the task goes on).
        message: a readable sentence.
        detail: the envelope's `detail` (any JSON), or `None`.
        status: the HTTP status, or `None` when no answer came.
        response: the `httpx.Response`, when there was one.
    """

    code: str
    message: str
    detail: Any
    status: int | None
    response: httpx.Response | None

    def __init__(
        self,
        code: str,
        message: str,
        *,
        detail: Any = None,
        status: int | None = None,
        response: httpx.Response | None = None,
    ) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message
        self.detail = detail
        self.status = status
        self.response = response

    def __str__(self) -> str:
        where = f"{self.status} " if self.status is not None else ""
        text = f"{where}{self.code}: {self.message}"
        if self.detail is not None:
            text += f" ({json.dumps(self.detail, default=str)})"
        return text

    def __repr__(self) -> str:
        return (
            f"TasktapeError(code={self.code!r}, message={self.message!r}, status={self.status!r})"
        )

    @property
    def retryable(self) -> bool:
        """Whether trying again later may succeed: no answer, or a 502/503/504."""
        if self.status is None:
            return self.code in ("connect_error", "timeout", "transport_error")
        return self.status in (502, 503, 504)

    @classmethod
    def from_response(cls, response: httpx.Response) -> TasktapeError:
        """The error a non-2xx response stands for (its envelope when it has one)."""
        try:
            body = response.json()
        except (ValueError, UnicodeDecodeError):
            body = None
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            error = body["error"]
            code = error.get("code")
            message = error.get("message")
            if isinstance(code, str) and isinstance(message, str):
                return cls(
                    code,
                    message,
                    detail=error.get("detail"),
                    status=response.status_code,
                    response=response,
                )
        text = response.text[:500] if response.content else ""
        return cls(
            f"http_{response.status_code}",
            f"{response.request.method} {response.request.url.path} answered "
            f"{response.status_code} {response.reason_phrase}" + (f": {text}" if text else ""),
            status=response.status_code,
            response=response,
        )

    @classmethod
    def from_transport(cls, error: httpx.TransportError, what: str) -> TasktapeError:
        """The error for a request that got no answer (`what` names the request)."""
        if isinstance(error, httpx.TimeoutException):
            code = "timeout"
            message = f"{what}: no answer in time ({type(error).__name__})"
        elif isinstance(error, httpx.ConnectError):
            code = "connect_error"
            message = f"{what}: cannot connect ({error})"
        else:
            code = "transport_error"
            message = f"{what}: {type(error).__name__}: {error}"
        failure = cls(code, message)
        failure.__cause__ = error
        return failure

    @classmethod
    def invalid_response(cls, response: httpx.Response, reason: str) -> TasktapeError:
        """The error for a 2xx body that is not what the API promises."""
        request = response.request
        return cls(
            "invalid_response",
            f"{request.method} {request.url.path}: {reason}",
            status=response.status_code,
            response=response,
        )
