"""A Message-API strategy's own steps, run at their named points of roost's round loop.

When a strategy overrides `configure_train`, `aggregate_train`, `configure_evaluate` or
`aggregate_evaluate` (or is written from scratch), `start` hands the loop a `MessageSteps`: each
round it calls `configure_train(round, arrays, config, grid)`, sends the messages it returns
through the run's transport (the loop's timeouts, failure handling, and validation of every
reply against the global model), and gives `aggregate_train(round, replies)` the replies that
passed (a node that failed answers with an error reply; one past the timeout is left out, as on
Flower). The built-in steps (`super().configure_train(...)`, …) are those of the roost preset the
strategy names, computed on the round's state tree, which the loop checkpoints.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from roost.compat.flwr import codec
from roost.compat.flwr.message import Message, MessageType
from roost.compat.flwr.records import (
    ArrayRecord,
    ConfigRecord,
    MetricRecord,
    RecordDict,
    array_values,
    wrap_arrays,
)
from roost.compat.flwr.serverapp.grid import Grid
from roost.compat.flwr.serverapp.strategy.messaging import (
    ROUND_KEY,
    GridTransport,
    has_loss,
    loss_of,
    scalar_metrics,
)
from roost.compat.flwr.serverapp.strategy.result import Result
from roost.core.types import ClientId, EvaluateIns, Failure, FitIns, Metrics, Outcome, Parameters
from roost.errors import ConfigurationError
from roost.strategy.base import FitAggregate, RoundContext, State
from roost.strategy.strategy import Strategy as RoostStrategy

log = logging.getLogger("roost")


class MessageRound:
    """One round as a Message-API strategy's steps see it, and roost's side of it."""

    def __init__(
        self, steps: MessageSteps, context: RoundContext, parameters: Parameters, state: State
    ) -> None:
        self.steps = steps
        self.context = context
        self.parameters = parameters
        self.state = state
        self.measurements: dict[str, float] = {}

    def cohort(self, messages: Iterable[Message], kind: type) -> list[tuple[ClientId, Any]]:
        """roost's cohort for the strategy's messages; each is sent as it is."""
        transport, layout = self.steps.transport, self.steps.transport.layout
        made: dict[int, Any] = {}
        cohort = []
        for message in messages:
            if not isinstance(message, Message):
                raise ConfigurationError(
                    f"configure_train / configure_evaluate return Messages, got "
                    f"{type(message).__name__}"
                )
            client_id = self.steps.grid.client_id(message.metadata.dst_node_id)
            if client_id is None:
                log.warning("no node %s: its message is not sent", message.metadata.dst_node_id)
                continue
            content = message.content
            if id(content) not in made:
                arrays = content.array_records.get(layout.arrayrecord_key)
                config = content.config_records.get(layout.configrecord_key, ConfigRecord())
                try:
                    parameters = self.parameters if arrays is None else transport.ordered(arrays)
                except ValueError as error:
                    raise ConfigurationError(f"a message's ArrayRecord: {error}") from None
                made[id(content)] = kind(parameters, dict(config))
            transport.prepared[client_id] = message
            cohort.append((client_id, made[id(content)]))
        return cohort

    def replies(self, outcomes: Iterable[Outcome]) -> list[Message]:
        """The validated replies; a failed node's error reply; none for a node past the timeout."""
        transport = self.steps.transport
        replies = []
        for client_id, outcome in outcomes:
            if not isinstance(outcome, Failure):
                replies.append(transport.replies[client_id])
            elif outcome.kind != "timeout":
                replies.append(codec.failure_to_reply(outcome, transport.prepared[client_id]))
        return replies

    def outcomes(self, replies: Iterable[Message], kind: type) -> list[Outcome]:
        """roost's outcomes for `replies` (what the built-in `aggregate_*` steps aggregate)."""
        transport = self.steps.transport
        outcomes: list[Outcome] = []
        for reply in replies:
            client_id = self.steps.grid.client_id(reply.metadata.src_node_id)
            client_id = str(reply.metadata.src_node_id) if client_id is None else client_id
            if reply.has_error():
                outcomes.append((client_id, Failure(client_id, reply.error.reason, "error")))
                continue
            instruction = kind(self.parameters, {})
            outcomes.append((client_id, transport.result(client_id, instruction, reply)))
        return outcomes


