"""`Worker`: serve ops for a tasktape server from this process.

Declare ops with the `Worker.op` decorator, then `run()` (blocking, drains
on SIGTERM/SIGINT), `await run_async()`, or `start()`/`stop()` (a background
thread, for tests and embedding). The protocol itself lives in `_engine`;
this module holds the declarations and the ways to run them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import re
import signal
import socket
import ssl
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from ._client import DEFAULT_URL
from ._engine import Engine, EngineConfig
from ._errors import TasktapeError
from ._models import RetryPolicy
from ._ops import Isolation, OpSpec, make_spec

__all__ = ["Worker", "default_worker_id"]

F = TypeVar("F", bound=Callable[..., Any])

_ID_CHARS = re.compile(r"[^A-Za-z0-9_.:@-]")


def default_worker_id() -> str:
    """This host's name and the program's (its script's stem): `host:program`."""
    program = Path(sys.argv[0]).stem if sys.argv and sys.argv[0] not in ("", "-c", "-") else ""
    if program in ("", "__main__"):
        program = "python"
    worker_id = _ID_CHARS.sub("_", f"{socket.gethostname()}:{program}")
    return worker_id[:128]


class Worker:
    """A remote worker: registers its ops with the server at `url`, claims
    their tasks and runs them, `concurrency` at most at once.

    Args:
        url: the server's base URL.
        token: a `worker` (or `admin`) token, when the server has tokens.
        id: the worker's id, stable across restarts (1–128 of
            `[A-Za-z0-9_.:@-]`); default `host:program`. Two processes
            serving at the same time need different ids.
        concurrency: the most tasks run at once (the registration's
            `capacity`).
        drain_timeout: seconds running ops get to finish after a drain
            begins; they are cancelled after it.
        timeout: seconds a network step may take (long-polls get more).
        verify: TLS verification, as for `Client`.

    Ops run by kind: an `async def` on the worker's event loop (a cancel
    cancels the coroutine at once); a plain function in a thread of its own
    (a cancel sets `task.cancelled`; one that ignores it past the server's
    grace is given up while its thread runs on); with
    `isolation="process"`, in a child process that a cancel, time limit or
    lost lease terminates (SIGTERM, then SIGKILL after the grace).
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        token: str | None = None,
        *,
        id: str | None = None,
        concurrency: int = 8,
        drain_timeout: float = 30.0,
        timeout: float = 30.0,
        verify: bool | str | ssl.SSLContext = True,
    ) -> None:
        if not 1 <= concurrency <= 10000:
            raise ValueError("concurrency must be 1 to 10000")
        worker_id = id if id is not None else default_worker_id()
        if not 1 <= len(worker_id.encode()) <= 128 or _ID_CHARS.search(worker_id):
            raise ValueError(f"worker id {worker_id!r}: use 1-128 characters of A-Za-z0-9_.:@-")
        self.url = url.rstrip("/")
        self.id = worker_id
        self.concurrency = concurrency
        self.drain_timeout = drain_timeout
        self._token = token
        self._timeout = timeout
        self._verify: Any = (
            ssl.create_default_context(cafile=verify) if isinstance(verify, str) else verify
        )
        self._ops: dict[str, OpSpec] = {}
        self._engine: Engine | None = None
        self._thread: threading.Thread | None = None
        self._thread_error: BaseException | None = None
        self._started = threading.Event()
        self._running = threading.Lock()

    @property
    def ops(self) -> Mapping[str, OpSpec]:
        """The declared ops by name."""
        return dict(self._ops)

    @property
    def registration(self) -> dict[str, Any] | None:
        """The server's answer to the current registration (`session`,
        `lease_ttl_ms`, `lease_interval_ms`, `cancel_grace_ms`, `max_batch`),
        or `None` while not registered."""
        engine = self._engine
        if engine is None or engine.session is None:
            return None
        return dict(engine.session.answer)

    def op(
        self,
        name: str | None = None,
        *,
        description: str | None = None,
        schema: Mapping[str, Any] | None = None,
        concurrency: int | None = None,
        max_attempts: int | None = None,
        retry: RetryPolicy | Mapping[str, Any] | None = None,
        idempotent: bool = False,
        timeout: float | None = None,
        isolation: Isolation | None = None,
    ) -> Callable[[F], F]:
        """Declares the decorated function as an op; the function is returned
        unchanged.

        It is called as `function(task, **params)`. Its params' JSON Schema
        comes from its type hints unless `schema` is given; `description`
        defaults to its docstring's first line. `concurrency` caps this op's
        runs on this worker; `max_attempts` (every attempt counted) or a whole
        `retry` policy sets how the server retries a failed attempt;
        `idempotent` lets it retry a run that was lost; `timeout` (seconds)
        is a time limit per run; `isolation` is `"thread"` (the default for
        plain functions) or `"process"`. The function's return value (JSON)
        is the task's result; an exception fails the attempt, `Permanent`
        without retry.
        """

        def register(function: F) -> F:
            spec = make_spec(
                function,
                name=name,
                description=description,
                schema=schema,
                concurrency=concurrency,
                max_attempts=max_attempts,
                retry=retry,
                idempotent=idempotent,
                timeout=timeout,
                isolation=isolation,
            )
            if spec.name in self._ops:
                raise ValueError(f"op {spec.name!r} is declared twice")
            self._ops[spec.name] = spec
            return function

        return register

    # -- running ----------------------------------------------------------

    async def run_async(self, *, handle_signals: bool = False) -> None:
        """Serves until drained: by `stop()`, the server's `drain` signal, or
        (with `handle_signals`, in the main thread) SIGTERM/SIGINT; a second
        signal stops without waiting for running ops. Raises `TasktapeError`
        when the registration is refused (e.g. 409 `op_conflict`, whose
        message and `detail` name the difference)."""
        if not self._ops:
            raise ValueError("declare at least one op with @worker.op before running")
        if not self._running.acquire(blocking=False):
            raise RuntimeError("this worker is already running")
        try:
            config = EngineConfig(
                url=self.url,
                token=self._token,
                worker_id=self.id,
                capacity=self.concurrency,
                drain_timeout=self.drain_timeout,
                timeout=self._timeout,
                verify=self._verify,
                ops=dict(self._ops),
            )
            engine = Engine(config)
            self._engine = engine
            loop = asyncio.get_running_loop()
            installed: list[signal.Signals] = []
            try:
                try:
                    registered = await engine.register_first()
                except BaseException:
                    await engine.close()
                    raise
                if not registered:
                    await engine.close()
                    return
                self._started.set()
                if handle_signals:
                    for signum in (signal.SIGTERM, signal.SIGINT):
                        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                            loop.add_signal_handler(signum, engine.request_stop)
                            installed.append(signum)
                engine.start_loops()
                await engine.stop_requested.wait()
                await engine.shutdown()
                if engine.fatal is not None:
                    raise engine.fatal
            finally:
                for signum in installed:
                    loop.remove_signal_handler(signum)
        finally:
            self._started.set()
            self._running.release()

    def run(self) -> None:
        """Serves until SIGTERM/SIGINT (then drains) or the server's drain;
        returns normally after the drain, so the program exits 0."""
        asyncio.run(
            self.run_async(handle_signals=threading.current_thread() is threading.main_thread())
        )

    def start(self, timeout: float = 30.0) -> None:
        """Runs the worker in a background thread and returns once it is
        registered (raises what the registration raised). Stop it with
        `stop()`; `with worker:` does both."""
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError("this worker is already running")
        self._started.clear()
        self._thread_error = None
        self._engine = None

        def main() -> None:
            try:
                asyncio.run(self.run_async())
            except BaseException as error:
                self._thread_error = error

        self._thread = threading.Thread(target=main, name=f"tasktape-worker-{self.id}", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout):
            self.stop(timeout=5)
            raise TasktapeError("timeout", f"the worker did not register within {timeout} s")
        if self.registration is None:
            # The registration failed: the thread is ending with its error.
            self._thread.join(10)
            error = self._take_thread_error()
            if error is not None:
                raise error
            raise TasktapeError("transport_error", "the worker ended before it registered")

    def stop(self, timeout: float | None = None, *, drain: bool = True) -> None:
        """Drains the worker started by `start()` (or `run()`, from another
        thread) and waits up to `timeout` seconds for it to end; with
        `drain=False` running ops are cancelled at once."""
        engine = self._engine
        if engine is not None:
            with contextlib.suppress(RuntimeError):
                engine.loop.call_soon_threadsafe(engine.request_stop, not drain)
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if not thread.is_alive():
                self._thread = None
                error = self._take_thread_error()
                if error is not None and not isinstance(error, asyncio.CancelledError):
                    raise error

    def _take_thread_error(self) -> BaseException | None:
        error, self._thread_error = self._thread_error, None
        return error

    def wait_signals_connected(self, timeout: float = 10.0) -> bool:
        """Waits until the signal stream is open (its `ready` came); for tests."""
        engine = self._engine
        if engine is None:
            return False
        future = asyncio.run_coroutine_threadsafe(engine.signals_connected.wait(), engine.loop)
        try:
            future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            return False
        return True

    def __enter__(self) -> Worker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop(timeout=self.drain_timeout + 30)
