"""Throughput and cancel latency of ONE Python worker process.

    cd /work/main   # (the repository)
    /tmp/pyvenv/bin/python python/bench/worker_bench.py                 # SQLite, every figure
    scripts/with-postgres /tmp/pyvenv/bin/python python/bench/worker_bench.py --store postgres
    /tmp/pyvenv/bin/python python/bench/worker_bench.py --figures p1,p4 --runs 1 --cpu

Each figure runs `--runs` times (env TASKTAPE_BENCH_RUNS, default 3), each
on a fresh release `tasktape serve` (env TASKTAPE_BIN, default
target/release/tasktape) on a free loopback port with `default_concurrency
= 256`; `--store postgres` uses the URL in TASKTAPE_TEST_PG and a fresh
`pg_schema` per server. One line per figure: the median of the runs, then
the runs. The worker is always a separate process: this script run as
`worker_bench.py --worker MODE URL` (its ops are the module-level functions
below) with `--concurrency` slots, default 256 (`DEFAULT_CONCURRENCY`): the
drain went 2,071 / 3,385 / 4,373 / 5,353 tasks/s with 32 / 64 / 128 / 256
in one series on the 2-core dev machine, because each claim -> run ->
report cycle costs about the same whatever its batch (a claim takes about
half the slots), so bigger batches win; 256 is also the server's limit here.

Figures (the goals are those of the issue):

- p1 drain (goal >= 6,000 tasks/s). A worker process starts, registers the
  no-op op, drains and deregisters (so the op is declared and submits are
  accepted), then waits on its stdin. The bench submits N tasks (16
  concurrent submitters; not timed), which wait `pending`, then writes "go":
  the clock runs from that write until `GET /v1/stats` counts N `succeeded`
  (polled every 10 ms). So the figure includes the worker's second
  registration and every claim, run and report, but not the interpreter's
  start-up nor the imports.
- p2 end to end (goal >= 2,000 tasks/s). The worker runs; 16 producer
  threads (in this process, a `Client` each) each submit a no-op task and
  follow its tape (`Client.follow`, SSE) until its `final`, then submit the
  next. Tasks/s = tasks / wall time, after 200 warm-up tasks. The producers
  share the 2 cores with the server and the worker, so `--cpu` prints who
  used what. (Threads + SSE were the cheapest Python producers measured:
  about 2 ms of CPU a task here, against 7.6 ms for asyncio `AsyncClient`
  long-polls of the events page and 3.8 ms for `Client.wait`.)
- p3 like p2, the op emitting 5 progress events a task (goal >= 1,500).
- p4 cancel -> a thread op sees it (goal p99 <= 200 ms). The op prints
  "started" to the worker's stdout, then loops `while not task.cancelled:
  time.sleep(0.001)` and prints `time.monotonic()` (system-wide on Linux,
  so comparable between processes) when it sees the cancel. Latency = that
  time - the bench's `time.monotonic()` just before `POST .../cancel`.
  Tries are sequential (the next starts after the task's final); the first
  `WARMUP` tries of a run are not counted. p50/p99 are nearest-rank.
- p5 the same with an `async def` op awaiting `asyncio.sleep(0.001)` in a
  loop; it records the time in `except CancelledError`.
- p6 cancel -> the process is gone, `isolation="process"`: the op (in a
  spawned child) prints its pid and sleeps; latency = from just before the
  cancel call until /proc/PID is gone or a zombie (polled every 1 ms).
  Each try spawns a child interpreter (~0.2 s a try here; 200 tries, 3 runs:
  ~2.5 min), so it has its own count, `--process-tries` (default 200).

`--cpu` adds a line to each throughput figure: CPU time per task of the
server, the worker process and this process (the producers), from /proc
and `os.times()`. `--profile-worker FILE` writes a cProfile of the worker
process's last run (on Python 3.12+ the op threads are included).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import cProfile
import importlib.util
import math
import multiprocessing
import os
import platform
import re
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

from tasktape import Client, Task, TasktapeError, Worker

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BIN = ROOT / "target" / "release" / "tasktape"
DEFAULT_CONCURRENCY = 256
PRODUCERS = 16
SUBMITTERS = 16
SUBMIT_PROCESSES = 2
WARMUP = 5
TERMINAL = ("succeeded", "failed", "cancelled")
_ADDRESS = re.compile(rb"listening on (https?://[A-Za-z0-9.:\[\]]+)")

# -- the worker process's side ------------------------------------------------


def _say(line: str) -> None:
    """One line to stdout in one write (whole in a pipe, from any thread or
    the op's child process)."""
    os.write(1, (line + "\n").encode())


def noop(task: Task) -> None:
    """Does nothing."""


def noop_progress(task: Task) -> None:
    """Reports 5 progress events."""
    for i in range(1, 6):
        task.progress("p", i, 5)


def spin(task: Task) -> None:
    """Polls its cancel flag every millisecond; says when it saw it."""
    _say(f"started {task.task_id}")
    while not task.cancelled:
        time.sleep(0.001)
    _say(f"seen {task.task_id} {time.monotonic():.6f}")
    task.raise_if_cancelled()


async def spin_async(task: Task) -> None:
    """Awaits a 1 ms sleep in a loop; says when the cancel came."""
    _say(f"started {task.task_id}")
    try:
        while True:  # noqa: ASYNC110 (a busy op, as ops that poll something are)
            await asyncio.sleep(0.001)
    except asyncio.CancelledError:
        _say(f"seen {task.task_id} {time.monotonic():.6f}")
        raise


def pid_sleep(task: Task) -> None:
    """In a child process: says its pid, then sleeps until terminated."""
    _say(f"pid {task.task_id} {os.getpid()}")
    time.sleep(1000)


def _declare(worker: Worker, mode: str) -> None:
    if mode in ("drain", "e2e"):
        worker.op("noop")(noop)
    if mode == "e2e":
        worker.op("noop_progress")(noop_progress)
    if mode == "cancel":
        worker.op("spin")(spin)
        worker.op("spin_async")(spin_async)
        worker.op("pid_sleep", isolation="process")(pid_sleep)


def _serve(worker: Worker, profile_to: str | None) -> None:
    if not profile_to:
        worker.run()
        return
    profile = cProfile.Profile()
    profile.enable()
    try:
        worker.run()
    finally:
        profile.disable()
        profile.dump_stats(profile_to)


def worker_main(mode: str, url: str, concurrency: int, profile_to: str | None) -> None:
    """`--worker MODE URL`: `drain` declares, waits for a line on stdin, then
    serves; `e2e` and `cancel` serve at once. SIGTERM drains and exits."""
    if mode == "drain":
        declaring = Worker(url, id="bench-declare", concurrency=concurrency)
        _declare(declaring, mode)
        declaring.start()
        declaring.stop(timeout=30)
        _say("declared")
        sys.stdin.readline()
    worker = Worker(url, id=f"bench-{mode}", concurrency=concurrency, drain_timeout=5)
    _declare(worker, mode)
    _serve(worker, profile_to)


# -- processes ------------------------------------------------------------------


def proc_cpu(pid: int, children: bool = False) -> float:
    """CPU seconds (user + system) of a process, from /proc/PID/stat; with
    `children`, of its waited-for children too."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = text[text.rindex(")") + 2 :].split()
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


def postgres_cpu() -> float:
    """CPU seconds of every `postgres` process (the one server under
    scripts/with-postgres), their reaped children included."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() == "postgres":
                    total += proc_cpu(int(entry.name), children=True)
    return total


def self_cpu() -> float:
    times = os.times()
    return times.user + times.system


def pid_gone(pid: int) -> bool:
    """Whether a process has exited (no /proc entry, or a zombie)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return text[text.rindex(")") + 2 :].split()[0] in ("Z", "X")


class Server:
    """A release `tasktape serve` on a free loopback port."""

    def __init__(self, binary: Path, store_url: str | None, work: Path) -> None:
        work.mkdir(parents=True, exist_ok=True)
        config = "default_concurrency = 256\n"
        command = [str(binary), "serve", "--listen", "127.0.0.1:0", "--data-dir", str(work)]
        if store_url:
            schema = "bench_" + secrets.token_hex(6)
            config += f'pg_schema = "{schema}"\n'
            command += ["--store", store_url, "--instance-id", f"bench-{schema}"]
        config_file = work / "tasktape.toml"
        config_file.write_text(config)
        command += ["--config", str(config_file)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("TASKTAPE_")}
        env.update({"RUST_LOG": "warn,tasktape=info", "NO_COLOR": "1"})
        self.tail: deque[bytes] = deque(maxlen=200)
        self._address: str | None = None
        self._announced = threading.Event()
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._announced.wait(60)
        address = self._announced_address()
        if address is None:
            self.stop()
            raise RuntimeError("tasktape serve did not announce its address:\n" + self.log())
        self.url: str = address

    def _announced_address(self) -> str | None:
        """The address the reader thread found (set from that thread)."""
        return self._address

    def _read(self) -> None:
        stream = self.process.stderr
        assert stream is not None
        for line in stream:  # line by line until the address, then in chunks
            self.tail.append(line)
            found = _ADDRESS.search(line)
            if found:
                self._address = found.group(1).decode()
                break
        self._announced.set()
        fd = stream.fileno()
        while chunk := os.read(fd, 1 << 16):
            self.tail.append(chunk)

    def log(self) -> str:
        return b"".join(self.tail).decode(errors="replace")[-8000:]

    def cpu(self) -> float:
        return proc_cpu(self.process.pid)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._reader.join(5)


class WorkerProcess:
    """This script as `--worker MODE URL`; its stdout lines are parsed into
    `(kind, task_id) -> value` notes."""

    def __init__(
        self, mode: str, url: str, concurrency: int, work: Path, profile_to: str | None = None
    ) -> None:
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", mode, url]
        command += ["--concurrency", str(concurrency)]
        if profile_to:
            command += ["--profile-worker", profile_to]
        self.stderr_path = work / f"worker-{mode}.log"
        self._stderr: IO[bytes] = self.stderr_path.open("wb")
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
        )
        self.notes: dict[tuple[str, str], str] = {}
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            parts = raw.decode(errors="replace").split()
            if not parts:
                continue
            key = (parts[0], parts[1] if len(parts) > 1 else "")
            with self._changed:
                self.notes[key] = parts[2] if len(parts) > 2 else ""
                self._changed.notify_all()

    def wait_note(self, kind: str, task_id: str = "", timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        with self._changed:
            while (kind, task_id) not in self.notes:
                left = deadline - time.monotonic()
                if left <= 0 or self.process.poll() is not None:
                    raise RuntimeError(
                        f"the worker did not say {kind} {task_id} in {timeout} s:\n" + self.log()
                    )
                self._changed.wait(min(left, 0.5))
            return self.notes.pop((kind, task_id))

    def go(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(b"go\n")
        self.process.stdin.flush()

    def cpu(self) -> float:
        return proc_cpu(self.process.pid, children=True)

    def log(self) -> str:
        if not self._stderr.closed:
            self._stderr.flush()
        return self.stderr_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._reader.join(5)
        self._stderr.close()


def wait_until(check: Callable[[], bool], timeout: float, what: str, every: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


def worker_live(http: httpx.Client, worker_id: str) -> bool:
    workers = http.get("/v1/workers").json()["workers"]
    return any(w["worker_id"] == worker_id and w["state"] == "live" for w in workers)


def counts(http: httpx.Client) -> dict[str, int]:
    answer: dict[str, int] = http.get("/v1/stats", params={"window": 60}).json()["counts"]
    return answer


# -- figures ---------------------------------------------------------------------


@dataclass
class Sample:
    """One run of a figure: its values (tasks/s, or p50/p99 ms) and notes."""

    values: list[float]
    cpu: dict[str, float] = field(default_factory=dict)  # µs per task
    count: int = 0


@dataclass
class Options:
    binary: Path
    store_url: str | None
    tasks: int
    e2e_tasks: int
    tries: int
    process_tries: int
    concurrency: int
    profile_to: str | None
    open_batch: int = 10


@contextlib.contextmanager
def fresh_server(options: Options) -> Iterator[tuple[Server, Path]]:
    with tempfile.TemporaryDirectory(prefix="tasktape-bench-") as work:
        server = Server(options.binary, options.store_url, Path(work))
        try:
            yield server, Path(work)
        finally:
            server.stop()


def report_worker_log(worker: WorkerProcess) -> None:
    text = worker.log().strip()
    if text:
        lines = text.splitlines()
        print(f"    (worker stderr, {len(lines)} lines; last ones:)", file=sys.stderr)
        for line in lines[-5:]:
            print(f"    | {line}", file=sys.stderr)


def submit_share(url: str, op: str, count: int, threads: int) -> int:
    """Submits `count` tasks of `op` from `threads` threads (a `Client` each)."""
    left = count
    lock = threading.Lock()

    def submitter() -> None:
        nonlocal left
        with Client(url) as client:
            while True:
                with lock:
                    if left <= 0:
                        return
                    left -= 1
                client.submit(op, {})

    pool = [threading.Thread(target=submitter, daemon=True) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return count


def submit_many(url: str, op: str, count: int) -> None:
    """Submits `count` tasks from `SUBMIT_PROCESSES` processes of
    `SUBMITTERS // SUBMIT_PROCESSES` threads (Python's client is the slow
    side: ~1,000 submits/s from one process here)."""
    context = multiprocessing.get_context("spawn")
    shares = [count // SUBMIT_PROCESSES] * SUBMIT_PROCESSES
    shares[0] += count - sum(shares)
    threads = max(1, SUBMITTERS // SUBMIT_PROCESSES)
    with concurrent.futures.ProcessPoolExecutor(SUBMIT_PROCESSES, mp_context=context) as pool:
        futures = [pool.submit(submit_share, url, op, share, threads) for share in shares]
        done = sum(future.result() for future in futures)
    if done != count:
        raise RuntimeError(f"submitted {done} of {count}")


def cpu_now(options: Options, server: Server, worker: WorkerProcess) -> dict[str, float]:
    """CPU seconds so far of the server, the worker, this process, and
    PostgreSQL when it is the store."""
    now = {"server": server.cpu(), "worker": worker.cpu(), "bench": self_cpu()}
    if options.store_url:
        now["postgres"] = postgres_cpu()
    return now


def cpu_per_task(before: dict[str, float], after: dict[str, float], tasks: int) -> dict[str, float]:
    return {name: (after[name] - before[name]) / tasks * 1e6 for name in before}


def wait_all_succeeded(http: httpx.Client, total: int, started: float, what: str) -> float:
    """Waits until `total` tasks succeeded (polled every 10 ms); answers
    the seconds since `started`; raises when any failed or was cancelled."""
    wait_until(lambda: counts(http)["succeeded"] >= total, 600, what)
    elapsed = time.perf_counter() - started
    left = counts(http)
    if left["failed"] or left["cancelled"]:
        raise RuntimeError(f"tasks did not all succeed: {left}")
    return elapsed


def fig_drain(options: Options) -> Sample:
    with fresh_server(options) as (server, work), httpx.Client(base_url=server.url) as http:
        worker = WorkerProcess("drain", server.url, options.concurrency, work, options.profile_to)
        try:
            worker.wait_note("declared")
            submit_many(server.url, "noop", options.tasks)
            pending = counts(http)["pending"]
            if pending != options.tasks:
                raise RuntimeError(f"{pending} pending after submitting {options.tasks}")
            cpu0 = cpu_now(options, server, worker)
            started = time.perf_counter()
            worker.go()
            elapsed = wait_all_succeeded(http, options.tasks, started, "the drain")
            cpu1 = cpu_now(options, server, worker)
        finally:
            worker.stop()
        report_worker_log(worker)
    return Sample([options.tasks / elapsed], cpu_per_task(cpu0, cpu1, options.tasks), options.tasks)


def produce(url: str, op: str, total: int, producers: int) -> tuple[float, int]:
    """`producers` threads, each with its own `Client`, in closed loops of
    submit -> follow the tape (SSE) until its `final`; answers the wall time
    and how many tasks did not succeed."""
    left = total
    bad = 0
    lock = threading.Lock()
    errors: list[BaseException] = []

    def producer() -> None:
        nonlocal left, bad
        try:
            with Client(url) as client:
                while True:
                    with lock:
                        if left <= 0:
                            return
                        left -= 1
                    task_id = client.submit(op, {}).task_id
                    status = None
                    for event in client.follow(task_id):
                        if event.type == "final":
                            status = event.status
                            break
                    if status != "succeeded":
                        with lock:
                            bad += 1
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=producer, daemon=True) for _ in range(producers)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise errors[0]
    return elapsed, bad


def fig_e2e(options: Options, op: str) -> Sample:
    with fresh_server(options) as (server, work), httpx.Client(base_url=server.url) as http:
        worker = WorkerProcess("e2e", server.url, options.concurrency, work, options.profile_to)
        try:
            wait_until(lambda: worker_live(http, "bench-e2e"), 30, "the worker", 0.02)
            produce(server.url, op, 200, PRODUCERS)  # warm-up, not counted
            cpu0 = cpu_now(options, server, worker)
            elapsed, bad = produce(server.url, op, options.e2e_tasks, PRODUCERS)
            cpu1 = cpu_now(options, server, worker)
            if bad:
                raise RuntimeError(f"{bad} tasks did not succeed")
        finally:
            worker.stop()
        report_worker_log(worker)
    total = options.e2e_tasks
    return Sample([total / elapsed], cpu_per_task(cpu0, cpu1, total), total)


def produce_open(url: str, op: str, total: int, producers: int, batch: int) -> None:
    """`producers` threads, each with its own `Client`, submitting `batch`
    tasks a call (`submit_many`) as fast as they can, without waiting."""
    left = total
    lock = threading.Lock()
    errors: list[BaseException] = []

    def producer() -> None:
        nonlocal left
        try:
            with Client(url) as client:
                while True:
                    with lock:
                        take = min(batch, left)
                        left -= take
                    if take <= 0:
                        return
                    answers = client.submit_many([{"op": op, "params": {}}] * take)
                    refused = [a for a in answers if isinstance(a, TasktapeError)]
                    if refused:
                        raise refused[0]
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=producer, daemon=True) for _ in range(producers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def fig_e2e_open(options: Options, op: str) -> Sample:
    with fresh_server(options) as (server, work), httpx.Client(base_url=server.url) as http:
        worker = WorkerProcess("e2e", server.url, options.concurrency, work, options.profile_to)
        try:
            wait_until(lambda: worker_live(http, "bench-e2e"), 30, "the worker", 0.02)
            produce_open(server.url, op, 200, PRODUCERS, options.open_batch)  # warm-up
            wait_until(lambda: counts(http)["succeeded"] >= 200, 60, "the warm-up")
            total = 200 + options.e2e_tasks
            cpu0 = cpu_now(options, server, worker)
            started = time.perf_counter()
            produce_open(server.url, op, options.e2e_tasks, PRODUCERS, options.open_batch)
            elapsed = wait_all_succeeded(http, total, started, "the finals")
            cpu1 = cpu_now(options, server, worker)
        finally:
            worker.stop()
        report_worker_log(worker)
    tasks = options.e2e_tasks
    return Sample([tasks / elapsed], cpu_per_task(cpu0, cpu1, tasks), tasks)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def fig_cancel(options: Options, op: str) -> Sample:
    tries = options.process_tries if op == "pid_sleep" else options.tries
    latencies: list[float] = []
    with fresh_server(options) as (server, work), httpx.Client(base_url=server.url) as http:
        worker = WorkerProcess("cancel", server.url, 4, work)
        try:
            wait_until(lambda: worker_live(http, "bench-cancel"), 30, "the worker", 0.02)
            with Client(server.url) as client:
                for attempt in range(WARMUP + tries):
                    task_id = client.submit(op, {}).task_id
                    if op == "pid_sleep":
                        pid = int(worker.wait_note("pid", task_id))
                        started = time.monotonic()
                        client.cancel(task_id)
                        while not pid_gone(pid):
                            time.sleep(0.001)
                        seen = time.monotonic()
                    else:
                        worker.wait_note("started", task_id)
                        started = time.monotonic()
                        client.cancel(task_id)
                        seen = float(worker.wait_note("seen", task_id))
                    row = client.wait(task_id, timeout=30)
                    if row.status != "cancelled":
                        raise RuntimeError(f"task {task_id} ended {row.status}: {row.error}")
                    if attempt >= WARMUP:
                        latencies.append((seen - started) * 1000)
        finally:
            worker.stop()
        report_worker_log(worker)
    return Sample([percentile(latencies, 50), percentile(latencies, 99)], count=len(latencies))


@dataclass
class Figure:
    key: str
    label: str
    run: Callable[[Options], Sample]
    latency: bool = False


FIGURES = [
    Figure("p1", "drain, one Python worker process, no-op, tasks/s", fig_drain),
    Figure(
        "p2",
        f"end to end, {PRODUCERS} producers, one worker process, no-op, tasks/s",
        lambda o: fig_e2e(o, "noop"),
    ),
    Figure(
        "p3",
        f"end to end, {PRODUCERS} producers, 5 progress events a task, tasks/s",
        lambda o: fig_e2e(o, "noop_progress"),
    ),
    Figure(
        "p2o",
        f"end to end, open loop, {PRODUCERS} producers, no-op, tasks/s",
        lambda o: fig_e2e_open(o, "noop"),
    ),
    Figure(
        "p3o",
        f"end to end, open loop, {PRODUCERS} producers, 5 progress events a task, tasks/s",
        lambda o: fig_e2e_open(o, "noop_progress"),
    ),
    Figure("p4", "cancel -> thread op sees it, ms", lambda o: fig_cancel(o, "spin"), True),
    Figure("p5", "cancel -> async op sees it, ms", lambda o: fig_cancel(o, "spin_async"), True),
    Figure(
        "p6",
        'cancel -> process gone (isolation="process"), ms',
        lambda o: fig_cancel(o, "pid_sleep"),
        True,
    ),
]


def fmt(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def show(figure: Figure, samples: list[Sample], show_cpu: bool, seconds: float) -> None:
    took = f"({seconds:.0f} s)"
    if figure.latency:
        p50s = [s.values[0] for s in samples]
        p99s = [s.values[1] for s in samples]
        print(
            f"({figure.key}) {figure.label}   p50 {fmt(statistics.median(p50s))}"
            f"  p99 {fmt(statistics.median(p99s))}   runs p50 [{', '.join(map(fmt, p50s))}]"
            f" p99 [{', '.join(map(fmt, p99s))}]   {samples[0].count} tries/run {took}",
            flush=True,
        )
        return
    values = [s.values[0] for s in samples]
    print(
        f"({figure.key}) {figure.label}   {fmt(statistics.median(values))}"
        f"   runs [{', '.join(map(fmt, values))}]   {samples[0].count:,} tasks/run {took}",
        flush=True,
    )
    if show_cpu:
        middle = sorted(samples, key=lambda s: s.values[0])[len(samples) // 2]
        parts = ", ".join(f"{name} {value:,.0f}" for name, value in middle.cpu.items())
        print(f"     CPU µs per task (median run): {parts}", flush=True)


def context_line(options: Options, store: str, runs: int) -> str:
    with fresh_server(options) as (server, _), Client(server.url) as client:
        info = client.info()
    cores = os.cpu_count() or 0
    if sys.modules.get("sniffio", False) is None:
        sniff = "no sniffio (its import made to fail at once: tasktape._compat)"
    elif importlib.util.find_spec("sniffio") is not None:
        sniff = "sniffio installed"
    else:
        sniff = "no sniffio"
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    return (
        f"store {store} ({info.storage_backend}) | tasktape {info.tasktape_version} | "
        f"Python {platform.python_version()} ({platform.python_implementation()}) | "
        f"httpx {httpx.__version__} | {cores} cores | {platform.system()} {platform.machine()} | "
        f"{sniff} | load {load} | worker concurrency {options.concurrency} | runs {runs}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--runs", type=int, default=int(os.environ.get("TASKTAPE_BENCH_RUNS", 3)))
    parser.add_argument("--figures", default="p1,p2,p3,p4,p5,p6")
    parser.add_argument("--tasks", type=int, default=20000, help="p1's backlog")
    parser.add_argument("--e2e-tasks", type=int, default=10000, help="p2 and p3's tasks")
    parser.add_argument("--tries", type=int, default=200, help="p4 and p5's tries")
    parser.add_argument("--process-tries", type=int, default=200, help="p6's tries")
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY)
    parser.add_argument(
        "--open-batch", type=int, default=10, help="p2o and p3o's tasks per submit call"
    )
    parser.add_argument("--cpu", action="store_true", help="print CPU time per task")
    parser.add_argument("--profile-worker", metavar="FILE", help="cProfile the worker's loop")
    parser.add_argument("--worker", nargs=2, metavar=("MODE", "URL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker_main(args.worker[0], args.worker[1], args.concurrency, args.profile_worker)
        return 0

    binary = Path(os.environ.get("TASKTAPE_BIN", str(DEFAULT_BIN)))
    if not binary.exists():
        print(f"no tasktape binary at {binary}: build it or set TASKTAPE_BIN", file=sys.stderr)
        return 2
    store_url = None
    if args.store == "postgres":
        store_url = os.environ.get("TASKTAPE_TEST_PG")
        if not store_url:
            print(
                "--store postgres needs TASKTAPE_TEST_PG (scripts/with-postgres)", file=sys.stderr
            )
            return 2
    options = Options(
        binary=binary,
        store_url=store_url,
        tasks=args.tasks,
        e2e_tasks=args.e2e_tasks,
        tries=args.tries,
        process_tries=args.process_tries,
        concurrency=args.concurrency,
        profile_to=args.profile_worker,
        open_batch=max(1, args.open_batch),
    )
    wanted = {key.strip() for key in args.figures.split(",") if key.strip()}
    print(context_line(options, args.store, args.runs), flush=True)
    for figure in FIGURES:
        if figure.key not in wanted:
            continue
        began = time.monotonic()
        try:
            samples = [figure.run(options) for _ in range(args.runs)]
        except (RuntimeError, TasktapeError) as error:
            print(f"({figure.key}) {figure.label}   FAILED: {error}", flush=True)
            continue
        show(figure, samples, args.cpu, time.monotonic() - began)
    return 0


if __name__ == "__main__":
    sys.exit(main())
