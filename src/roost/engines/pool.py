"""The worker-pool core of the process and Ray engines: one dispatch loop for any kind of worker.

A pool keeps up to `max_workers` workers. They start on first use, receive `client_fn` once, and
are reused by every exchange (every `run` call, any number of them per round). An exchange hands
the cohort's instructions to idle workers, one call per worker at a time, and yields the results
in the cohort's order (so that a seed gives the same bits), each as soon as it and all before it
are back. A result that finishes early waits in memory for those ahead of it, so a call is sent
only while it is fewer than `ORDER_WINDOW_PER_WORKER × max_workers` places after the first result
not yet back: a slow client then holds back that many results at most, not the whole cohort, and
the workers wait for it once they are that far ahead. With `in_order=False` results are handed on
as each finishes (no worker waits and no result is held, but the last bits of a sum can differ).
A client past the timeout is a failure and its worker is replaced, so a hung client cannot hold
a worker; a worker that dies is a failure of its client and is replaced too. Workers that keep
dying (`LOST_IN_A_ROW_PER_WORKER` × workers deaths with no call answered in between) end the
run with one error rather than restart workers for every client.

With warm clients (`WarmClients`), each worker keeps the clients it built, and the pool routes a
node's instruction to the worker that answered the node last (affinity), so its kept client answers
again. When that worker is busy, other idle workers first take work that is theirs or nobody's; a
worker left with nothing of its own takes a busy worker's node only when that worker still has at
least two more of its own waiting (it builds the client afresh and becomes the node's worker); when
a node's worker died or was replaced, any worker builds the client afresh. Every call carries a
ticket (how many instructions the node was sent before), so a worker never reuses a client that
missed the node's instructions run elsewhere in between.

What differs between engines, and only that, is left to a subclass: how workers start and stop,
how a call is sent, how finished calls are awaited and how a result is received.
"""

from __future__ import annotations

import logging
import pickle
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from roost.core.types import ClientId, Failure, Instruction, Outcome, Result
from roost.engines.federation import Federation, SimulatedFederation
from roost.engines.node_states import NodeState
from roost.engines.warm import WarmClients
from roost.errors import ConfigurationError, RoostError, other_engines

log = logging.getLogger(__name__)

# Seconds a new worker may take to import roost and rebuild client_fn before start-up fails.
WORKER_START_TIMEOUT = 120.0

# In cohort order, how far (in places per worker) calls may run ahead of the first result not yet
# back: the most finished results the server holds in memory while it waits for a slow client.
ORDER_WINDOW_PER_WORKER = 4

# Workers lost one after another, per worker in the pool, before the run stops: a client that
# crashes its process in every call (a native library, memory) would otherwise cost a worker
# start per client, for the whole run.
LOST_IN_A_ROW_PER_WORKER = 3

Worker = TypeVar("Worker")
Handle = TypeVar("Handle")


def serialize_federation(federation: Federation, engine: str) -> bytes:
    """`federation` as bytes for another process: cloudpickle when installed (it also handles a
    `client_fn` that is a lambda, a closure or a function of `__main__`), the standard pickle
    otherwise. Of a federation, only `client_fn` can fail to pickle (the run config is scalars).
    """
    try:
        import cloudpickle
    except ImportError:
        cloudpickle = None
    try:
        return (cloudpickle or pickle).dumps(federation)
    except Exception as error:
        hint = "" if cloudpickle else " (or install cloudpickle, which also sends closures)"
        raise ConfigurationError(
            f"the {engine} engine sends client_fn to worker processes, so it must be picklable, "
            f"but pickling it failed ({type(error).__name__}: {error}). Define client_fn and "
            f"the objects it holds at module level{hint}, or use {other_engines('sequential')}"
        ) from error


class WorkerLost(Exception):
    """A worker is gone (crashed, killed, unreachable): its client fails, the worker is replaced."""


@dataclass
class _Call:
    """One instruction in flight on one worker."""

    worker: Any
    client_id: ClientId
    started: float


