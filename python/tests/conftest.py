"""Fixtures: a real `tasktape serve` on a free port (SQLite, and PostgreSQL
when `TASKTAPE_TEST_POSTGRES_URL` is set), and clients for it.

The binary is `TASKTAPE_BIN` (default: the workspace's
`target/debug/tasktape`). The server is started with `--listen
127.0.0.1:0`; its address is read from its `listening on http://…` log
line, and its stderr is read to the end by a thread so the pipe never
fills. Each server is stopped with SIGTERM at the end of its fixture.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import tasktape

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("TASKTAPE_BIN", str(ROOT / "target" / "debug" / "tasktape")))
POSTGRES_URL = os.environ.get("TASKTAPE_TEST_POSTGRES_URL", "")
STORES = ["sqlite", "postgres"] if POSTGRES_URL else ["sqlite"]
_ADDRESS = re.compile(r"listening on (https?://[A-Za-z0-9.:\[\]]+)")


class Server:
    """A running `tasktape serve` child."""

    def __init__(
        self,
        data_dir: Path,
        store: str,
        config: str = "",
        args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        listen: str = "127.0.0.1:0",
    ) -> None:
        if not BIN.exists():
            raise RuntimeError(f"no tasktape binary at {BIN}: build it or set TASKTAPE_BIN")
        self.data_dir = data_dir
        self.store = store
        data_dir.mkdir(parents=True, exist_ok=True)
        command = [str(BIN), "serve", "--listen", listen, "--data-dir", str(data_dir)]
        if store == "postgres":
            marker = data_dir / "pg_schema.txt"
            if not marker.exists():
                marker.write_text("pytest_" + uuid.uuid4().hex[:12])
            schema = marker.read_text()
            config = f'pg_schema = "{schema}"\n' + config
            command += ["--store", POSTGRES_URL, "--instance-id", f"py-{schema}"]
        if config:
            config_file = data_dir / "tasktape.toml"
            config_file.write_text(config)
            command += ["--config", str(config_file)]
        command += list(args)
        environment = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith("TASKTAPE_") or key == "TASKTAPE_BIN"
        }
        environment.update({"RUST_LOG": "info", "NO_COLOR": "1"})
        environment.update(env or {})
        self.lines: list[str] = []
        self._address: str | None = None
        self._announced = threading.Event()
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=environment,
            text=True,
            errors="replace",
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._announced.wait(60)
        address = self.address()
        if address is None:
            self.kill()
            raise RuntimeError("tasktape serve did not announce its address:\n" + self.log_tail())
        self.url: str = address

    def address(self) -> str | None:
        return self._address

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))
            if self._address is None:
                found = _ADDRESS.search(line)
                if found:
                    self._address = found.group(1)
                    self._announced.set()
        self._announced.set()

    def log_tail(self, count: int = 60) -> str:
        return "\n".join(self.lines[-count:])

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._reader.join(5)
        return self.process.returncode

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


ServerFactory = Callable[..., Server]


@pytest.fixture(scope="session", params=STORES)
def store(request: pytest.FixtureRequest) -> str:
    """The store the servers of a test use: `sqlite`, and `postgres` when
    `TASKTAPE_TEST_POSTGRES_URL` is set."""
    value: str = request.param
    return value


@pytest.fixture(scope="module")
def server(store: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for a test module."""
    running = Server(tmp_path_factory.mktemp("server"), store)
    yield running
    running.stop()


@pytest.fixture
def make_server(store: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerFactory]:
    """Starts servers with a config file's text and extra flags; all are
    stopped when the test ends."""
    started: list[Server] = []

    def make(
        config: str = "",
        args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        listen: str = "127.0.0.1:0",
        data_dir: Path | None = None,
    ) -> Server:
        directory = data_dir if data_dir is not None else tmp_path_factory.mktemp("server")
        running = Server(directory, store, config, args, env, listen)
        started.append(running)
        return running

    yield make
    for running in started:
        running.stop()


@pytest.fixture
def client(server: Server) -> Iterator[tasktape.Client]:
    with tasktape.Client(server.url, timeout=10) as opened:
        yield opened


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def eventually(
    condition: Callable[[], bool], timeout: float = 10.0, what: str = "the condition"
) -> None:
    """Waits until `condition()` holds, checking every 20 ms; fails after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not hold within {timeout} s")
        time.sleep(0.02)


#: A server config with short leases, for the worker tests (the worker's
#: session is judged by `lease_ttl_ms`, renewed every `lease_interval_ms`).
SHORT_LEASE = """
lease_ttl_ms = 2000
lease_interval_ms = 500
cancel_grace_ms = 1000
shutdown_timeout_secs = 3
"""


@pytest.fixture
def worker_server(make_server: ServerFactory) -> Server:
    """A server with short leases for worker tests."""
    return make_server(SHORT_LEASE)


WorkerFactory = Callable[..., tasktape.Worker]


@pytest.fixture
def workers(worker_server: Server) -> Iterator[WorkerFactory]:
    """Makes `Worker`s for `worker_server` (ids unique per test unless
    given); the started ones are stopped at the end."""
    made: list[tasktape.Worker] = []

    def make(**options: object) -> tasktape.Worker:
        options.setdefault("id", f"pytest-{uuid.uuid4().hex[:8]}")
        options.setdefault("url", worker_server.url)
        options.setdefault("drain_timeout", 5.0)
        worker = tasktape.Worker(**options)  # type: ignore[arg-type]
        made.append(worker)
        return worker

    yield make
    for worker in made:
        with contextlib.suppress(Exception):  # the test's own assertion says what failed
            worker.stop(timeout=20, drain=False)
