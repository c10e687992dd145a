"""An op as the worker declares and runs it: `OpSpec`.

Built by `Worker.op`; `declaration()` is the op's entry in
`POST /v1/worker/register`. Checks what can be checked locally (the name,
the limits, the isolation) so mistakes fail at decoration time.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ._schema import params_schema

__all__ = ["Isolation", "OpSpec", "make_spec"]

Isolation = Literal["thread", "process"]

_NAME = re.compile(r"^[a-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class OpSpec:
    """One op: its function, how it runs, and what the server is told."""

    name: str
    function: Callable[..., Any]
    description: str
    schema: dict[str, Any]
    concurrency: int | None
    retry: dict[str, Any] | None
    idempotent: bool
    timeout: float | None
    #: "async" (an `async def` on the worker's loop), "thread" or "process".
    runner: Literal["async", "thread", "process"]

    @property
    def is_coroutine(self) -> bool:
        return inspect.iscoroutinefunction(self.function)

    def declaration(self) -> dict[str, Any]:
        """The op's entry in a registration."""
        return {
            "name": self.name,
            "description": self.description,
            "params_schema": self.schema,
            "concurrency": self.concurrency,
            "retry": self.retry,
            "idempotent": self.idempotent,
            "timeout_ms": None if self.timeout is None else max(1, round(self.timeout * 1000)),
        }


def _first_doc_line(function: Callable[..., Any]) -> str:
    doc = inspect.getdoc(function) or ""
    for line in doc.splitlines():
        if line.strip():
            return line.strip()
    return ""


def make_spec(
    function: Callable[..., Any],
    *,
    name: str | None,
    description: str | None,
    schema: Mapping[str, Any] | None,
    concurrency: int | None,
    max_attempts: int | None,
    retry: Mapping[str, Any] | None,
    idempotent: bool,
    timeout: float | None,
    isolation: Isolation | None,
) -> OpSpec:
    """Checks a decorator's options and makes the op's spec."""
    op_name = name if name is not None else function.__name__.lower()
    if not _NAME.match(op_name):
        raise ValueError(f"op name {op_name!r}: use 1-64 characters of a-z, 0-9, '_' and '-'")
    if concurrency is not None and not 1 <= concurrency <= 10000:
        raise ValueError(f"op {op_name!r}: concurrency must be 1 to 10000")
    policy: dict[str, Any] | None = dict(retry) if retry is not None else None
    if max_attempts is not None:
        if not 1 <= max_attempts <= 100:
            raise ValueError(f"op {op_name!r}: max_attempts must be 1 to 100")
        if policy is None:
            policy = {"max_attempts": max_attempts}
        elif policy.get("max_attempts", max_attempts) != max_attempts:
            raise ValueError(f"op {op_name!r}: max_attempts and retry['max_attempts'] differ")
        else:
            policy["max_attempts"] = max_attempts
    if policy is not None and "max_attempts" not in policy:
        raise ValueError(f"op {op_name!r}: a retry policy needs max_attempts")
    if timeout is not None and timeout <= 0:
        raise ValueError(f"op {op_name!r}: timeout must be positive (seconds)")
    coroutine = inspect.iscoroutinefunction(function)
    runner: Literal["async", "thread", "process"]
    if isolation is None:
        runner = "async" if coroutine else "thread"
    elif isolation == "process":
        runner = "process"
        if "<locals>" in function.__qualname__ or function.__name__ == "<lambda>":
            raise ValueError(
                f"op {op_name!r}: isolation='process' needs a module-level function "
                "(the child process finds it by its module and name)"
            )
    elif isolation == "thread":
        if coroutine:
            raise ValueError(f"op {op_name!r}: an async def op runs on the worker's event loop")
        runner = "thread"
    else:
        raise ValueError(f"op {op_name!r}: isolation must be 'thread' or 'process'")
    if schema is None:
        params = params_schema(function, op_name)
    else:
        params = dict(schema)
        if params.get("type", "object") != "object":
            raise ValueError(f"op {op_name!r}: the params schema must describe an object")
    return OpSpec(
        name=op_name,
        function=function,
        description=description if description is not None else _first_doc_line(function),
        schema=params,
        concurrency=concurrency,
        retry=policy,
        idempotent=idempotent,
        timeout=timeout,
        runner=runner,
    )
