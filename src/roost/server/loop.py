"""The one round loop: phases (fit, …) → aggregate → evaluate → record → checkpoint → next.

Every way of running roost (simulation engines, gRPC deployment) goes through `run_rounds`; they
differ only in the transport they hand it. The loop owns one `ServerState` — the global model, the
strategy's state tree, the sampling RNG, the round and the History — and a checkpoint is that
state. The strategy runs each round's phases through a `roost.server.phases.Round`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from roost.core.simclock import VirtualClock
from roost.core.types import (
    CLIENT_FN_RAISED,
    ClientId,
    Failure,
    GetParametersIns,
    GetParametersRes,
    Metrics,
    Parameters,
)
from roost.core.validation import check_parameters
from roost.errors import ConfigurationError, InvalidMessageError, RoostError, RunFinished
from roost.server.history import History
from roost.server.phases import PhaseOutcomes, Round
from roost.server.tasks import LiveRound, Tasks
from roost.strategy.strategy import Strategy
from roost.transport.base import NodeState, NodeStateStore, Transport

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
    """Everything needed to continue a run after `server_round` completed rounds.

    `strategy_state` is the tree `Strategy.init` made and every round's steps advanced; it holds
    plain data only, so `roost.server.state.StateStore` saves it without knowing what is in it.
    `node_states` holds each simulated node's `Context.state` (by node id, empty ones left out)
    when the run hands the loop its engine's `NodeStateStore`; it is empty otherwise.
    """

    server_round: int
    parameters: Parameters
    strategy_state: dict[str, Any]
    rng_state: dict[str, Any]
    history: History = field(default_factory=History)
    node_states: dict[ClientId, NodeState] = field(default_factory=dict)


RoundCallback = Callable[[ServerState], None]


def run_rounds(
    strategy: Strategy,
    transport: Transport,
    config: ServerConfig,
    *,
    seed: int | None = None,
    resume_from: ServerState | None = None,
    on_round_end: RoundCallback | None = None,
    node_states: NodeStateStore | None = None,
    clock: VirtualClock | None = None,
    real_time: bool = False,
) -> History:
    """Run `config.num_rounds` federated rounds; return the History, final model included.

    Args:
        strategy: decides who takes part in each phase, what they receive, how results combine.
        transport: delivers a cohort's instructions and streams back the outcomes.
        config: number of rounds and the per-client timeout.
        seed: seeds client sampling (and the choice of the client asked for initial parameters).
        resume_from: a state saved by `on_round_end`; the run continues after its round.
        on_round_end: called with the state after every completed round (for checkpoints).
        node_states: where the transport (a simulation engine) keeps its nodes' `Context.state`:
            each round's state passed to `on_round_end` carries a snapshot of them, and those of
            `resume_from` are restored before the first resumed round.
        clock: run on this simulated clock (`roost.core.simclock`): each synchronous phase
            takes its slowest member's virtual time (or the clock's deadline, past which a member
            is a timeout), and every round's record gets its `virtual_time` and `wall_time`.
        real_time: the transport serves runs from several threads at once (gRPC): FedBuff then
            keeps real time, with tasks that outlive their round (`roost.server.tasks`).
    """
    started = time.perf_counter()
    check_clock(strategy, clock, real_time)
    live = real_time and clock is None and strategy.needs_clock
    tasks = Tasks(transport, config.round_timeout) if live else None
    rng = np.random.default_rng(seed)
    if resume_from is None:
        parameters = _initial_parameters(strategy, transport, rng, config.round_timeout)
        state = ServerState(0, parameters, strategy.init(parameters), {}, History())
        _evaluate_centralized(strategy, 0, parameters, state.history)
    else:
        _check_node_states(resume_from, node_states)
        state = _resumed(strategy, resume_from, config, transport)
        rng.bit_generator.state = resume_from.rng_state
        if node_states is not None:
            # After `_resumed`, whose model check may have asked a client for its parameters.
            node_states.restore(resume_from.node_states)

    for server_round in range(state.server_round + 1, config.num_rounds + 1):
        try:
            timing = None if clock is None else (clock, started)
            state = _run_round(strategy, transport, config, server_round, state, rng, timing, tasks)
        except RunFinished as reason:
            log.warning("stopping before round %d: %s", server_round, reason)
            break
        if on_round_end is not None:
            if node_states is not None:
                state.node_states = node_states.snapshot()
            on_round_end(state)
    if tasks is not None:
        tasks.close()  # what is still in flight is abandoned: the run is over

    history = state.history
    history.parameters = state.parameters
    log.info("run finished %d round(s) in %.2f s", config.num_rounds, time.perf_counter() - started)
    return history


def check_clock(
    strategy: Strategy | None, clock: VirtualClock | None, real_time: bool = False
) -> None:
    """Refuse an asynchronous strategy (FedBuff) with neither a simulated clock nor real time."""
    if strategy is not None and strategy.needs_clock and clock is None and not real_time:
        raise ConfigurationError(
            f"{type(strategy).__name__} keeps time: simulate it (run_simulation gives it a "
            "simulated clock; roost simulate --client-speeds varies its clients) or deploy it "
            "(roost server, start_server), where it keeps real time"
        )


def _run_round(
    strategy: Strategy,
    transport: Transport,
    config: ServerConfig,
    server_round: int,
    state: ServerState,
    rng: np.random.Generator,
    timing: tuple[VirtualClock, float] | None = None,
    tasks: Tasks | None = None,
) -> ServerState:
    """One round: the strategy's fit phases, centralized evaluation, its evaluate phases.

    A strategy that withholds client statistics (central DP) gets no distributed evaluation and
    its round records no client metrics or counts: ε covers none of them. With `timing` (the
    simulated clock and the run's start on `time.perf_counter`), the round starts at the virtual
    time the previous one recorded and records its own.
    """
    history, parameters = state.history, state.parameters
    withhold = strategy.withholds_client_statistics
    clock = None if timing is None else timing[0]
    if clock is not None:
        last = history.rounds[-1].virtual_time if history.rounds else None
        clock.now = last or 0.0
    timeout = config.round_timeout
    context = (
        Round(server_round, transport, timeout, rng, withhold=withhold, clock=clock)
        if tasks is None
        else LiveRound(server_round, transport, timeout, rng, tasks, withhold=withhold)
    )
    fitted = strategy.fit_round(context, parameters, state.strategy_state)
    context.close()
    if fitted.metrics and not withhold:
        history.add_metrics_distributed_fit(
            server_round, finite_only(fitted.metrics, "fit metrics")
        )
    if fitted.measurements:
        history.add_measurements(server_round, finite_only(fitted.measurements, "measurements"))
    strategy_state = fitted.state
    if fitted.parameters is not None:
        # The strategy's output becomes the global model: it must still look like the global model.
        aggregate = check_parameters(fitted.parameters, parameters, check_finite=False)
        if all_finite(aggregate):
            parameters = aggregate
        else:
            # Finite updates can still sum past the float range. One bad round must neither
            # stop the run nor poison the model (or an optimizer's moments built from it).
            log.warning(
                "round %d: the aggregated model contains NaN or Inf; keeping the previous "
                "global model and strategy state for this round",
                server_round,
            )
            strategy_state = state.strategy_state
    _evaluate_centralized(strategy, server_round, parameters, history)
    loss, metrics = (
        (None, {}) if withhold else strategy.evaluate_round(context, parameters, strategy_state)
    )
    context.close()
    if loss is not None and _finite_loss(loss, f"round {server_round}: distributed loss"):
        history.add_loss_distributed(server_round, loss)
    if metrics:
        history.add_metrics_distributed(server_round, finite_only(metrics, "evaluate metrics"))
    if timing is not None:
        context.record.virtual_time = timing[0].now
        context.record.wall_time = round(time.perf_counter() - timing[1], 6)
    history.rounds.append(context.record)
    return ServerState(server_round, parameters, strategy_state, rng.bit_generator.state, history)


def all_finite(parameters: Parameters) -> bool:
    """Whether every float array of `parameters` holds only finite values."""
    return all(a.dtype.kind != "f" or bool(np.isfinite(a).all()) for a in parameters)


def finite_only(metrics: Metrics, what: str) -> Metrics:
    """`metrics` without NaN or infinite floats, each left out with a warning.

    Aggregation functions are user code: what they return is recorded, checkpointed and written
    as JSON, none of which can hold a NaN.
    """
    kept: Metrics = {}
    for name, value in metrics.items():
        if isinstance(value, float | np.floating) and not np.isfinite(value):
            log.warning("%s: %s is %s; not recorded", what, name, value)
            continue
        kept[name] = value
    return kept


def _finite_loss(loss: float, what: str) -> bool:
    if np.isfinite(loss):
        return True
    log.warning("%s is %s; not recorded", what, loss)
    return False


def _resumed(
    strategy: Strategy, saved: ServerState, config: ServerConfig, transport: Transport
) -> ServerState:
    """The saved state, if this run may continue it; else one line saying why not.

    The run must ask for at least the rounds already done, use the strategy that made the state
    (the same class, and parts whose state trees match) and a model of the same arrays.
    """
    done, made_by = saved.server_round, saved.strategy_state.get("strategy")
    if done > config.num_rounds:
        raise ConfigurationError(
            f"the saved state records {done} completed rounds, more than the "
            f"{config.num_rounds} asked for; resume with {done} rounds or more, or start a new "
            "state directory"
        )
    parameters = check_parameters(saved.parameters)
    fresh = strategy.init(parameters)
    this = fresh["strategy"]
    if made_by != this:
        raise ConfigurationError(
            f"the saved state records a run of {made_by or 'another strategy'}, not {this}; "
            f"resume with the strategy that made it, or start {this} in a new state directory"
        )
    if _fixed_structure(saved.strategy_state) != _fixed_structure(fresh):
        raise ConfigurationError(
            f"the saved state was made by a {this} built differently (other parts or options) "
            f"from {strategy!r}; resume with the same strategy, or start a new state directory"
        )
    model = _initial_parameters(strategy, transport, np.random.default_rng(0), config.round_timeout)
    try:
        check_parameters(model, parameters, check_finite=False)
    except InvalidMessageError as error:
        raise ConfigurationError(
            f"the saved state records a different model ({error}); resume with the model that "
            "made it, or start a new state directory"
        ) from None
    log.info("resuming after round %d of %d", done, config.num_rounds)
    return ServerState(
        done, parameters, saved.strategy_state, saved.rng_state, saved.history, saved.node_states
    )


def _check_node_states(saved: ServerState, node_states: NodeStateStore | None) -> None:
    """Refuse to resume a run whose nodes kept state on a transport that keeps none."""
    if saved.node_states and node_states is None:
        raise ConfigurationError(
            f"the saved state holds the Context.state of {len(saved.node_states)} simulated "
            "node(s), which this run cannot give back to its clients (the vectorized engine and "
            "a deployment keep no node state); resume on the sequential, process or ray engine, "
            "or start a new state directory"
        )


def _fixed_structure(tree: dict[str, Any]) -> Any:
    """The structure a resumed run must match: the parts' state, and whether the strategy keeps
    state of its own (whose shape may grow from round to round: `Strategy.init_own_state`)."""
    return tree_structure({k: v for k, v in tree.items() if k != "own"}), "own" in tree


def tree_structure(tree: Any) -> Any:
    """The shape of a state tree: its containers and keys, array shapes/dtypes, scalar types."""
    if isinstance(tree, dict):
        return {key: tree_structure(value) for key, value in tree.items()}
    if isinstance(tree, list | tuple):
        return [tree_structure(value) for value in tree]
    if isinstance(tree, np.ndarray):
        return ("array", tree.shape, tree.dtype.str)
    if isinstance(tree, bool | np.bool_):
        return "bool"
    if isinstance(tree, int | float | np.number):
        return "number"
    return type(tree).__name__


INITIAL_PARAMETERS_TRIES = 5
"""How many clients are asked, one after another, for the initial parameters before giving up."""


def _initial_parameters(
    strategy: Strategy, transport: Transport, rng: np.random.Generator, timeout: float | None
) -> Parameters:
    parameters = strategy.initial_model()
    if parameters is not None:
        log.info("using initial parameters provided by the strategy")
        return check_parameters(parameters)
    client_ids = transport.wait_for_clients(strategy.min_available_clients)
    first = int(rng.integers(len(client_ids)))
    # One draw, as always: a run whose first client answers samples exactly as before. Should it
    # fail, the clients after it are asked in turn (no more draws), as a round would go on.
    candidates = (client_ids[first:] + client_ids[:first])[:INITIAL_PARAMETERS_TRIES]
    log.info("requesting initial parameters from one random client (client %s)", candidates[0])
    failures: list[Failure] = []
    for client_id in candidates:
        if failures:
            log.info("requesting initial parameters from client %s instead", client_id)
        outcome = _ask_for_parameters(transport, client_id, timeout)
        if not isinstance(outcome, Failure):
            log.info("received initial parameters from client %s", client_id)
            return outcome
        failures.append(outcome)
    raise RoostError(_no_initial_parameters(failures))


def _ask_for_parameters(
    transport: Transport, client_id: ClientId, timeout: float | None
) -> Parameters | Failure:
    """One client's parameters, or why it sent none (its failure is logged as it comes)."""
    outcomes = PhaseOutcomes(transport, [(client_id, GetParametersIns())], timeout, None, "init")
    for _, result in outcomes:
        if isinstance(result, GetParametersRes):
            return result.parameters
        return result
    return Failure(client_id, "it sent no initial parameters", kind="disconnected")


def _no_initial_parameters(failures: list[Failure]) -> str:
    """The one line that ends a run no client of which gave initial parameters."""
    last = failures[-1]
    culprit = (
        "the app's client_fn"
        if last.reason.startswith(CLIENT_FN_RAISED)
        else "the client's get_parameters"
    )
    if len(failures) == 1:
        return (
            f"could not get initial parameters from client {last.client_id}: {last.reason}; "
            f"pass initial_parameters to the strategy or fix {culprit}"
        )
    names = ", ".join(str(failure.client_id) for failure in failures)
    return (
        f"could not get initial parameters from any of the {len(failures)} clients asked "
        f"({names}); the last said: {last.reason}; pass initial_parameters to the strategy or "
        f"fix {culprit}"
    )


def _evaluate_centralized(
    strategy: Strategy, server_round: int, parameters: Parameters, history: History
) -> None:
    outcome = strategy.centralized_evaluation(server_round, parameters)
    if outcome is None:
        return
    loss, metrics = outcome
    log.info("centralized evaluation, round %d: loss %.6g %s", server_round, loss, metrics or "")
    if _finite_loss(loss, f"centralized evaluation, round {server_round}: loss"):
        history.add_loss_centralized(server_round, loss)
    if metrics:
        history.add_metrics_centralized(server_round, finite_only(metrics, "centralized metrics"))
