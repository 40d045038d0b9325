"""Real-time tasks: single-client exchanges whose outcomes outlive the round that sent them.

An asynchronous strategy (FedBuff) in a deployment keeps K clients training at all times and
aggregates updates as they arrive, so a client sent work in one round may answer in a later one.
Each task is a phase of one client (`PhaseOutcomes`: the same transport call, timeout, validation
and failure handling as every phase), read on a thread of its own; its outcome goes to one queue
that the loop owns for the whole run, and whichever round is running takes it from there.

The transport must serve several runs at once (the gRPC server does: each run has its own sink).
A simulation keeps virtual time instead and never starts a task. Tasks in flight are not in the
checkpoint (a real client's work cannot be saved): a resumed run sends that work out again.
"""

from __future__ import annotations

import logging
import queue
import threading

import numpy as np

from roost.core.types import ClientId, Failure, FitIns, Instruction, Parameters
from roost.server.phases import PhaseOutcomes, Round
from roost.strategy.base import Arrival
from roost.transport.base import Transport

log = logging.getLogger("roost")

_Queued = tuple[Arrival, list[tuple[float, float]]]


class Tasks:
    """The run's real-time tasks: sent by one round, arriving in any later one.

    Args:
        transport: serves several runs at once, from several threads.
        timeout: seconds each task may take (the run's `round_timeout`), None for no limit.
    """

    def __init__(self, transport: Transport, timeout: float | None) -> None:
        self._transport = transport
        self._timeout = timeout
        self._arrivals: queue.SimpleQueue[_Queued] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._in_flight: dict[ClientId, int] = {}
        self._closed = threading.Event()

    def send(
        self,
        client_id: ClientId,
        instruction: Instruction,
        template: Parameters,
        tag: int,
        label: str,
        level: int,
    ) -> None:
        """Send `client_id` its instruction; its validated outcome arrives through `next`."""
        with self._lock:
            if client_id in self._in_flight:
                raise ValueError(f"client {client_id} has a task in flight already")
            self._in_flight[client_id] = tag
        task = threading.Thread(
            target=self._carry,
            args=(client_id, instruction, template, tag, label, level),
            name=f"roost-task-{client_id}",
            daemon=True,  # a task still in flight when the run ends is abandoned
        )
        task.start()

    def _carry(
        self,
        client_id: ClientId,
        instruction: Instruction,
        template: Parameters,
        tag: int,
        label: str,
        level: int,
    ) -> None:
        # Failures are logged here, not by the phase: those of tasks abandoned at the end of
        # the run (their clients are sent home) are no one's concern.
        outcomes = PhaseOutcomes(
            self._transport,
            [(client_id, instruction)],
            self._timeout,
            template,
            label,
            logging.DEBUG,
        )
        delivered = False
        try:
            for _, outcome in outcomes:
                # The outcome's (ε, δ), when a DP-SGD client reported them, is noted already.
                privacy = list(outcomes.record_privacy)
                if isinstance(outcome, Failure) and not self._closed.is_set():
                    log.log(level, "%s: %s", label, outcome)
                self._arrivals.put((Arrival(client_id, instruction, tag, outcome), privacy))
                delivered = True
        except Exception as error:  # the transport failed under this task: the client's failure
            if delivered or self._closed.is_set():
                log.debug("%s: after client %s's outcome: %s", label, client_id, error)
                return
            log.log(level, "%s: the task of client %s failed: %s", label, client_id, error)
            failure = Failure(client_id, f"the task failed on the server: {error}", "disconnected")
            self._arrivals.put((Arrival(client_id, instruction, tag, failure), []))

    def next(self) -> tuple[Arrival, list[tuple[float, float]]]:
        """The next outcome to arrive (blocking until one does), and what DP-SGD clients
        reported for their record-level privacy with it."""
        with self._lock:
            if not self._in_flight:
                raise RuntimeError("no task is in flight: nothing can arrive")
        arrival, privacy = self._arrivals.get()
        with self._lock:
            self._in_flight.pop(arrival.client_id, None)
        return arrival, privacy

    def in_flight(self) -> dict[ClientId, int]:
        """Clients whose outcome has not been taken yet, with their tags."""
        with self._lock:
            return dict(self._in_flight)

    def close(self) -> None:
        """The run is over: tasks still in flight are abandoned (closing the transport ends
        them), and their failures go unlogged."""
        self._closed.set()


class LiveRound(Round):
    """A round of a run with real-time tasks: `Round`, and the run's `Tasks` to send and take."""

    def __init__(
        self,
        server_round: int,
        transport: Transport,
        timeout: float | None,
        rng: np.random.Generator,
        tasks: Tasks,
        *,
        withhold: bool = False,
    ) -> None:
        super().__init__(server_round, transport, timeout, rng, withhold=withhold)
        self._tasks = tasks

    def send_task(
        self,
        phase: str,
        client_id: ClientId,
        instruction: Instruction,
        template: Parameters,
        tag: int,
    ) -> None:
        label = f"{phase}_round {self.server_round}"
        log.log(self._info, "%s: sent client %s a task (version %d)", label, client_id, tag)
        self._tasks.send(client_id, instruction, template, tag, label, self._warning)

    def next_arrival(self) -> Arrival:
        arrival, privacy = self._tasks.next()
        if not self.record.withheld:
            # Counted in the round that takes it: the aggregation it enters (or fails to).
            phase = "fit" if isinstance(arrival.instruction, FitIns) else "task"
            failed = [arrival.client_id] if isinstance(arrival.outcome, Failure) else []
            self.record.count(phase, 0 if failed else 1, failed)
            self.record.note_record_privacy(privacy)
        return arrival

    def tasks_in_flight(self) -> dict[ClientId, int]:
        return self._tasks.in_flight()
