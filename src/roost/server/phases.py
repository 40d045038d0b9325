"""Phases: every exchange of a round with its cohort goes through `Round.exchange`.

A phase sends each member of a cohort one instruction and streams back one outcome per member.
Fit, evaluate, a line search's probes and secure aggregation's steps are all phases: they share
the transport, the per-client timeout, the validation of every result at this boundary (a bad
result becomes that client's `Failure`, logged once) and the per-phase counts in the round's
record. Strategies see `Round` through the `roost.strategy.RoundContext` protocol.

A round that withholds client statistics (central DP) counts nothing in its record and logs its
cohorts, counts and failures at DEBUG only: for the server's operator, not for release.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import numpy as np

from roost.client.dp_sgd import RECORD_DELTA, RECORD_EPSILON
from roost.core.simclock import VirtualClock
from roost.core.types import (
    ClientId,
    Failure,
    FitRes,
    Instruction,
    Metrics,
    Outcome,
    Parameters,
    Result,
)
from roost.core.validation import unpack_result, validate_result
from roost.errors import ConfigurationError
from roost.server.history import RoundRecord
from roost.strategy.base import Arrival
from roost.transport.base import Transport

log = logging.getLogger("roost")


class PhaseOutcomes:
    """One phase's validated outcomes, streamed; counted into the round's record once read."""

    def __init__(
        self,
        transport: Transport,
        cohort: Sequence[tuple[ClientId, Instruction]],
        timeout: float | None,
        template: Parameters | None,
        label: str,
        level: int = logging.WARNING,
        clock: VirtualClock | None = None,
        synchronous: bool = True,
    ) -> None:
        self._stream = self._collect(transport, cohort, timeout, template, label, level)
        self.label = label
        self._level = level
        # On a simulated clock: each member's instruction (for its virtual duration), whether
        # this phase waits for its members (then the deadline applies and it takes time), and
        # the virtual seconds it took: its slowest member's, or the deadline.
        self._clock = clock
        self._instructions = dict(cohort) if clock is not None else {}
        self.synchronous = synchronous
        self.elapsed = 0.0
        self.results = 0
        self.failures: list[Failure] = []
        # (ε, δ) that DP-SGD clients reported under the reserved fit-metric names.
        self.record_privacy: list[tuple[float, float]] = []
        self.done = False

    def __iter__(self) -> Iterator[Outcome]:
        for client_id, outcome, sent in self._stream:
            if self._clock is not None:
                outcome = self._timed(client_id, outcome, sent)
            if isinstance(outcome, Failure):
                self.failures.append(outcome)
            else:
                self.results += 1
                if isinstance(outcome, FitRes) and RECORD_EPSILON in outcome.metrics:
                    self._note_record_privacy(client_id, outcome.metrics)
            yield client_id, outcome
        self.done = True

    def _timed(
        self, client_id: ClientId, outcome: Result | Failure, sent: Result | Failure
    ) -> Result | Failure:
        """`outcome` on the simulated clock (its upload costs what the client `sent`: a
        compressed update's bytes): a timeout past the deadline, which applies to each task; a
        synchronous phase's `elapsed` it extends (an asynchronous strategy keeps time itself)."""
        assert self._clock is not None
        seconds = self._clock.duration(client_id, self._instructions[client_id], outcome, sent)
        deadline = self._clock.deadline
        if not self.synchronous and (deadline is None or seconds <= deadline):
            return outcome
        if deadline is not None and (seconds > deadline or isinstance(outcome, Failure)):
            seconds = deadline  # a failed client is waited for until the deadline
            if not isinstance(outcome, Failure):
                outcome = Failure(
                    client_id,
                    f"no result within the virtual deadline of {deadline:g} s",
                    kind="timeout",
                )
                log.log(self._level, "%s: %s", self.label, outcome)
        self.elapsed = max(self.elapsed, seconds)
        return outcome

    def _note_record_privacy(self, client_id: ClientId, metrics: Metrics) -> None:
        epsilon, delta = metrics[RECORD_EPSILON], metrics.get(RECORD_DELTA)
        numbers = [v for v in (epsilon, delta) if isinstance(v, int | float | np.floating)]
        if len(numbers) < 2 or isinstance(epsilon, bool) or isinstance(delta, bool):
            log.log(
                self._level,
                "%s: client %s reported a %s or %s that is not a number; not recorded",
                self.label,
                client_id,
                RECORD_EPSILON,
                RECORD_DELTA,
            )
            return
        if not (np.isfinite(numbers).all() and epsilon >= 0 and 0 <= delta < 1):
            log.log(
                self._level,
                "%s: client %s reported %s=%s, %s=%s; not recorded",
                self.label,
                client_id,
                RECORD_EPSILON,
                epsilon,
                RECORD_DELTA,
                delta,
            )
            return
        self.record_privacy.append((float(epsilon), float(delta)))

    def drain(self) -> None:
        """Read whatever the strategy left unread, so every member is accounted for."""
        for _ in self:
            pass

    @staticmethod
    def _collect(
        transport: Transport,
        cohort: Sequence[tuple[ClientId, Instruction]],
        timeout: float | None,
        template: Parameters | None,
        label: str,
        level: int,
    ) -> Iterator[tuple[ClientId, Result | Failure, Result | Failure]]:
        """(client, outcome for the strategy, what the client sent) as results arrive."""
        pending = dict(cohort)
        for client_id, result in transport.run(cohort, timeout):
            instruction = pending.pop(client_id, None)
            if instruction is None:
                log.log(
                    level,
                    "%s: dropped an unexpected or repeated result from client %s",
                    label,
                    client_id,
                )
                continue
            checked = validate_result(client_id, instruction, result, template)
            outcome = unpack_result(client_id, instruction, checked)  # decodes compressed fits
            if isinstance(outcome, Failure):
                log.log(level, "%s: %s", label, outcome)
            yield client_id, outcome, checked
        for client_id in pending:
            failure = Failure(client_id, "the transport returned no result", kind="disconnected")
            log.log(level, "%s: %s", label, failure)
            yield client_id, failure, failure


class Round:
    """One round's view of the transport, handed to the strategy (`RoundContext`)."""

    def __init__(
        self,
        server_round: int,
        transport: Transport,
        timeout: float | None,
        rng: np.random.Generator,
        *,
        withhold: bool = False,
        clock: VirtualClock | None = None,
    ) -> None:
        self.server_round = server_round
        self.rng = rng
        self.clock = clock
        self.record = RoundRecord(server_round, withheld=withhold)
        # Cohorts, counts and failures are client statistics under central DP: DEBUG only.
        self._info = logging.DEBUG if withhold else logging.INFO
        self._warning = logging.DEBUG if withhold else logging.WARNING
        self._transport = transport
        self._timeout = timeout
        self._num_available = 0
        self._open: list[tuple[str, PhaseOutcomes]] = []

    def available(self, count: int) -> list[ClientId]:
        """The connected clients, once at least `count` are."""
        client_ids = self._transport.wait_for_clients(count)
        self._num_available = len(client_ids)
        return client_ids

    def exchange(
        self,
        phase: str,
        cohort: Sequence[tuple[ClientId, Instruction]],
        template: Parameters | None,
        *,
        synchronous: bool = True,
    ) -> PhaseOutcomes:
        """Run one phase: `cohort`'s instructions out, validated outcomes streamed back.

        `template` is the model results must match (None when the phase returns no arrays that
        must be shaped like the model). On a simulated clock, a `synchronous` phase (the round
        waits for it) moves the clock on by its slowest member (or the deadline, past which a
        member is a timeout); an asynchronous strategy's phases do not, it keeps time itself.
        """
        self.close()
        label = f"{phase}_round {self.server_round}"
        log.log(
            self._info,
            "%s: strategy sampled %d clients (out of %d)",
            label,
            len(cohort),
            self._num_available,
        )
        outcomes = PhaseOutcomes(
            self._transport,
            cohort,
            self._timeout,
            template,
            label,
            self._warning,
            self.clock,
            synchronous,
        )
        self._open.append((phase, outcomes))
        return outcomes

    def send_task(
        self,
        phase: str,
        client_id: ClientId,
        instruction: Instruction,
        template: Parameters,
        tag: int,
    ) -> None:
        """Refused: only a deployment's round (`roost.server.tasks.LiveRound`) sends tasks that
        outlive it."""
        raise _no_tasks()

    def next_arrival(self) -> Arrival:
        """Refused, as `send_task` is."""
        raise _no_tasks()

    def tasks_in_flight(self) -> dict[ClientId, int]:
        """None: this run sends no real-time tasks."""
        return {}

    def close(self) -> None:
        """Finish the phases still open: read what is left, count and log them."""
        for phase, outcomes in self._open:
            outcomes.drain()
            if self.clock is not None and outcomes.synchronous:
                self.clock.now += outcomes.elapsed
            if not self.record.withheld:
                failed = [f.client_id for f in outcomes.failures]
                self.record.count(phase, outcomes.results, failed)
                self.record.note_record_privacy(outcomes.record_privacy)
            log.log(
                self._info,
                "%s received %d results and %d failures",
                outcomes.label,
                outcomes.results,
                len(outcomes.failures),
            )
        self._open.clear()


def _no_tasks() -> ConfigurationError:
    return ConfigurationError(
        "this run keeps no real-time tasks: an asynchronous strategy runs on a simulated clock "
        "in a simulation (run_simulation gives it one) or in real time over gRPC (roost server)"
    )
