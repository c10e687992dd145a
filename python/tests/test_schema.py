"""Params schemas from type hints, and the op decorator's checks (no server)."""

from __future__ import annotations

from typing import Any, Literal, Optional

import pytest

from tasktape import Permanent, Task, Worker


def make() -> Worker:
    return Worker("http://127.0.0.1:9", id="schema-test")


def test_hints_become_a_schema() -> None:
    worker = make()

    @worker.op("resize", max_attempts=3)
    def resize(
        task: Task,
        src: str,
        width: int = 800,
        scale: float = 1.0,
        sharpen: bool = False,
        names: list[str] | None = None,
        extra: dict[str, Any] | None = None,
        mode: Literal["fast", "good"] = "fast",
        note: Optional[str] = None,  # noqa: UP045 - the old spelling works too
        anything: Any = None,
    ) -> dict[str, int]:
        """Resize the images in a folder.

        More words.
        """
        return {}

    spec = worker.ops["resize"]
    assert spec.description == "Resize the images in a folder."
    assert spec.retry == {"max_attempts": 3}
    assert spec.runner == "thread"
    assert spec.schema == {
        "type": "object",
        "properties": {
            "src": {"type": "string"},
            "width": {"type": "integer", "default": 800},
            "scale": {"type": "number", "default": 1.0},
            "sharpen": {"type": "boolean", "default": False},
            "names": {"type": ["array", "null"], "items": {"type": "string"}, "default": None},
            "extra": {"type": ["object", "null"], "default": None},
            "mode": {"enum": ["fast", "good"], "type": "string", "default": "fast"},
            "note": {"type": ["string", "null"], "default": None},
            "anything": {"default": None},
        },
        "required": ["src"],
        "additionalProperties": False,
    }
    declaration = spec.declaration()
    assert declaration["name"] == "resize"
    assert declaration["params_schema"] is spec.schema
    assert declaration["timeout_ms"] is None
    assert declaration["idempotent"] is False


def test_explicit_schema_async_and_options() -> None:
    worker = make()
    schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 1}}}

    @worker.op("count", schema=schema, concurrency=2, timeout=1.5, idempotent=True)
    async def count(task: Task, **params: Any) -> int:
        return 1

    spec = worker.ops["count"]
    assert spec.schema == schema
    assert spec.runner == "async"
    assert spec.declaration()["timeout_ms"] == 1500
    assert spec.declaration()["concurrency"] == 2
    assert spec.declaration()["idempotent"] is True

    @worker.op(retry={"max_attempts": 5, "backoff": "fixed"})
    def other_op(task: Task, **params: Any) -> None:
        return None

    assert worker.ops["other_op"].retry == {"max_attempts": 5, "backoff": "fixed"}
    assert worker.ops["other_op"].schema["additionalProperties"] is True


def test_mistakes_fail_at_decoration() -> None:
    worker = make()

    with pytest.raises(ValueError, match="op name"):
        worker.op("Bad Name")(lambda task: None)

    with pytest.raises(TypeError, match="schema="):

        @worker.op("tuple")
        def takes_tuple(task: Task, pair: tuple[int, int]) -> None:
            return None

    with pytest.raises(ValueError, match="differ"):
        worker.op("x", max_attempts=2, retry={"max_attempts": 3})(lambda task: None)

    def local(task: Task) -> None:
        return None

    with pytest.raises(ValueError, match="module-level"):
        worker.op("local", isolation="process")(local)

    worker.op("once")(local)
    with pytest.raises(ValueError, match="twice"):
        worker.op("once")(local)

    with pytest.raises(ValueError, match="worker id"):
        Worker("http://127.0.0.1:9", id="has space")


def test_permanent_carries_code_and_detail() -> None:
    error = Permanent("bad input", code="bad_input", detail={"field": "src"})
    assert isinstance(error, Exception)
    assert (error.code, error.message, error.detail) == ("bad_input", "bad input", {"field": "src"})


def test_default_worker_id_is_host_and_program() -> None:
    worker = Worker("http://127.0.0.1:9")
    host, _, program = worker.id.partition(":")
    assert host
    assert program
