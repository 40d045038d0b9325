"""FedBuff and FedAsync: asynchronous buffered aggregation on the simulated clock.

FedBuff (Nguyen et al., AISTATS 2022) keeps K clients training at all times. Each client trains
from the model version it received; when it finishes, its update Δ = result − that model, scaled
by a staleness function of how many versions the server moved on meanwhile, enters a buffer, and a
freshly sampled client takes its place (not one already in the buffer: each aggregation holds one
update from each of B different clients). Every B arrivals the buffer is aggregated and the server
optimizer steps: a new version. FedAsync (Xie et al., 2019) is B = 1.

In roost one *round* of the loop is one aggregation, so everything around it is the synchronous
loop's own: the round record, centralized evaluation, checkpoints and resume, the weighting, the
update transforms (clipping, central DP's noise per aggregation), the aggregator and the server
optimizer. What lasts between aggregations — the clients in flight, the virtual clock, the
dispatch counter — lives in the strategy's state tree (`state["own"]`), so a killed and resumed
run continues exactly where it stopped.

Time is the run's simulated clock (`RoundContext.clock`): a dispatched client trains at once, on
the engine, and its result is held until its virtual finish time (its profile's download, compute
and upload). The event order is (finish time, dispatch order), so a run is deterministic given its
seed. Holding the results of the K clients in flight costs O(K × model) server memory, like a
buffering aggregator. A failed client is an arrival that brings nothing: it counts towards B, so
a run whose clients fail still moves on.

Without a simulated clock (a deployment over gRPC) time is real: each client is sent a task that
may outlive the round (`RoundContext.send_task`), and arrivals are taken as they reach the
server (`next_arrival`), each one's update taken against the model it was sent. Tasks in flight
stay out of the state tree (a real client's work cannot be saved): a resumed run sends new ones.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from roost.core.simclock import VirtualClock
from roost.core.types import (
    Failure,
    FitIns,
    FitRes,
    Metrics,
    Outcome,
    Parameters,
)
from roost.errors import ConfigurationError, NotEnoughClientsError
from roost.strategy.base import Arrival, FitAggregate, RoundContext, State
from roost.strategy.optimizers import ServerSGD
from roost.strategy.options import NamedStrategy, Option, register_preset
from roost.strategy.staleness import STALENESS_NAMES, Staleness, staleness_function
from roost.strategy.tally import FitSteps, aggregate_outcomes

InFlight = dict[str, Any]
"""One dispatched client: client, seq (dispatch order), version, start, finish (virtual s), and
its stored update (`update`, `num_examples`, `metrics`) or its `failure`."""


def _options(concurrency: int, buffer_size: int) -> tuple[Option, ...]:
    return (
        Option(
            "concurrency",
            int,
            concurrency,
            "K, clients training at all times",
            flag="--concurrency",
            at_least=1,
        ),
        Option(
            "buffer_size",
            int,
            buffer_size,
            "B, arrivals per aggregation",
            flag="--buffer-size",
            at_least=1,
        ),
        Option(
            "staleness",
            str,
            "polynomial",
            f"how stale updates are weighted: {', '.join(STALENESS_NAMES)}",
            flag="--staleness",
        ),
        Option(
            "staleness_a",
            float,
            None,
            "the polynomial's exponent a (0.5) or the hinge's slope a (10)",
            flag="--staleness-a",
            at_least=0,
        ),
        Option(
            "staleness_b", int, None, "the hinge's cutoff b (4)", flag="--staleness-b", at_least=0
        ),
        Option("server_learning_rate", float, None, "server learning rate η", flag="--server-lr"),
    )


@register_preset
class FedBuff(NamedStrategy):
    """FedBuff (Nguyen et al., 2022): K clients in flight, aggregate every B arrivals.

    Each round of the loop is one aggregation (one model version), so `ServerConfig.num_rounds`
    counts aggregations and the History records versions. Runs on a simulated clock
    (`run_simulation(clock=roost.VirtualClock(...))`; clients all alike without one), or in
    real time in a deployment (`roost.start_server`, `roost server --strategy fedbuff`). Every
    `Strategy` part may be chosen: `server_optimizer` (or `server_learning_rate`: server SGD), the
    aggregator, weighting and update transforms (central DP: `CentralDP` with
    ``expected_clients = num_clients = buffer_size``, noised per aggregation; see
    docs/how-to/async.md for what its accountant then assumes). `concurrency` replaces the
    synchronous cohort's `fraction_fit` and `min_fit_clients`, which FedBuff does not read.
    """

    options = _options(concurrency=10, buffer_size=5)
    needs_clock = True

    def preset_parts(self, knobs: dict[str, Any]) -> dict[str, Any]:
        self.staleness_fn: Staleness = staleness_function(
            self.staleness, self.staleness_a, self.staleness_b
        )
        if self.server_learning_rate is None:
            return {}
        if "server_optimizer" in knobs:
            raise ConfigurationError(
                f"give {type(self).__name__} server_learning_rate or server_optimizer, not both"
            )
        return {"server_optimizer": ServerSGD(learning_rate=self.server_learning_rate)}

    def _check(self) -> None:
        super()._check()
        if self.secure_aggregation is not None:
            raise ConfigurationError(
                f"{type(self).__name__} aggregates updates as they arrive, one buffer at a time; "
                "secure aggregation needs a whole cohort: drop it or use a synchronous strategy"
            )
        if self.compression is not None:
            raise ConfigurationError(
                f"{type(self).__name__} does not compress updates yet: drop compression "
                f"({self.compression.name}) or use a synchronous strategy"
            )
        if self.aggregator.min_updates > self.buffer_size:
            raise ConfigurationError(
                f"{self.aggregator!r} needs {self.aggregator.min_updates} updates per aggregation "
                f"but buffer_size is {self.buffer_size}; raise buffer_size"
            )

    def init_own_state(self, parameters: Parameters) -> State:
        """Virtual now, the next dispatch number, and the clients in flight (none yet)."""
        return {"now": 0.0, "next": 0, "in_flight": []}

    # -- one aggregation -------------------------------------------------------------------------

    def fit_round(
        self, context: RoundContext, parameters: Parameters, state: dict[str, State]
    ) -> FitAggregate:
        """Keep K clients in flight and take arrivals in virtual-time order until B arrived;
        aggregate them (staleness-scaled) and step the server optimizer. Without a simulated
        clock (a deployment), arrivals are taken in real time, as they reach the server."""
        clock = context.clock
        if clock is None:
            return self._fit_in_real_time(context, parameters, state)
        own = state["own"]
        clock.now = float(own["now"])
        state = {**state, "transforms": self.update_transforms.start_round(state["transforms"])}
        flight = _Flight(list(own["in_flight"]), int(own["next"]))
        arrived: list[InFlight] = []
        while len(arrived) < self.buffer_size:
            # A replacement for each arrival, trained from the model of this version; the
            # arrival that fills the buffer is replaced by the next aggregation, from the new one.
            # A client already in this buffer waits for the next: one update per client per
            # aggregation, which central DP's accounting (sensitivity C per release) relies on.
            contributed = {entry["client"] for entry in arrived}
            state = self._dispatch(context, clock, parameters, state, flight, contributed)
            if not flight.entries:
                raise self._too_few_clients("dispatch")
            entries = flight.entries
            entry = entries.pop(min(range(len(entries)), key=lambda i: _event_key(entries[i])))
            clock.now = float(entry["finish"])
            arrived.append(entry)
        fitted = self._aggregate(context.server_round, parameters, arrived, state)
        own = {"now": clock.now, "next": flight.next, "in_flight": flight.entries}
        return fitted._replace(state={**fitted.state, "own": own})

    def _dispatch(
        self,
        context: RoundContext,
        clock: VirtualClock,
        parameters: Parameters,
        state: dict[str, State],
        flight: _Flight,
        contributed: set[str],
    ) -> dict[str, State]:
        """Sample idle clients (not in flight, not `contributed` to this buffer) until K are in
        flight; train them now from `parameters` and keep each one's update until its virtual
        finish time."""
        needed = self.concurrency - len(flight.entries)
        if needed <= 0:
            return state
        busy = {entry["client"] for entry in flight.entries} | contributed
        idle = [c for c in context.available(self.min_available_clients) if c not in busy]
        if not idle:
            return state
        server_round = context.server_round
        instruction = self._fit_instruction(server_round, parameters)
        cohort, state = self._sample_cohort(
            idle, min(needed, len(idle)), context.rng, state, instruction
        )
        outcomes = dict(context.exchange("fit", cohort, parameters, synchronous=False))
        for client_id, _ in cohort:  # in cohort order, whatever order the engine answered in
            outcome = outcomes[client_id]
            seconds = clock.duration(client_id, instruction, outcome)
            if isinstance(outcome, Failure) and outcome.kind == "timeout" and clock.deadline:
                seconds = clock.deadline  # past the deadline, which applies to each task
            entry: InFlight = {
                "client": client_id,
                "seq": flight.next,
                "version": server_round - 1,
                "start": clock.now,
                "finish": clock.now + seconds,
            }
            if isinstance(outcome, FitRes):
                entry["update"] = self.update_fn(outcome.parameters, parameters)
                entry["num_examples"] = outcome.num_examples
                entry["metrics"] = dict(outcome.metrics)
            else:
                assert isinstance(outcome, Failure)
                entry["failure"] = outcome.reason
            flight.entries.append(entry)
            flight.next += 1
        return state

    def _fit_instruction(self, server_round: int, parameters: Parameters) -> FitIns:
        config = self.on_fit_config_fn(server_round) if self.on_fit_config_fn else {}
        return FitIns(parameters, {**self.fit_config_defaults, **config})

    # -- in real time (a deployment) -------------------------------------------------------------

    def _fit_in_real_time(
        self, context: RoundContext, parameters: Parameters, state: dict[str, State]
    ) -> FitAggregate:
        """Keep K clients busy with tasks that outlive the round; take updates as they arrive,
        from whichever version each client trained, until B did; aggregate them."""
        state = {**state, "transforms": self.update_transforms.start_round(state["transforms"])}
        # Nothing in flight is saved (a simulated run's, should this state come from one, is void).
        own = {**state["own"], "next": int(state["own"]["next"]), "in_flight": []}
        arrived: list[InFlight] = []
        while len(arrived) < self.buffer_size:
            contributed = {str(entry["client"]) for entry in arrived}
            state, sent = self._send_tasks(
                context, parameters, state, first=own["next"] == 0, contributed=contributed
            )
            own["next"] += sent
            if not context.tasks_in_flight():
                raise self._too_few_clients("send work to")
            arrived.append(self._arrived(context.next_arrival()))
        fitted = self._aggregate(context.server_round, parameters, arrived, state)
        # Tasks in flight stay out of the state: a real client's work cannot be checkpointed.
        return fitted._replace(state={**fitted.state, "own": own})

    def _send_tasks(
        self,
        context: RoundContext,
        parameters: Parameters,
        state: dict[str, State],
        *,
        first: bool,
        contributed: set[str],
    ) -> tuple[dict[str, State], int]:
        """Sample idle clients (not busy, not `contributed` to this buffer) until K are busy,
        each sent this version; how many were sent.

        The `first` tasks of a run wait for `min_available_clients`; later ones go to the clients
        connected then (with none busy, once one not in this buffer is), so a client gone for
        good holds nothing up."""
        busy = context.tasks_in_flight()
        needed = self.concurrency - len(busy)
        if needed <= 0:
            return state, 0
        connected = context.available(self.min_available_clients if first else 0 if busy else 1)
        idle = [c for c in connected if c not in busy and c not in contributed]
        if not idle and not busy:  # every connected client is in this buffer: wait for another
            try:
                connected = context.available(len(connected) + 1)
            except NotEnoughClientsError:
                raise self._too_few_clients("send work to", len(connected)) from None
            idle = [c for c in connected if c not in contributed]
        if not idle:
            return state, 0
        instruction = self._fit_instruction(context.server_round, parameters)
        cohort, state = self._sample_cohort(
            idle, min(needed, len(idle)), context.rng, state, instruction
        )
        for client_id, sent in cohort:
            context.send_task("fit", client_id, sent, parameters, context.server_round - 1)
        return state, len(cohort)

    def _too_few_clients(self, verb: str, connected: int | None = None) -> ConfigurationError:
        have = "" if connected is None else f" ({connected} connected)"
        return ConfigurationError(
            f"{type(self).__name__} has no client to {verb}{have}: each aggregation takes one "
            f"update from each of buffer_size = {self.buffer_size} different clients; lower "
            "buffer_size or add clients"
        )

    def _arrived(self, arrival: Arrival) -> InFlight:
        """An arrival as the simulated path holds it: its update against the model it was sent."""
        entry: InFlight = {"client": arrival.client_id, "version": arrival.tag}
        outcome, instruction = arrival.outcome, arrival.instruction
        if isinstance(outcome, FitRes) and isinstance(instruction, FitIns):
            entry["update"] = self.update_fn(outcome.parameters, instruction.parameters)
            entry["num_examples"] = outcome.num_examples
            entry["metrics"] = dict(outcome.metrics)
        else:
            reason = outcome.reason if isinstance(outcome, Failure) else "not a fit result"
            entry["failure"] = reason
        return entry

    def _aggregate(
        self,
        server_round: int,
        parameters: Parameters,
        arrived: list[InFlight],
        state: dict[str, State],
    ) -> FitAggregate:
        """The buffer's staleness-scaled updates through the weighting, the transforms and the
        aggregator (the synchronous path's own steps), then the server optimizer's step."""
        version = server_round - 1
        stalenesses = [version - int(entry["version"]) for entry in arrived]
        outcomes = (
            self._as_outcome(entry, self.staleness_fn(s))
            for entry, s in zip(arrived, stalenesses, strict=True)
        )
        steps = FitSteps(
            self.weight_fn, _stored_update, self.update_transforms, server_round, parameters
        )
        partial = aggregate_outcomes(self.aggregator, steps, outcomes, state)
        measured = {
            "staleness_mean": float(np.mean(stalenesses)),
            "staleness_max": max(stalenesses),
        }
        partial = replace(partial, measurements={**partial.measurements, **measured})
        return self.conclude_fit(server_round, parameters, partial)

    @staticmethod
    def _as_outcome(entry: InFlight, scale: float) -> Outcome:
        """The held update, scaled by its staleness weight before the update transforms see
        it: they (central DP's clipping and its check of the mean) see what is aggregated."""
        client_id = str(entry["client"])
        if "failure" in entry:
            return client_id, Failure(client_id, str(entry["failure"]))
        update = [
            np.asarray(array * scale, dtype=array.dtype) if array.dtype.kind == "f" else array
            for array in entry["update"]
        ]
        metrics: Metrics = dict(entry["metrics"])
        return client_id, FitRes(update, int(entry["num_examples"]), metrics)

    def evaluate_round(
        self, context: RoundContext, parameters: Parameters, state: dict[str, State]
    ) -> tuple[float | None, Metrics]:
        """Distributed evaluation of each new version, off the clock (it does not hold up the
        clients in flight); in real time, by idle clients only."""
        if self.fraction_evaluate == 0:
            return None, {}
        if context.clock is None:
            # In real time: the idle clients connected now (a busy one would answer only after
            # its training; waiting for more could wait for ever, as `_send_tasks` says).
            busy = context.tasks_in_flight()
            available = [c for c in context.available(0) if c not in busy]
        else:
            needed = max(self.min_available_clients, self.min_evaluate_clients)
            available = context.available(needed)
        cohort, _ = self.configure_evaluate(
            context.server_round, parameters, available, context.rng, state
        )
        if not cohort:
            return None, {}
        outcomes = context.exchange("evaluate", cohort, parameters, synchronous=False)
        return self.aggregate_evaluate(context.server_round, outcomes)


@register_preset
class FedAsync(FedBuff):
    """FedAsync (Xie et al., 2019): FedBuff with a buffer of one, each arrival a new version."""

    options = _options(concurrency=10, buffer_size=1)


class _Flight:
    """The clients in flight and the next dispatch number, while one aggregation runs."""

    def __init__(self, entries: list[InFlight], next_seq: int) -> None:
        self.entries = entries
        self.next = next_seq


def _event_key(entry: InFlight) -> tuple[float, int]:
    """Arrivals in virtual-time order; a tie goes to the client dispatched first."""
    return float(entry["finish"]), int(entry["seq"])


def _stored_update(update: Parameters, global_parameters: Parameters) -> Parameters:
    """The update as kept at dispatch (result − the model the client trained from)."""
    return update
