"""The worker-pool core on its own, with threads as workers: dispatch, timeouts, replacement."""

from __future__ import annotations

import threading
import time
from concurrent import futures

import numpy as np
import pytest

from roost.core.types import Failure, FitIns, FitRes
from roost.engines.federation import Federation
from roost.engines.pool import ORDER_WINDOW_PER_WORKER, CohortOrder, WorkerLost, WorkerPool


class ThreadWorker:
    def __init__(self, number: int) -> None:
        self.number = number


class ThreadPool(WorkerPool[ThreadWorker, futures.Future]):
    """Each call runs in a thread. `behaviour[client_id]` makes a client hang, answer last,
    kill its worker, find its worker unreachable, or answer with a message that cannot be read."""

    def __init__(
        self, behaviour: dict[str, str], num_clients: int, max_workers: int, in_order: bool = True
    ) -> None:
        # Its workers answer without building clients: the federation needs no client_fn.
        federation = Federation(client_fn=None, num_clients=num_clients)
        super().__init__(federation, max_workers, in_order=in_order)
        self.behaviour = behaviour
        self.started = 0
        self.killed: list[int] = []
        self.release = threading.Event()
        self.received: list[str] = []  # client ids in the order their results came back
        self.cohort_size = num_clients
        self.executor = futures.ThreadPoolExecutor(max_workers=8)

    def _start_workers(self, count: int) -> list[ThreadWorker]:
        workers = [ThreadWorker(self.started + i) for i in range(count)]
        self.started += count
        return workers

    def _kill(self, worker: ThreadWorker) -> None:
        self.killed.append(worker.number)

    def _send(self, worker, client_id, instruction, state, ticket) -> futures.Future:
        if self.behaviour.get(client_id) == "unreachable":
            raise WorkerLost("pipe closed")
        return self.executor.submit(self._call, worker, client_id, instruction, state)

    def _call(self, worker, client_id, instruction, state):
        kind = self.behaviour.get(client_id, "ok")
        if kind == "hang":
            self.release.wait(10)
        if kind == "last" or kind.startswith("after:"):  # answer once every other call of
            # the cohort (or that many) is back, and a moment more for any others that could be
            wanted = self.cohort_size - 1 if kind == "last" else int(kind.split(":")[1])
            deadline = time.monotonic() + 10
            while len(self.received) < wanted and time.monotonic() < deadline:
                time.sleep(0.005)
            if kind != "last":
                time.sleep(0.3)
        moved = [p + int(client_id) for p in instruction.parameters]
        calls = state.get("calls", 0) + 1
        return (
            kind,
            FitRes(moved, 1, {"worker": worker.number, "calls": calls, "client": client_id}),
            {"calls": calls},
        )

    def _wait(self, handles, timeout):
        done, _ = futures.wait(handles, timeout, return_when=futures.FIRST_COMPLETED)
        return list(done)

    def _receive(self, worker, handle):
        kind, result, state = handle.result()
        self.received.append(result.metrics["client"])
        if kind == "die":
            raise WorkerLost("its worker died (exit code 3)")
        if kind == "garbled":
            raise ValueError("truncated message")
        return result, state

    def finish(self) -> None:
        self.release.set()
        self.close()
        self.executor.shutdown()


def cohort(num_clients: int) -> list:
    return [(str(k), FitIns([np.zeros(2)], {})) for k in range(num_clients)]


def test_results_stream_back_and_workers_are_reused_across_exchanges():
    pool = ThreadPool({}, num_clients=5, max_workers=2)
    try:
        for _ in range(2):
            outcomes = dict(pool.run(cohort(5), None))
            assert sorted(outcomes) == ["0", "1", "2", "3", "4"]
            for client_id, result in outcomes.items():
                np.testing.assert_array_equal(result.parameters[0], np.full(2, int(client_id)))
            assert {result.metrics["worker"] for result in outcomes.values()} == {0, 1}
        assert pool.started == 2 and pool.killed == []
    finally:
        pool.finish()


