"""A client generated from tasktape's /openapi.json by openapi-python-client,
used as a Python user would: submit, poll to succeeded, read the events page
and the result, cancel a long task, list by status, a bulk cancel, with and
without the token. Run with the generated package importable as `pyclient`
and TASKTAPE_URL / TASKTAPE_TOKEN set."""

import datetime
import os
import time
from typing import Any, Callable, TypeVar

from pyclient import AuthenticatedClient, Client
from pyclient.api.probes import healthz
from pyclient.api.server import info
from pyclient.api.tasks import (
    bulk_cancel,
    cancel_task,
    get_events,
    get_result,
    get_task,
    list_tasks,
    submit_named,
    submit_task,
)
from pyclient.models import (
    ErrorEnvelope,
    EventsPage,
    FinalEvent,
    ProgressEvent,
    Status,
    SubmitNamedBody,
    Submission,
    TaskFilter,
    TaskHandle,
    TaskPage,
    TaskRow,
)

T = TypeVar("T")
URL = os.environ["TASKTAPE_URL"]
client = AuthenticatedClient(base_url=URL, token=os.environ["TASKTAPE_TOKEN"])
anonymous = Client(base_url=URL)


def until(what: str, read: Callable[[], T | None]) -> T:
    deadline = time.monotonic() + 20
    while True:
        value = read()
        if value is not None:
            return value
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def row(task_id: Any) -> TaskRow:
    answer = get_task.sync(task_id, client=client)
    assert isinstance(answer, TaskRow), answer
    return answer


# The probes need no token; the rest does.
assert healthz.sync(client=anonymous) is not None
refused = list_tasks.sync_detailed(client=anonymous)
assert refused.status_code == 401 and isinstance(refused.parsed, ErrorEnvelope), refused
assert refused.parsed.error.code == "unauthorized"

# Submit with any params, poll to succeeded.
body = SubmitNamedBody.from_dict({"count": 3})
handle = submit_named.sync("echo", client=client, body=body)
assert isinstance(handle, TaskHandle), handle
until("succeeded", lambda: True if row(handle.task_id).status == Status.SUCCEEDED else None)

# The events page: one typed class per event type.
page = get_events.sync(handle.task_id, client=client, from_seq=0)
assert isinstance(page, EventsPage), page
progress = [event for event in page.events if isinstance(event, ProgressEvent)]
assert [event.current for event in progress] == [1, 2, 3], page.events
assert isinstance(page.events[-1], FinalEvent) and page.events[-1].status == Status.SUCCEEDED
result = get_result.sync(handle.task_id, client=client)
assert result is not None and not isinstance(result, ErrorEnvelope), result

# A long task cancelled; a delayed one with an offset time; list by status.
long = submit_task.sync(
    client=client, body=Submission(op="echo", params={"count": 1000, "delay_ms": 100})
)
assert isinstance(long, TaskHandle), long
cancelled = cancel_task.sync(long.task_id, client=client)
assert cancelled is not None and not isinstance(cancelled, ErrorEnvelope) and cancelled.cancelled
until("cancelled", lambda: True if row(long.task_id).status == Status.CANCELLED else None)
later = datetime.datetime.now(datetime.timezone(datetime.timedelta(hours=2))) + datetime.timedelta(hours=1)
delayed = submit_task.sync(client=client, body=Submission(op="echo", params={}, run_at=later))
assert isinstance(delayed, TaskHandle) and delayed.status == Status.PENDING, delayed
listed = list_tasks.sync(client=client, status=Status.CANCELLED, limit=10)
assert isinstance(listed, TaskPage), listed
assert any(task.task_id == long.task_id for task in listed.tasks)

# A bulk cancel.
bulk = bulk_cancel.sync(client=client, body=TaskFilter(ids=[delayed.task_id]))
assert bulk is not None and not isinstance(bulk, ErrorEnvelope) and bulk.cancelled == 1, bulk
server = info.sync(client=client)
assert server is not None and not isinstance(server, ErrorEnvelope) and server.engine == "tasktape"
print("python client: ok")
