"""A Message-API strategy's rounds driven by the strategy's own steps through the grid.

Flower's `start` loop, kept for strategies whose replies roost's round loop cannot aggregate
(`FedXgbBagging`'s serialized tree ensembles: byte arrays of a different length from every
node, which roost's loop would refuse as not matching the global model). Each round: the
strategy's `configure_train` → `grid.send_and_receive` → `aggregate_train`, then the same for
evaluation, then `evaluate_fn` on the server. The run's History records every round's counts
and metrics (so `roost run` reports it as it does any other run); there is no checkpoint to
resume from.
"""

from __future__ import annotations

import logging
from typing import Any

from roost.compat.flwr.records import ArrayRecord, ConfigRecord, MetricRecord, array_values
from roost.compat.flwr.serverapp.grid import Grid
from roost.compat.flwr.serverapp.strategy.messaging import has_loss, loss_of, scalar_metrics
from roost.compat.flwr.serverapp.strategy.result import Result
from roost.compat.flwr.serverapp.strategy.strategy_utils import log_strategy_start_info
from roost.errors import ConfigurationError
from roost.server.history import History, RoundRecord

log = logging.getLogger("roost")


def run_own_rounds(
    strategy: Any,
    grid: Grid,
    initial_arrays: ArrayRecord,
    num_rounds: int,
    timeout: float,
    train_config: ConfigRecord | None,
    evaluate_config: ConfigRecord | None,
    evaluate_fn: Any,
) -> Result:
    """Run `num_rounds` rounds of `strategy`'s steps; return Flower's `Result`."""
    log_strategy_start_info(num_rounds, initial_arrays, train_config, evaluate_config)
    strategy.summary()
    result, history = Result(arrays=initial_arrays), History()
    _server_evaluation(evaluate_fn, 0, initial_arrays, result, history)
    arrays = initial_arrays
    for server_round in range(1, num_rounds + 1):
        record = RoundRecord(server_round)
        history.rounds.append(record)
        config = ConfigRecord(dict(train_config or {}))
        replies = grid.send_and_receive(
            strategy.configure_train(server_round, arrays, config, grid), timeout=timeout
        )
        record.fit_results, record.fit_failures = _counts(replies)
        new_arrays, metrics = strategy.aggregate_train(server_round, replies)
        if new_arrays is not None:
            arrays = result.arrays = new_arrays
        if metrics is not None:
            result.train_metrics_clientapp[server_round] = metrics
            history.add_metrics_distributed_fit(server_round, scalar_metrics(metrics))
        config = ConfigRecord(dict(evaluate_config or {}))
        replies = grid.send_and_receive(
            strategy.configure_evaluate(server_round, arrays, config, grid), timeout=timeout
        )
        record.evaluate_results, record.evaluate_failures = _counts(replies)
        evaluated = strategy.aggregate_evaluate(server_round, replies)
        if evaluated is not None:
            result.evaluate_metrics_clientapp[server_round] = evaluated
            if has_loss(evaluated):
                history.add_loss_distributed(server_round, loss_of(evaluated))
            history.add_metrics_distributed(server_round, scalar_metrics(evaluated))
        _server_evaluation(evaluate_fn, server_round, arrays, result, history)
    history.parameters = list(array_values(result.arrays))
    grid.settings.histories.append(history)
    return result


def _counts(replies: list[Any]) -> tuple[int, int]:
    failures = sum(1 for reply in replies if reply.has_error())
    return len(replies) - failures, failures


def _server_evaluation(
    evaluate_fn: Any, server_round: int, arrays: ArrayRecord, result: Result, history: History
) -> None:
    if evaluate_fn is None:
        return
    record = evaluate_fn(server_round, arrays)
    if record is None:
        return
    if not isinstance(record, MetricRecord):
        raise ConfigurationError(
            f"evaluate_fn must return a MetricRecord or None, got {type(record).__name__}"
        )
    result.evaluate_metrics_serverapp[server_round] = record
    if has_loss(record):
        history.add_loss_centralized(server_round, loss_of(record))
    history.add_metrics_centralized(server_round, scalar_metrics(record))