class MessageSteps(RoostStrategy):
    """The roost strategy the loop runs for a Message-API strategy with steps of its own.

    `inner` is the roost preset the strategy names: its state tree is the round's state, and its
    steps are the built-in ones.
    """

    def __init__(
        self,
        flower: Any,
        inner: RoostStrategy,
        transport: GridTransport,
        grid: Grid,
        result: Result,
    ) -> None:
        # Settings are the inner preset's; nothing of RoostStrategy's own is built.
        self.flower = flower
        self.inner = inner
        self.transport = transport
        self.grid = grid
        self.result = result
        self.min_available_clients = inner.min_available_clients
        self.secure_aggregation = None

    def __repr__(self) -> str:
        return f"{type(self.flower).__name__}'s own steps on {self.inner!r}"

    def initial_model(self) -> Parameters | None:
        return self.inner.initial_model()

    def centralized_evaluation(
        self, server_round: int, parameters: Parameters
    ) -> tuple[float, Metrics] | None:
        return self.inner.centralized_evaluation(server_round, parameters)

    def init(self, parameters: Parameters) -> dict[str, State]:
        return {**self.inner.init(parameters), "strategy": type(self.flower).__name__}

    def _open(self, context: RoundContext, parameters: Parameters, state: State) -> MessageRound:
        self.transport.server_round = context.server_round
        self.transport.prepared.clear()
        self.transport.replies.clear()
        current = MessageRound(self, context, parameters, state)
        self.flower._round = current
        return current

    def _close(self) -> None:
        self.flower._round = None
        self.transport.prepared.clear()
        self.transport.replies.clear()

    def fit_round(
        self, context: RoundContext, parameters: Parameters, state: State
    ) -> FitAggregate:
        current = self._open(context, parameters, state)
        try:
            server_round = context.server_round
            arrays = wrap_arrays(self.transport.layout.names, list(parameters))
            config = ConfigRecord(dict(self.transport.layout.train_config))
            messages = self.flower.configure_train(server_round, arrays, config, self.grid)
            cohort = current.cohort(messages or [], FitIns)
            if not cohort:
                return FitAggregate(None, {}, current.state, {})
            replies = current.replies(context.exchange("fit", cohort, parameters))
            new, metrics = self.flower.aggregate_train(server_round, replies)
            if metrics is not None:
                self.result.train_metrics_clientapp[server_round] = metrics
            new_parameters = None if new is None else self.transport.ordered(new)
            return FitAggregate(
                new_parameters, scalar_metrics(metrics or {}), current.state, current.measurements
            )
        finally:
            self._close()

    def evaluate_round(
        self, context: RoundContext, parameters: Parameters, state: State
    ) -> tuple[float | None, Metrics]:
        current = self._open(context, parameters, state)
        try:
            server_round = context.server_round
            arrays = wrap_arrays(self.transport.layout.names, list(parameters))
            config = ConfigRecord(dict(self.transport.layout.evaluate_config))
            messages = self.flower.configure_evaluate(server_round, arrays, config, self.grid)
            cohort = current.cohort(messages or [], EvaluateIns)
            if not cohort:
                return None, {}
            replies = current.replies(context.exchange("evaluate", cohort, parameters))
            record = self.flower.aggregate_evaluate(server_round, replies)
            if record is None:
                return None, {}
            self.result.evaluate_metrics_clientapp[server_round] = record
            return (loss_of(record) if has_loss(record) else None), scalar_metrics(record)
        finally:
            self._close()


# -- the built-in steps, on the inner preset -----------------------------------------------------


def configure(
    current: MessageRound,
    server_round: int,
    arrays: ArrayRecord,
    config: ConfigRecord,
    train: bool,
) -> list[Message]:
    """FedAvg's `configure_train` / `configure_evaluate`: the preset's sampling, one message."""
    steps, inner = current.steps, current.steps.inner
    layout = steps.transport.layout
    minimum = inner.min_fit_clients if train else inner.min_evaluate_clients
    client_ids = current.context.available(max(inner.min_available_clients, minimum))
    configure_step = inner.configure_fit if train else inner.configure_evaluate
    cohort, state = configure_step(
        server_round, array_values(arrays), client_ids, current.context.rng, current.state
    )
    if train:
        current.state = state
    extras = layout.train_extras if train else {}
    content = RecordDict(
        {
            layout.arrayrecord_key: arrays,
            layout.configrecord_key: ConfigRecord({**config, **extras, ROUND_KEY: server_round}),
        }
    )
    kind = MessageType.TRAIN if train else MessageType.EVALUATE
    group = str(server_round)
    return [
        Message(content, codec.node_number(client_id), kind, group_id=group)
        for client_id, _ in cohort
    ]


def aggregate_train(
    current: MessageRound, server_round: int, replies: Iterable[Message]
) -> tuple[ArrayRecord | None, MetricRecord | None]:
    """FedAvg's (or the named preset's) `aggregate_train`: the preset's aggregation and server
    optimizer step on the round's state."""
    outcomes = current.outcomes(replies, FitIns)
    fitted = current.steps.inner.aggregate_fit(
        server_round, current.parameters, outcomes, current.state
    )
    current.state = fitted.state
    current.measurements.update(fitted.measurements)
    metrics = MetricRecord(dict(fitted.metrics)) if fitted.metrics else None
    if fitted.parameters is None:
        return None, metrics
    names = current.steps.transport.layout.names
    return wrap_arrays(names, list(fitted.parameters)), metrics


def aggregate_evaluate(
    current: MessageRound, server_round: int, replies: Iterable[Message]
) -> MetricRecord | None:
    """FedAvg's `aggregate_evaluate`: the metrics averaged by the strategy's function."""
    outcomes = current.outcomes(replies, EvaluateIns)
    _, metrics = current.steps.inner.aggregate_evaluate(server_round, outcomes)
    return MetricRecord(dict(metrics)) if metrics else None
