"""tasktape: a client and a remote worker for a tasktape server.

tasktape is a durable background-task server: submit work, get an id at
once, follow its ordered event tape live (long-poll or Server-Sent Events),
cancel it, and find the outcome after restarts. This package speaks its
HTTP API; its one dependency is `httpx`.

Clients (`Client`, and `AsyncClient` with the same methods as coroutines):

    from tasktape import Client
    with Client("http://127.0.0.1:8765", token=None) as client:
        handle = client.submit("echo", {"count": 3})
        for event in client.follow(handle.task_id):   # SSE, resumed after drops
            print(event.seq, event.type, event.data)
        row = client.wait(handle.task_id, timeout=60)

Workers serve ops from any process that can reach the server:

    from tasktape import Worker, Permanent
    worker = Worker("http://127.0.0.1:8765", concurrency=8)

    @worker.op("resize", max_attempts=3)    # every attempt counted
    def resize(task, src: str, width: int = 800) -> dict:
        '''Resize the images in a folder.'''   # the op's description
        files = sorted(os.listdir(src))
        for i, name in enumerate(files, 1):
            task.raise_if_cancelled()
            task.progress("resize", i, len(files), detail={"file": name})
        return {"resized": len(files)}

    if __name__ == "__main__":
        worker.run()   # until SIGTERM/SIGINT, then drain

Public names:

- `Client`, `AsyncClient`: every task route (submit, get, list, events,
  follow, wait, cancel, delete, bulk_cancel, bulk_retry, ops, info).
- `TasktapeError`: the one exception; the server's error envelope (`code`,
  `message`, `detail`) with `status` and `response`.
- `TaskHandle`, `TaskRow`, `TaskPage`, `Event`, `EventsPage`,
  `CancelResult`, `BulkResult`, `OpInfo`, `ServerInfo`: what the API
  answers, as frozen dataclasses. `RetryPolicy`: the retry object's type.
- `Worker`: declares ops (`@worker.op`) and serves them.
- `Task`: the handle an op gets (progress, log, partial, cancelled).
- `Permanent`: raise it to fail a task without retry. `Cancelled`: what
  `Task.raise_if_cancelled()` raises.

Importing the package does nothing else: no threads, no connections, no
global state.
"""

from ._async_client import AsyncClient
from ._client import Client
from ._errors import TasktapeError
from ._models import (
    BulkResult,
    CancelResult,
    Event,
    EventsPage,
    OpInfo,
    RetryPolicy,
    ServerInfo,
    TaskHandle,
    TaskPage,
    TaskRow,
)
from ._task import Cancelled, Permanent, Task
from ._version import __version__
from ._worker import Worker

__all__ = [
    "Client",
    "AsyncClient",
    "TasktapeError",
    "TaskHandle",
    "TaskRow",
    "TaskPage",
    "Event",
    "EventsPage",
    "CancelResult",
    "BulkResult",
    "OpInfo",
    "ServerInfo",
    "RetryPolicy",
    "Worker",
    "Task",
    "Permanent",
    "Cancelled",
    "__version__",
]
