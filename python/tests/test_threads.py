"""The thread pool plain-function ops run in: idle threads are reused, and
a run stuck in its thread never holds up the next one."""

from __future__ import annotations

import threading

from tasktape._threads import Threads


def wait_idle(threads: Threads) -> None:
    """Waits until a thread counts itself idle (just after its job returns)."""
    for _ in range(500):
        if threads._idle == 1:
            return
        threading.Event().wait(0.001)


def test_an_idle_thread_is_reused() -> None:
    threads = Threads(name="test-reuse")
    names: list[str] = []
    for _ in range(20):
        done = threading.Event()

        def job(done: threading.Event = done) -> None:
            names.append(threading.current_thread().name)
            done.set()

        threads.submit(job)
        assert done.wait(5)
        wait_idle(threads)
    assert len(set(names)) == 1, names


def test_a_stuck_run_does_not_hold_up_the_next() -> None:
    threads = Threads(name="test-stuck")
    release = threading.Event()
    second_ran = threading.Event()

    def stuck() -> None:
        release.wait(10)

    threads.submit(stuck)
    threads.submit(second_ran.set)
    try:
        assert second_ran.wait(5), "the second run waited behind the stuck one"
    finally:
        release.set()


def test_idle_threads_exit() -> None:
    threads = Threads(name="test-exit", idle_s=0.05)
    done = threading.Event()
    threads.submit(done.set)
    assert done.wait(5)
    for _ in range(400):
        if not any(t.name.startswith("test-exit") for t in threading.enumerate()):
            break
        threading.Event().wait(0.01)
    assert not any(t.name.startswith("test-exit") for t in threading.enumerate())
    assert threads._idle == 0


def test_a_job_that_raises_leaves_its_thread_serving() -> None:
    threads = Threads(name="test-raise")

    def boom() -> None:
        raise OSError("no more descriptors")

    threads.submit(boom)
    wait_idle(threads)
    ran = threading.Event()
    threads.submit(ran.set)
    assert ran.wait(5), "the next job never ran"


def test_each_job_runs_in_a_fresh_context() -> None:
    import contextvars

    marker: contextvars.ContextVar[str] = contextvars.ContextVar("marker", default="unset")
    threads = Threads(name="test-context")
    seen: list[str] = []
    done = threading.Event()

    def first() -> None:
        marker.set("first run")
        done.set()

    threads.submit(first)
    assert done.wait(5)
    wait_idle(threads)
    second_done = threading.Event()

    def second() -> None:
        seen.append(marker.get())
        second_done.set()

    threads.submit(second)
    assert second_done.wait(5)
    assert seen == ["unset"]
