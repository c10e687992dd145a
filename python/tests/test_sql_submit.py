"""`submit()` in SQL (PostgreSQL only) from a Python application with
psycopg: the task exists if and only if the application's transaction
commits, then runs like any other, here on a Python worker; the submit
rules refuse bad input naming the field; a repeated key answers the same
task; params the op's schema refuses fail the task at its claim."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from conftest import POSTGRES_URL, Server, WorkerFactory
from psycopg.types.json import Jsonb

from tasktape import Client, Task

pytestmark = pytest.mark.skipif(not POSTGRES_URL, reason="needs TASKTAPE_TEST_POSTGRES_URL")


@pytest.fixture(scope="session")
def store() -> str:
    """This module's servers run on PostgreSQL only (`submit()` is its)."""
    return "postgres"


def greet(task: Task, name: str, times: int = 1) -> dict[str, str]:
    """Greets someone, `times` times."""
    return {"greeting": " ".join([f"hello {name}"] * times)}


def schema_of(server: Server) -> str:
    return (server.data_dir / "pg_schema.txt").read_text()


def test_submit_in_sql_commits_with_the_transaction(
    workers: WorkerFactory, worker_server: Server
) -> None:
    schema = schema_of(worker_server)
    worker = workers()
    worker.op("greet")(greet)
    worker.start()
    submit = f'SELECT "{schema}".submit(%s, %s, %s)'
    with psycopg.connect(POSTGRES_URL, autocommit=False) as db, Client(worker_server.url) as client:
        # Rolled back with the application's own transaction: no task.
        def fails() -> None:
            with db.transaction():
                db.execute(submit, ("greet", Jsonb({"name": "nobody"}), "order-0"))
                raise RuntimeError("the application's transaction fails")

        with pytest.raises(RuntimeError):
            fails()
        # Committed: the worker runs it.
        with db.transaction():
            row = db.execute(submit, ("greet", Jsonb({"name": "ada", "times": 2}), "order-1"))
            first = row.fetchone()
        assert first is not None
        task_id = str(first[0])
        done = client.wait(task_id, timeout=20)
        assert done.status == "succeeded", done
        assert done.result == {"greeting": "hello ada hello ada"}
        assert [task.task_id for page in client.list(op="greet") for task in page] == [task_id]
        # A repeated key: the same task.
        with db.transaction():
            again = db.execute(submit, ("greet", Jsonb({"name": "ada"}), "order-1")).fetchone()
        assert again is not None
        assert str(again[0]) == task_id
        # Refused at once, naming the field.
        with (
            db.transaction(force_rollback=True) as refused,
            pytest.raises(psycopg.errors.InvalidParameterValue) as caught,
        ):
            refused.connection.execute(submit, ("no_such_op", Jsonb({}), None))
        assert "op: no_such_op is not served" in str(caught.value)
        # The op's schema refuses the params: failed at the claim.
        with db.transaction():
            bad = db.execute(submit, ("greet", Jsonb({"times": 2}), f"bad-{uuid.uuid4()}"))
            bad_row = bad.fetchone()
        assert bad_row is not None
        bad_id = str(bad_row[0])
        failed = client.wait(bad_id, timeout=20)
        assert failed.status == "failed"
        assert failed.error is not None
        assert failed.error["code"] == "invalid_request", failed.error
        assert "name" in failed.error["message"], failed.error
