"""Flower's message-based `Strategy` and `FedAvg`, run by roost's strategies and round loop.

`FedAvg(...).start(grid, initial_arrays, num_rounds=...)` builds the roost preset of the same name
(`roost.strategy.presets`) from the Flower arguments and runs `roost.server.loop.run_rounds` over a
`GridTransport`: node sampling, streaming aggregation, validation of every reply, failure handling,
History and checkpoints are roost's. Flower's `configure_*` / `aggregate_*` steps are not called
one by one: a subclass that overrides them is refused with a message saying so.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, dataclass_transform

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
    MessageLayout,
    has_loss,
    loss_of,
    replies_from_pairs,
    scalar_metrics,
    weighted_average,
)
from roost.compat.flwr.serverapp.strategy.result import Result
from roost.core.types import Config, Metrics, Parameters
from roost.errors import ConfigurationError
from roost.server.history import History
from roost.server.loop import ServerConfig, run_rounds
from roost.strategy import presets
from roost.strategy.base import UpdateTransform
from roost.strategy.strategy import Strategy as RoostStrategy
from roost.strategy.weighting import weight_by_metric

log = logging.getLogger("roost")

MetricsAggrFn = Callable[[list[RecordDict], str], MetricRecord]
EvaluateFn = Callable[[int, ArrayRecord], "MetricRecord | None"]

_STEPS = ("configure_train", "aggregate_train", "configure_evaluate", "aggregate_evaluate")


class Strategy:
    """Flower's strategy interface. On roost, use one of the named strategies (`FedAvg`, …):
    their `start` runs on roost's round loop; a strategy of your own is not supported."""

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Any:
        raise _step_error("configure_train")

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Any:
        raise _step_error("configure_evaluate")

    def aggregate_train(self, server_round: int, replies: Any) -> Any:
        raise _step_error("aggregate_train")

    def aggregate_evaluate(self, server_round: int, replies: Any) -> Any:
        raise _step_error("aggregate_evaluate")

    def summary(self) -> None:
        log.info("%s", self)

    def start(self, grid: Grid, initial_arrays: ArrayRecord, **options: Any) -> Result:
        """Run the strategy; on roost, only the named strategies can."""
        raise ConfigurationError(
            f"roost cannot run the strategy {type(self).__name__}: write-your-own Flower "
            "strategies are not supported; use a named one (FedAvg, FedAdam, …) or roost.Strategy"
        )


@dataclass(frozen=True)
class Additions:
    """What a wrapper strategy adds to the strategy it wraps: update transforms (the Flower
    strategies have none of their own) and entries for every train config."""

    update_transforms: tuple[UpdateTransform, ...] = ()
    train_extras: dict[str, Any] = field(default_factory=dict)


def _step_error(step: str) -> ConfigurationError:
    return ConfigurationError(
        f"Strategy.{step} is not supported by roost: start() runs the round on roost's loop"
    )


