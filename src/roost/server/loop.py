"""The one round loop: sample → dispatch → collect → aggregate → evaluate → record → next.

Every way of running roost (in-process simulation, worker pools, the vectorized engine, gRPC
deployment) goes through `run_rounds`; they differ only in the transport they hand it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from roost.core.types import (
    ClientId,
    Failure,
    GetParametersIns,
    GetParametersRes,
    Instruction,
    Outcome,
    Parameters,
)
from roost.core.validation import check_parameters, validate_result
from roost.errors import ConfigurationError, RoostError
from roost.server.history import History, RoundRecord
from roost.strategy.strategy import Strategy
from roost.transport.base import Transport

log = logging.getLogger("roost")


@dataclass(frozen=True)
class ServerConfig:
    """How long a run lasts.

    Args:
        num_rounds: number of federated rounds.
        round_timeout: seconds a client may take to answer one instruction; None waits forever.
    """

    num_rounds: int = 1
    round_timeout: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.num_rounds, int) or self.num_rounds < 0:
            raise ConfigurationError(f"num_rounds must be an int >= 0, got {self.num_rounds!r}")
        if self.round_timeout is not None and not self.round_timeout > 0:
            raise ConfigurationError(f"round_timeout must be > 0 or None, got {self.round_timeout}")


@dataclass
class ServerState:
    """Everything needed to continue a run after `server_round` completed rounds."""

    server_round: int
    parameters: Parameters
    strategy_state: dict[str, Any]
    rng_state: dict[str, Any]
    history: History = field(default_factory=History)


RoundCallback = Callable[[ServerState], None]


def run_rounds(
    strategy: Strategy,
    transport: Transport,
    config: ServerConfig,
    *,
    seed: int | None = None,
    resume_from: ServerState | None = None,
    on_round_end: RoundCallback | None = None,
) -> History:
    """Run `config.num_rounds` federated rounds; return the History, final model included.

    Args:
        strategy: decides who trains, what they receive, and how results combine.
        transport: delivers a cohort's instructions and streams back the outcomes.
        config: number of rounds and the per-client timeout.
        seed: seeds client sampling (and the choice of the client asked for initial parameters).
        resume_from: a state saved by `on_round_end`; the run continues after its round.
        on_round_end: called with the state after every completed round (for checkpoints).
    """
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    if resume_from is None:
        history = History()
        parameters = _initial_parameters(strategy, transport, rng, config.round_timeout)
        first_round = 1
        _evaluate_centralized(strategy, 0, parameters, history)
    else:
        history = resume_from.history
        parameters = check_parameters(resume_from.parameters)
        strategy.load_state_dict(resume_from.strategy_state)
        rng.bit_generator.state = resume_from.rng_state
        first_round = resume_from.server_round + 1
        log.info("resuming after round %d of %d", resume_from.server_round, config.num_rounds)

    for server_round in range(first_round, config.num_rounds + 1):
        record = RoundRecord(server_round)
        parameters = _fit_round(
            strategy, transport, config, server_round, parameters, rng, history, record
        )
        _evaluate_centralized(strategy, server_round, parameters, history)
        _evaluate_round(strategy, transport, config, server_round, parameters, rng, history, record)
        history.rounds.append(record)
        if on_round_end is not None:
            on_round_end(
                ServerState(
                    server_round=server_round,
                    parameters=parameters,
                    strategy_state=strategy.state_dict(),
                    rng_state=rng.bit_generator.state,
                    history=history,
                )
            )

    history.parameters = parameters
    log.info("run finished %d round(s) in %.2f s", config.num_rounds, time.perf_counter() - started)
    return history


def _initial_parameters(
    strategy: Strategy, transport: Transport, rng: np.random.Generator, timeout: float | None
) -> Parameters:
    parameters = strategy.initialize_parameters()
    if parameters is not None:
        log.info("using initial parameters provided by the strategy")
        return check_parameters(parameters)
    client_ids = transport.wait_for_clients(strategy.min_available_clients)
    client_id = client_ids[int(rng.integers(len(client_ids)))]
    log.info("requesting initial parameters from one random client (client %s)", client_id)
    instruction = GetParametersIns()
    for _, result in _collect(transport, [(client_id, instruction)], timeout, None, "init"):
        if isinstance(result, GetParametersRes):
            log.info("received initial parameters from client %s", client_id)
            return result.parameters
        raise RoostError(
            f"could not get initial parameters from client {client_id}: {result.reason}; "
            "pass initial_parameters to the strategy or fix the client's get_parameters"
        )
    raise RoostError(f"client {client_id} sent no initial parameters")


def _fit_round(
    strategy: Strategy,
    transport: Transport,
    config: ServerConfig,
    server_round: int,
    parameters: Parameters,
    rng: np.random.Generator,
    history: History,
    record: RoundRecord,
) -> Parameters:
    available = transport.wait_for_clients(
        max(strategy.min_available_clients, strategy.min_fit_clients)
    )
    cohort = strategy.configure_fit(server_round, parameters, available, rng)
    if not cohort:
        log.info("fit_round %d: no clients selected, skipping", server_round)
        return parameters
    log.info(
        "fit_round %d: strategy sampled %d clients (out of %d)",
        server_round,
        len(cohort),
        len(available),
    )
    outcomes = _collect(
        transport, cohort, config.round_timeout, parameters, f"fit_round {server_round}"
    )
    tally = _Tally(outcomes)
    new_parameters, metrics = strategy.aggregate_fit(server_round, parameters, tally)
    tally.drain()
    record.fit_results, record.fit_failures = tally.results, len(tally.failures)
    record.failed_clients.extend(failure.client_id for failure in tally.failures)
    log.info(
        "fit_round %d received %d results and %d failures",
        server_round,
        tally.results,
        len(tally.failures),
    )
    if metrics:
        history.add_metrics_distributed_fit(server_round, metrics)
    if new_parameters is None:
        return parameters
    # The strategy's output becomes the global model: it must still look like the global model.
    return check_parameters(new_parameters, parameters)


def _evaluate_round(
    strategy: Strategy,
    transport: Transport,
    config: ServerConfig,
    server_round: int,
    parameters: Parameters,
    rng: np.random.Generator,
    history: History,
    record: RoundRecord,
) -> None:
    if strategy.fraction_evaluate == 0:
        return
    available = transport.wait_for_clients(
        max(strategy.min_available_clients, strategy.min_evaluate_clients)
    )
    cohort = strategy.configure_evaluate(server_round, parameters, available, rng)
    if not cohort:
        return
    log.info(
        "evaluate_round %d: strategy sampled %d clients (out of %d)",
        server_round,
        len(cohort),
        len(available),
    )
    outcomes = _collect(
        transport, cohort, config.round_timeout, parameters, f"evaluate_round {server_round}"
    )
    tally = _Tally(outcomes)
    loss, metrics = strategy.aggregate_evaluate(server_round, tally)
    tally.drain()
    record.evaluate_results, record.evaluate_failures = tally.results, len(tally.failures)
    log.info(
        "evaluate_round %d received %d results and %d failures",
        server_round,
        tally.results,
        len(tally.failures),
    )
    if loss is not None:
        history.add_loss_distributed(server_round, loss)
    if metrics:
        history.add_metrics_distributed(server_round, metrics)


def _evaluate_centralized(
    strategy: Strategy, server_round: int, parameters: Parameters, history: History
) -> None:
    outcome = strategy.evaluate(server_round, parameters)
    if outcome is None:
        return
    loss, metrics = outcome
    log.info("centralized evaluation, round %d: loss %.6g %s", server_round, loss, metrics or "")
    history.add_loss_centralized(server_round, loss)
    if metrics:
        history.add_metrics_centralized(server_round, metrics)


def _collect(
    transport: Transport,
    cohort: Sequence[tuple[ClientId, Instruction]],
    timeout: float | None,
    template: Parameters | None,
    label: str,
) -> Iterator[Outcome]:
    """Stream the cohort's outcomes, validated, exactly one per member, failures logged."""
    pending = dict(cohort)
    for client_id, result in transport.run(cohort, timeout):
        instruction = pending.pop(client_id, None)
        if instruction is None:
            log.warning(
                "%s: dropped an unexpected or repeated result from client %s", label, client_id
            )
            continue
        outcome = validate_result(client_id, instruction, result, template)
        if isinstance(outcome, Failure):
            log.warning("%s: %s", label, outcome)
        yield client_id, outcome
    for client_id in pending:
        failure = Failure(client_id, "the transport returned no result", kind="disconnected")
        log.warning("%s: %s", label, failure)
        yield client_id, failure


class _Tally:
    """Passes outcomes through to the strategy while counting results and failures."""

    def __init__(self, outcomes: Iterable[Outcome]) -> None:
        self._outcomes = iter(outcomes)
        self.results = 0
        self.failures: list[Failure] = []

    def __iter__(self) -> Iterator[Outcome]:
        for client_id, outcome in self._outcomes:
            if isinstance(outcome, Failure):
                self.failures.append(outcome)
            else:
                self.results += 1
            yield client_id, outcome

    def drain(self) -> None:
        """Consume whatever a strategy left unread, so every client is accounted for."""
        for _ in self:
            pass