class WorkerPool(ABC, SimulatedFederation, Generic[Worker, Handle]):
    """A transport that runs clients on a pool of reusable workers.

    Subclasses say how to start, stop and call their kind of worker; this class owns the pool and
    the dispatch loop. Starting a new exchange abandons what is left of the previous one: its
    workers still busy are stopped, so late results cannot leak into the new exchange.
    """

    engine_name = "pool"
    """The engine's name, for errors."""

    def __init__(
        self,
        federation: Federation,
        max_workers: int,
        warm: WarmClients | None = None,
        *,
        in_order: bool = True,
    ) -> None:
        if max_workers < 1:
            raise ConfigurationError(f"the pool needs at least one worker, got {max_workers}")
        # Each node's Context.state (`node_states`) travels with its instruction and comes back
        # with the result: a client rebuilt on any worker sees what it kept before.
        super().__init__(federation)
        self.max_workers = max_workers
        self._workers: list[Worker] = []
        self._exchange: Generator[Outcome, None, None] | None = None
        self.warm = warm
        self.in_order = in_order
        self._home: dict[ClientId, Worker] = {}  # the worker that answered each node last
        self._sent: dict[ClientId, int] = {}  # instructions sent to each node so far
        self._lost_in_a_row = 0  # workers lost since a call was last answered

    # -- what an engine provides ---------------------------------------------------------------

    @abstractmethod
    def _start_workers(self, count: int) -> list[Worker]:
        """Start `count` workers and return once each has rebuilt `client_fn`, or raise."""

    @abstractmethod
    def _kill(self, worker: Worker) -> None:
        """Stop `worker` at once (it may be hung or dead)."""

    def _stop(self, worker: Worker) -> None:
        """Stop an idle `worker` at the end of the run; by default the same as `_kill`."""
        self._kill(worker)

    def _stop_all(self, workers: list[Worker]) -> None:
        """Stop idle `workers` at the end of the run; by default one after another."""
        for worker in workers:
            self._stop(worker)

    @abstractmethod
    def _send(
        self,
        worker: Worker,
        client_id: ClientId,
        instruction: Instruction,
        state: NodeState,
        ticket: int,
    ) -> Handle:
        """Start one call on `worker` (the node's instruction, its state, and the number of
        instructions the node was sent before, for `ClientHost.run`); return the handle `_wait`
        watches. Raise `WorkerLost` when the worker cannot take it."""

    @abstractmethod
    def _wait(self, handles: list[Handle], timeout: float | None) -> list[Handle]:
        """The handles among `handles` whose calls are done, waiting at most `timeout` seconds
        (None: until at least one is)."""

    @abstractmethod
    def _receive(self, worker: Worker, handle: Handle) -> tuple[Result | Failure, NodeState | None]:
        """The outcome of a finished call on `worker` and the node's state after it (None: keep
        the state it had). Raise `WorkerLost` when it died; any other exception fails this call
        only."""

    # -- Transport -----------------------------------------------------------------------------

    def run(
        self, cohort: Sequence[tuple[ClientId, Instruction]], timeout: float | None
    ) -> Iterator[Outcome]:
        """Run each instruction on a worker; yield the outcomes in the cohort's order (or, with
        `in_order` False, as they finish)."""
        if self._exchange is not None:
            self._exchange.close()  # its busy workers stop: their results belong to no one now
        self._exchange = self._dispatch(list(cohort), timeout)
        return self._exchange

    def close(self) -> None:
        """Stop every worker. The pool starts afresh if `run` is called again."""
        if self._exchange is not None:
            self._exchange.close()
            self._exchange = None
        workers, self._workers = self._workers, []
        self._stop_all(workers)

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the dispatch loop ---------------------------------------------------------------------

    def _dispatch(
        self, cohort: list[tuple[ClientId, Instruction]], timeout: float | None
    ) -> Generator[Outcome, None, None]:
        wanted = min(self.max_workers, max(len(cohort), 1))
        if len(self._workers) < wanted:
            self._workers += self._start_workers(wanted - len(self._workers))
        order = CohortOrder([client_id for client_id, _ in cohort]) if self.in_order else None
        deliver = order.add if order is not None else _as_ready
        window = ORDER_WINDOW_PER_WORKER * self.max_workers
        unreleased = deque(cohort)  # calls not yet allowed to start (see ORDER_WINDOW_PER_WORKER)
        pending: deque[tuple[ClientId, Instruction]] = deque()
        idle = list(self._workers)
        busy: dict[Handle, _Call] = {}
        try:
            while unreleased or pending or busy:
                limit = len(cohort) if order is None else order.delivered + window
                while unreleased and len(cohort) - len(unreleased) < limit:
                    pending.append(unreleased.popleft())
                for outcome in self._send_pending(pending, idle, busy):
                    yield from deliver(outcome)
                if not busy:
                    continue
                for handle in self._wait(list(busy), _time_left(busy, timeout)):
                    yield from deliver(self._collect(busy.pop(handle), handle, idle))
                if timeout is not None:
                    for outcome in self._expire(busy, idle, timeout):
                        yield from deliver(outcome)
            if order is not None:
                yield from order.rest()
        finally:
            # Left early (the consumer stopped, or a new exchange began): calls still in flight
            # must not answer into another exchange, so their workers go. The pool regrows
            # when the next exchange needs them.
            for call in busy.values():
                self._retire(call.worker)

    def _send_pending(
        self, pending: deque, idle: list[Worker], busy: dict[Handle, _Call]
    ) -> Iterator[Outcome]:
        while pending and idle:
            chosen = self._next_call(pending, idle)
            if chosen is None and not busy:  # cannot happen; but never wait on no one
                chosen = idle.pop(), pending.popleft()
            if chosen is None:
                return  # only nodes whose warm worker is busy remain: wait for those workers
            worker, (client_id, instruction) = chosen
            ticket = self._sent.get(client_id, 0)
            self._sent[client_id] = ticket + 1
            state = self.node_states.for_node(client_id)
            try:
                handle = self._send(worker, client_id, instruction, state, ticket)
            except WorkerLost as lost:
                idle.append(self._replace_lost(worker, lost))
                yield client_id, Failure(client_id, f"worker unavailable: {lost}")
                continue
            self._home[client_id] = worker
            busy[handle] = _Call(worker, client_id, time.monotonic())

    def _next_call(
        self, pending: deque, idle: list[Worker]
    ) -> tuple[Worker, tuple[ClientId, Instruction]] | None:
        """The next (idle worker, pending call) to start, taken out of `idle` and `pending`;
        None to wait for a busy worker (see the module's note on affinity)."""
        if self.warm is None:
            return idle.pop(), pending.popleft()
        homeless = None
        waiting: dict[int, list[int]] = {}  # a busy worker's own pending calls, by id(worker)
        for index, (client_id, _) in enumerate(pending):
            home = self._home.get(client_id)
            if home is not None and home in idle:
                idle.remove(home)
                return home, _take(pending, index)
            if home is None or home not in self._workers:
                homeless = index if homeless is None else homeless
            else:
                waiting.setdefault(id(home), []).append(index)
        if homeless is not None:
            return idle.pop(), _take(pending, homeless)
        longest = max(waiting.values(), key=len, default=[])
        if len(longest) >= 2:  # its worker will stay busy a while: rebuild the last one here
            return idle.pop(), _take(pending, longest[-1])
        return None

    def _collect(self, call: _Call, handle: Handle, idle: list[Worker]) -> Outcome:
        try:
            result, state = self._receive(call.worker, handle)
        except WorkerLost as lost:
            idle.append(self._replace_lost(call.worker, lost))
            return call.client_id, Failure(call.client_id, str(lost), "error")
        except Exception as error:  # this call failed (e.g. its result arrived broken); the
            idle.append(call.worker)  # worker itself is fine and takes the next one
            return call.client_id, Failure(call.client_id, f"{type(error).__name__}: {error}")
        idle.append(call.worker)
        self._lost_in_a_row = 0
        if state is not None:
            self.node_states.set(call.client_id, state)
        return call.client_id, result

    def _expire(
        self, busy: dict[Handle, _Call], idle: list[Worker], timeout: float
    ) -> Iterator[Outcome]:
        now = time.monotonic()
        for handle, call in list(busy.items()):
            if now - call.started >= timeout:
                del busy[handle]
                idle.append(self._replace(call.worker))
                reason = f"no result within the round timeout of {timeout:g} s"
                yield call.client_id, Failure(call.client_id, reason, "timeout")

    # -- pool upkeep ---------------------------------------------------------------------------

    def _retire(self, worker: Worker) -> None:
        """Kill `worker` and take it out of the pool (with the clients it kept warm)."""
        self._kill(worker)
        self._workers.remove(worker)
        self._home = {node: home for node, home in self._home.items() if home is not worker}

    def _replace_lost(self, worker: Worker, lost: WorkerLost) -> Worker:
        """Replace `worker`, which died; raise `RoostError` when workers keep dying."""
        self._lost_in_a_row += 1
        if self._lost_in_a_row >= LOST_IN_A_ROW_PER_WORKER * self.max_workers:
            raise RoostError(
                f"the {self.engine_name} engine lost {self._lost_in_a_row} workers in a row, "
                f"no call answered in between (the last: {lost}); stopping rather than start "
                "a worker per client. A client may crash its process (a native library, or "
                f"memory: try fewer workers); {other_engines('sequential')} shows its error"
            ) from lost
        return self._replace(worker)

    def _replace(self, worker: Worker) -> Worker:
        """Kill `worker` (hung or dead) and start a fresh one in its place."""
        self._retire(worker)
        fresh = self._start_workers(1)[0]
        self._workers.append(fresh)
        return fresh


