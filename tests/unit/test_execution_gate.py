"""The local engine's execution gate (local/engine.py, ExecutionGate): at most `limit` executions run at
once, the others wait in order, and StopExecution on a waiting one aborts it without running it."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from local.engine import ExecutionGate, threads_per_execution


class FakeWorker:
    """moto's ExecutionWorker as the gate uses it: _execution_logic runs the execution (here: until released)."""

    running = 0
    peak = 0
    lock = threading.Lock()
    order: list[int] = []

    def __init__(self, n: int):
        self.n = n
        self.release = threading.Event()
        self.done = threading.Event()
        self.env: Any = None
        self.terminated = False

    def _execution_logic(self) -> None:
        with FakeWorker.lock:
            FakeWorker.running += 1
            FakeWorker.peak = max(FakeWorker.peak, FakeWorker.running)
            FakeWorker.order.append(self.n)
        self.release.wait(10)
        with FakeWorker.lock:
            FakeWorker.running -= 1
        self.done.set()

    # what the gate calls to abort a queued one
    def _get_evaluation_environment(self) -> Any:
        return FakeEnv()

    @property
    def _execution_communication(self) -> Any:
        worker = self

        class Comm:
            def terminated(self) -> None:
                worker.terminated = True

        return Comm()


class FakeEnv:
    def __init__(self) -> None:
        self.stopped: tuple[Any, ...] | None = None

    def set_stop(self, stop_date: Any, cause: Any, error: Any) -> None:
        self.stopped = (stop_date, cause, error)


@pytest.fixture(autouse=True)
def _reset():
    FakeWorker.running = FakeWorker.peak = 0
    FakeWorker.order = []


def wait_for(condition, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


def test_at_most_limit_run_at_once_and_the_rest_start_in_order():
    gate = ExecutionGate(2)
    workers = [FakeWorker(n) for n in range(5)]
    for w in workers:
        gate.start(w)
    wait_for(lambda: FakeWorker.running == 2)
    assert gate.queued == 3 and sorted(FakeWorker.order) == [0, 1]
    for i, w in enumerate(workers):
        w.release.set()
        w.done.wait(5)
        started = min(i + 3, 5)  # the next one in line took its place
        wait_for(lambda started=started: len(FakeWorker.order) == started)
    wait_for(lambda: all(w.done.is_set() for w in workers))
    assert FakeWorker.peak == 2 and FakeWorker.order[2:] == [2, 3, 4]
    assert gate.queued == 0 and gate.peak_running == 2 and gate.peak_queued == 3


def test_stopping_a_queued_execution_aborts_it_without_running_it():
    gate = ExecutionGate(1)
    first, second = FakeWorker(1), FakeWorker(2)
    gate.start(first)
    gate.start(second)
    wait_for(lambda: FakeWorker.running == 1)
    assert gate.stop(second, "now", "Cancelled", "by a test") is True
    assert second.terminated and second.env.stopped == ("now", "by a test", "Cancelled")
    assert gate.stop(first, "now", None, None) is False  # a running one is moto's to stop
    first.release.set()
    first.done.wait(5)
    time.sleep(0.1)
    assert FakeWorker.order == [1]  # the stopped one never ran


def test_dropping_the_queue_on_close():
    gate = ExecutionGate(1)
    workers = [FakeWorker(n) for n in range(3)]
    for w in workers:
        gate.start(w)
    assert gate.drop_queued() == 2
    workers[0].release.set()
    workers[0].done.wait(5)
    time.sleep(0.1)
    assert FakeWorker.order == [0]


def test_the_bound_counts_every_thread_of_a_running_execution():
    # 3 for the execution, its program and the vendor Map's watch; 8 per vendor branch, at most
    # MaxConcurrency (10) branches at once.
    assert threads_per_execution(3) == 27
    assert threads_per_execution(40) == threads_per_execution(10) == 83
    with pytest.raises(ValueError):
        ExecutionGate(0)