@dataclass_transform(kw_only_default=True)
@dataclass(repr=False, eq=False)
class FedAvg(Strategy):
    """Federated Averaging, with Flower's arguments (see `flwr.serverapp.strategy.FedAvg`).

    Each named subclass is a dataclass too: its fields are its own Flower arguments (keyword-only,
    after FedAvg's), and `preset_options` hands them to the roost preset, renamed by `roost_names`.
    """

    preset: ClassVar[type[RoostStrategy]] = presets.FedAvg
    weights_by_key: ClassVar[bool] = True
    """Whether the roost preset takes `weight_fn` (QFedAvg weighs by the loss)."""
    roost_names: ClassVar[dict[str, str]] = {}
    """The roost preset's name of an own argument where it differs from Flower's."""

    fraction_train: float = 1.0
    fraction_evaluate: float = 1.0
    min_train_nodes: int = 2
    min_evaluate_nodes: int = 2
    min_available_nodes: int = 2
    weighted_by_key: str = "num-examples"
    arrayrecord_key: str = "arrays"
    configrecord_key: str = "config"
    train_metrics_aggr_fn: MetricsAggrFn | None = None
    evaluate_metrics_aggr_fn: MetricsAggrFn | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        dataclass(repr=False, eq=False, kw_only=True)(cls)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(fraction_train={self.fraction_train}, "
            f"fraction_evaluate={self.fraction_evaluate}, min_train_nodes={self.min_train_nodes}, "
            f"weighted_by_key={self.weighted_by_key!r}) on roost's {self.preset.__name__}"
        )

    def preset_options(self) -> dict[str, Any]:
        """The roost preset's own arguments (server optimizer settings, robust parameters): the
        fields a subclass adds to FedAvg's, under the preset's names."""
        own = [item.name for item in fields(self) if item.name not in _FEDAVG_ARGUMENTS]
        return {self.roost_names.get(name, name): vars(self)[name] for name in own}

    def train_extras(self) -> dict[str, Any]:
        """Entries this strategy adds to every train config (FedProx's `proximal-mu`)."""
        return {}

    def start(
        self,
        grid: Grid,
        initial_arrays: ArrayRecord,
        num_rounds: int = 3,
        timeout: float = 3600,
        train_config: ConfigRecord | None = None,
        evaluate_config: ConfigRecord | None = None,
        evaluate_fn: EvaluateFn | None = None,
        *,
        additions: Additions | None = None,
    ) -> Result:
        """Run `num_rounds` rounds from `initial_arrays` on roost's round loop; return the final
        arrays and every round's aggregated metrics.

        `timeout` is each node's time to answer a message. `train_config` / `evaluate_config` go
        to the nodes with `"server-round"` added; `evaluate_fn(server_round, arrays)` evaluates the
        global model on the server before round 1 and after every round. `additions` (roost's,
        not Flower's) is what a wrapper strategy adds: the differential-privacy wrappers run the
        strategy they wrap with their parts added.
        """
        additions = additions or Additions()
        self._check_runnable(grid, initial_arrays)
        layout = MessageLayout(
            names=list(initial_arrays.keys()),
            weighted_by_key=self.weighted_by_key,
            arrayrecord_key=self.arrayrecord_key,
            configrecord_key=self.configrecord_key,
            train_config=ConfigRecord(dict(train_config or {})),
            evaluate_config=ConfigRecord(dict(evaluate_config or {})),
            train_extras={**self.train_extras(), **additions.train_extras},
        )
        result = Result(arrays=initial_arrays)
        transport = GridTransport(grid, layout)
        strategy = self._roost_strategy(
            initial_arrays, layout, result, transport, evaluate_fn, additions.update_transforms
        )
        settings = grid.settings
        history = run_rounds(
            strategy,
            transport,
            ServerConfig(num_rounds=num_rounds, round_timeout=timeout),
            seed=settings.seed,
            resume_from=settings.take_resume_state(),
            on_round_end=settings.round_end,
            node_states=settings.node_states,
        )
        if history.parameters is not None:
            result.arrays = wrap_arrays(layout.names, list(history.parameters))
        _record_server_metrics(history, result)
        settings.histories.append(history)
        return result

    def _check_runnable(self, grid: Grid, initial_arrays: ArrayRecord) -> None:
        for cls in type(self).__mro__:
            if cls.__module__.startswith(__package__ or __name__) or cls is object:
                continue
            overridden = [step for step in _STEPS if step in vars(cls)]
            if overridden:
                raise ConfigurationError(
                    f"{cls.__name__} overrides {', '.join(overridden)}: not supported by roost, "
                    "whose round loop runs the strategy; use roost.Strategy parts instead"
                )
        if not isinstance(grid, Grid):
            raise ConfigurationError(
                f"start() needs the Grid roost hands main(grid, context), got {type(grid).__name__}"
            )
        if not isinstance(initial_arrays, ArrayRecord) or not initial_arrays:
            raise ConfigurationError("start() needs initial_arrays=ArrayRecord(...) with arrays")

    def _roost_strategy(
        self,
        initial_arrays: ArrayRecord,
        layout: MessageLayout,
        result: Result,
        transport: GridTransport,
        evaluate_fn: EvaluateFn | None,
        update_transforms: tuple[UpdateTransform, ...] = (),
    ) -> RoostStrategy:
        options: dict[str, Any] = {
            "fraction_fit": self.fraction_train,
            "fraction_evaluate": self.fraction_evaluate,
            "min_fit_clients": self.min_train_nodes,
            "min_evaluate_clients": self.min_evaluate_nodes,
            "min_available_clients": self.min_available_nodes,
            "initial_parameters": array_values(initial_arrays),
            "on_fit_config_fn": _round_config,
            "on_evaluate_config_fn": _round_config,
            "fit_metrics_aggregation_fn": _metrics_fn(
                self.train_metrics_aggr_fn, layout, transport, result.train_metrics_clientapp
            ),
            "evaluate_metrics_aggregation_fn": _metrics_fn(
                self.evaluate_metrics_aggr_fn, layout, transport, result.evaluate_metrics_clientapp
            ),
        }
        if evaluate_fn is not None:
            options["evaluate_fn"] = _server_evaluate(evaluate_fn, layout.names, result)
        if self.weights_by_key:
            options["weight_fn"] = weight_by_metric(self.weighted_by_key)
        if update_transforms:
            options["update_transforms"] = update_transforms
        return self.preset(**options, **self.preset_options())


_FEDAVG_ARGUMENTS = frozenset(item.name for item in fields(FedAvg))


def _round_config(server_round: int) -> Config:
    return {ROUND_KEY: server_round}


def _metrics_fn(
    function: MetricsAggrFn | None,
    layout: MessageLayout,
    transport: GridTransport,
    store: dict[int, MetricRecord],
) -> Callable[[list[tuple[int, Metrics]]], Metrics]:
    """roost's metrics aggregation function that runs Flower's (default: weighted average)."""

    def aggregate(pairs: list[tuple[int, Metrics]]) -> Metrics:
        record = (function or weighted_average)(replies_from_pairs(pairs), layout.weighted_by_key)
        if record is None:
            return {}
        if not isinstance(record, MetricRecord):
            raise ConfigurationError(
                f"a metrics aggregation function must return a MetricRecord, got "
                f"{type(record).__name__}"
            )
        store[transport.server_round] = record
        return scalar_metrics(record)

    return aggregate


def _server_evaluate(
    evaluate_fn: EvaluateFn, names: list[str], result: Result
) -> Callable[[int, Parameters, Config], tuple[float, Metrics] | None]:
    def evaluate(server_round: int, parameters: Parameters, config: Config) -> Any:
        record = evaluate_fn(server_round, wrap_arrays(names, list(parameters)))
        if record is None:
            return None
        if not isinstance(record, MetricRecord):
            raise ConfigurationError(
                f"evaluate_fn must return a MetricRecord or None, got {type(record).__name__}"
            )
        result.evaluate_metrics_serverapp[server_round] = record
        # roost's History keeps a loss per centralized evaluation; without one, see below.
        return (loss_of(record), scalar_metrics(record)) if has_loss(record) else None

    return evaluate


def _record_server_metrics(history: History, result: Result) -> None:
    """Put the server-side metrics that carried no loss into the History too."""
    for server_round, record in sorted(result.evaluate_metrics_serverapp.items()):
        if not has_loss(record):
            history.add_metrics_centralized(server_round, scalar_metrics(record))