class CohortOrder:
    """Puts outcomes that arrive in finishing order back in the cohort's order.

    The aggregators sum as results stream in, and floating-point sums depend on their order: in
    finishing order, two runs with one seed would differ in the last bits of the model. The price
    is memory: a result that finishes early is held until all before it are back (bounded by the
    pool's window, see `ORDER_WINDOW_PER_WORKER`; measured in `benchmarks/pool_order_memory.py`).
    """

    def __init__(self, client_ids: Sequence[ClientId]) -> None:
        self._places: dict[ClientId, deque[int]] = {}
        for index, client_id in enumerate(client_ids):
            self._places.setdefault(client_id, deque()).append(index)
        self._held: dict[int, Outcome] = {}
        self.delivered = 0  # outcomes handed on so far, so the first place not yet back

    def add(self, outcome: Outcome) -> list[Outcome]:
        """`outcome` and the held ones it unblocks, in the cohort's order (none if it is early)."""
        place = self._places.get(outcome[0])
        if not place:  # not one of the cohort's: nothing to order it by
            return [outcome]
        self._held[place.popleft()] = outcome
        ready = []
        while self.delivered in self._held:
            ready.append(self._held.pop(self.delivered))
            self.delivered += 1
        return ready

    def rest(self) -> list[Outcome]:
        """What is still held when no more outcomes will come (some call was never answered)."""
        rest = [self._held.pop(index) for index in sorted(self._held)]
        self.delivered += len(rest)
        return rest


def _as_ready(outcome: Outcome) -> list[Outcome]:
    return [outcome]


def _take(pending: deque, index: int) -> tuple[ClientId, Instruction]:
    item = pending[index]
    del pending[index]
    return item


def _time_left(busy: dict[Any, _Call], timeout: float | None) -> float | None:
    """Seconds until the earliest call in flight runs out of time (None: no timeout)."""
    if timeout is None:
        return None
    first_deadline = min(call.started for call in busy.values()) + timeout
    return max(0.0, first_deadline - time.monotonic())
