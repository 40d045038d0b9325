"""Flower's message-based `Strategy` and `FedAvg`, run by roost's strategies and round loop.

`FedAvg(...).start(grid, initial_arrays, num_rounds=...)` builds the roost preset of the same name
(`roost.strategy.presets`) from the Flower arguments and runs `roost.server.loop.run_rounds` over a
`GridTransport`: node sampling, streaming aggregation, validation of every reply, failure handling,
History and checkpoints are roost's. A subclass that overrides a step (`configure_train`,
`aggregate_train`, `configure_evaluate`, `aggregate_evaluate`), or a `Strategy` written from
scratch, runs through its steps instead, with `super()` reaching the preset's
(`roost.compat.flwr.serverapp.strategy.steps`).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, dataclass_transform

from roost.compat.flwr.message import Message
from roost.compat.flwr.records import (
    ArrayRecord,
    ConfigRecord,
    MetricRecord,
    RecordDict,
    array_values,
    wrap_arrays,
)
from roost.compat.flwr.serverapp.grid import Grid
from roost.compat.flwr.serverapp.strategy import steps, strategy_utils
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
from roost.compat.flwr.serverapp.strategy.steps import MessageRound
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


class Strategy(ABC):
    """Flower's message-based strategy interface: implement its steps (Flower's signatures).

    `start` runs the strategy on roost's round loop, calling the steps at their named points
    (`roost.compat.flwr.serverapp.strategy.steps`): every reply is validated before
    `aggregate_train` / `aggregate_evaluate` see it, and the round's state tree is checkpointed
    (attributes you keep on `self` are not). A strategy written from scratch addresses nodes
    itself, through `grid.get_node_ids()`.
    """

    _round: MessageRound | None = None

    @abstractmethod
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """The round's train messages (one per node)."""

    @abstractmethod
    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """The next global arrays (None: unchanged) and the round's train metrics."""

    @abstractmethod
    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """The round's evaluate messages (one per node)."""

    @abstractmethod
    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """The round's aggregated evaluation metrics."""

    @abstractmethod
    def summary(self) -> None:
        """Log the strategy's settings (called as `start` begins)."""

    def start(
        self,
        grid: Grid,
        initial_arrays: ArrayRecord,
        num_rounds: int = 3,
        timeout: float = 3600,
        train_config: ConfigRecord | None = None,
        evaluate_config: ConfigRecord | None = None,
        evaluate_fn: EvaluateFn | None = None,
    ) -> Result:
        """Run `num_rounds` rounds of this strategy's steps on roost's round loop (for a
        strategy written from scratch, FedAvg's settings stand behind the steps: one node is
        enough)."""
        defaults = FedAvg(min_train_nodes=1, min_evaluate_nodes=1, min_available_nodes=1)
        return defaults.start(
            grid,
            initial_arrays,
            num_rounds,
            timeout,
            train_config,
            evaluate_config,
            evaluate_fn,
            steps_of=self,
        )

    def current_round(self, step: str) -> MessageRound:
        """The round a built-in step is part of; a clear error outside one."""
        if self._round is None:
            raise ConfigurationError(
                f"{type(self).__name__}.{step} runs inside a round of start(), not on its own"
            )
        return self._round


@dataclass(frozen=True)
class Additions:
    """What a wrapper strategy adds to the strategy it wraps: update transforms (the Flower
    strategies have none of their own) and entries for every train config."""

    update_transforms: tuple[UpdateTransform, ...] = ()
    train_extras: dict[str, Any] = field(default_factory=dict)


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

    # -- Flower's steps: the roost preset's, in the round start() is running -------------------

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        if self._outside_start("configure_train"):
            return strategy_utils.configure(self, server_round, arrays, config, grid, train=True)
        current = self.current_round("configure_train")
        return steps.configure(current, server_round, arrays, config, train=True)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        if self._outside_start("aggregate_train"):
            return strategy_utils.aggregate_train(self, server_round, replies)
        current = self.current_round("aggregate_train")
        return steps.aggregate_train(current, server_round, replies)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        if self._outside_start("configure_evaluate"):
            return strategy_utils.configure(self, server_round, arrays, config, grid, train=False)
        current = self.current_round("configure_evaluate")
        if self.fraction_evaluate == 0:
            return []
        return steps.configure(current, server_round, arrays, config, train=False)

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        if self._outside_start("aggregate_evaluate"):
            return strategy_utils.aggregate_evaluate(self, server_round, replies)
        current = self.current_round("aggregate_evaluate")
        return steps.aggregate_evaluate(current, server_round, replies)

    def _outside_start(self, step: str) -> bool:
        """Whether `step` was called by a loop of the app's own (a `start` it replaced), not
        roost's: FedAvg's steps then run on their own (`strategy_utils`); the other presets'
        (a server optimizer, robust aggregation) live only in roost's loop."""
        if self._round is not None:
            return False
        if self.preset not in (presets.FedAvg, presets.FedProx):
            raise ConfigurationError(
                f"{type(self).__name__}.{step} runs inside start()'s rounds only; a start() of "
                "your own can call FedAvg's or FedProx's steps, or keep the built-in start()"
            )
        return True

    def summary(self) -> None:
        log.info("%r", self)

    def _own_steps(self) -> bool:
        """Whether a subclass replaced a step, so rounds must go through the steps."""
        return any(getattr(type(self), step) is not getattr(FedAvg, step) for step in _STEPS)

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
        steps_of: Strategy | None = None,
    ) -> Result:
        """Run `num_rounds` rounds from `initial_arrays` on roost's round loop; return the final
        arrays and every round's aggregated metrics.

        `timeout` is each node's time to answer a message. `train_config` / `evaluate_config` go
        to the nodes with `"server-round"` added; `evaluate_fn(server_round, arrays)` evaluates the
        global model on the server before round 1 and after every round. `additions` (roost's,
        not Flower's) is what a wrapper strategy adds: the differential-privacy wrappers run the
        strategy they wrap with their parts added; `steps_of` (roost's too) is the strategy whose
        steps run (default: this one's, where a subclass overrides one; else the preset runs
        each round itself, streaming).
        """
        additions = additions or Additions()
        own = steps_of if steps_of is not None else (self if self._own_steps() else None)
        self._check_runnable(grid, initial_arrays)
        (own or self).summary()
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
        if own is not None:
            strategy = steps.MessageSteps(own, strategy, transport, grid, result)
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