def test_each_broken_call_fails_its_client_only_and_lost_workers_are_replaced():
    behaviour = {"1": "hang", "2": "die", "3": "unreachable", "4": "garbled"}
    pool = ThreadPool(behaviour, num_clients=6, max_workers=2)
    try:
        outcomes = dict(pool.run(cohort(6), timeout=0.5))
    finally:
        pool.finish()
    assert sorted(outcomes) == ["0", "1", "2", "3", "4", "5"]
    assert isinstance(outcomes["0"], FitRes) and isinstance(outcomes["5"], FitRes)
    failures = {c: r for c, r in outcomes.items() if isinstance(r, Failure)}
    assert {c: f.kind for c, f in failures.items()} == {
        "1": "timeout",
        "2": "error",
        "3": "error",
        "4": "error",
    }
    assert "round timeout of 0.5 s" in failures["1"].reason
    assert failures["2"].reason == "its worker died (exit code 3)"
    assert failures["3"].reason == "worker unavailable: pipe closed"
    assert failures["4"].reason == "ValueError: truncated message"
    # The hung, dead and unreachable workers were replaced; the garbled call's worker was not.
    assert pool.started == 2 + 3


def test_close_abandons_the_running_exchange_without_starting_workers():
    pool = ThreadPool({"1": "hang"}, num_clients=2, max_workers=2)
    try:
        exchange = pool.run(cohort(2), None)
        client_id, result = next(exchange)
        assert client_id == "0" and isinstance(result, FitRes)
        pool.close()
        assert pool.started == 2 and len(pool.killed) == 2  # the busy one and the idle one
        assert list(exchange) == []
    finally:
        pool.finish()


@pytest.mark.parametrize("in_order", [True, False])
def test_results_come_in_the_cohorts_order_however_they_finish(in_order):
    """Aggregators sum as results arrive; in finishing order, a seed would not fix the bits.
    `in_order=False` hands each result on as it finishes (no result waits in memory)."""
    pool = ThreadPool({"0": "last"}, num_clients=5, max_workers=2, in_order=in_order)
    try:
        order = [client_id for client_id, _ in pool.run(cohort(5), timeout=20)]
    finally:
        pool.finish()
    assert pool.received == ["1", "2", "3", "4", "0"]
    assert order == (["0", "1", "2", "3", "4"] if in_order else pool.received)


def test_cohort_order_holds_back_only_what_is_early_and_loses_nothing():
    def outcome(client_id):
        return client_id, FitRes([np.zeros(1)], 1, {})

    order = CohortOrder(["a", "b", "a", "c", "d"])
    steps = [[c for c, _ in order.add(outcome(c))] for c in ("b", "c", "a", "a", "x", "d")]
    # The repeated "a" fills both of its places; "x", no member, is passed on when it comes.
    assert steps == [[], [], ["a", "b"], ["a", "c"], ["x"], ["d"]]
    assert order.delivered == 5 and order.rest() == []
    # A call never answered does not hold the others back for ever.
    partial = CohortOrder(["a", "b", "c"])
    assert partial.add(outcome("b")) == [] and partial.add(outcome("c")) == []
    assert [c for c, _ in partial.rest()] == ["b", "c"]


def test_a_slow_client_holds_back_a_window_of_results_not_the_whole_cohort():
    """In cohort order, calls run at most a window ahead of the first result not back: the
    results held in memory for a slow first client are bounded, whatever the cohort's size."""
    window = ORDER_WINDOW_PER_WORKER * 2
    pool = ThreadPool({"0": f"after:{window - 1}"}, num_clients=40, max_workers=2)
    try:
        order = [client_id for client_id, _ in pool.run(cohort(40), timeout=20)]
    finally:
        pool.finish()
    assert order == [str(k) for k in range(40)]
    # Client 0 answered after the others in its window, and nothing beyond it had started.
    assert pool.received[:window] == [*(str(k) for k in range(1, window)), "0"]


def test_a_pool_needs_clients_and_workers():
    with pytest.raises(ValueError, match="num_clients"):
        ThreadPool({}, num_clients=0, max_workers=1)
    with pytest.raises(ValueError, match="at least one worker"):
        ThreadPool({}, num_clients=1, max_workers=0)


def test_each_node_gets_back_its_own_state_on_any_worker():
    pool = ThreadPool({}, num_clients=4, max_workers=2)
    try:
        for exchange in range(1, 4):
            outcomes = dict(pool.run(cohort(4), timeout=5))
            assert [outcomes[str(k)].metrics["calls"] for k in range(4)] == [exchange] * 4
    finally:
        pool.finish()
