"""Flower's message-based central-DP wrappers with fixed clipping (see `roost.compat.flwr.dp`).

strategy = DifferentialPrivacyServerSideFixedClipping(
    FedAvg(fraction_train=0.2), noise_multiplier=1.0, clipping_norm=0.5, num_sampled_clients=20
)
result = strategy.start(grid=grid, initial_arrays=arrays, num_rounds=3)
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from roost.compat.flwr.clientapp.mod import CLIPPING_NORM_KEY
from roost.compat.flwr.dp import FixedClippingDP
from roost.compat.flwr.message import Message
from roost.compat.flwr.records import ArrayRecord, ConfigRecord, MetricRecord
from roost.compat.flwr.serverapp.grid import Grid
from roost.compat.flwr.serverapp.strategy.base import Additions, FedAvg, Strategy
from roost.compat.flwr.serverapp.strategy.result import Result
from roost.errors import ConfigurationError

log = logging.getLogger("roost")


class _FixedClippingWrapper(Strategy):
    """What both fixed-clipping wrappers share: their arguments, checks and `start`."""

    clipping_on_nodes = False

    def __init__(
        self,
        strategy: Strategy,
        noise_multiplier: float,
        clipping_norm: float,
        num_sampled_clients: int,
    ) -> None:
        if not isinstance(strategy, FedAvg):
            raise ConfigurationError(
                f"{type(self).__name__} wraps one of the named strategies (FedAvg, FedAdam, …); "
                f"got {type(strategy).__name__}"
            )
        self.strategy = strategy
        self.dp = FixedClippingDP(noise_multiplier, clipping_norm, num_sampled_clients)

    def __repr__(self) -> str:
        where = "client" if self.clipping_on_nodes else "server"
        dp = self.dp
        return (
            f"{type(self).__name__}({self.strategy!r}, noise_multiplier={dp.noise_multiplier}, "
            f"clipping_norm={dp.clipping_norm}, num_sampled_clients={dp.num_sampled_clients}) "
            f"({where}-side clipping)"
        )

    def summary(self) -> None:
        log.info("%s", self)

    # The steps are the wrapped strategy's (its own, or its preset's, with clipping and noise
    # among the preset's parts).
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return self._inner("configure_train").configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        return self._inner("aggregate_train").aggregate_train(server_round, replies)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return self._inner("configure_evaluate").configure_evaluate(
            server_round, arrays, config, grid
        )

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        return self._inner("aggregate_evaluate").aggregate_evaluate(server_round, replies)

    def _inner(self, step: str) -> FedAvg:
        """The wrapped strategy, whose `step` is called inside one of roost's rounds only: on
        its own (a loop of the app's) it would run without the clipping and the noise."""
        if self.strategy._round is None:
            raise ConfigurationError(
                f"{type(self).__name__}.{step} runs inside start()'s rounds only (outside them "
                "it would add no privacy); call start()"
            )
        return self.strategy

    def start(self, grid: Grid, initial_arrays: ArrayRecord, **options: Any) -> Result:
        """Run the wrapped strategy with clipping and noise added (see `roost.compat.flwr.dp`)."""
        extras = {CLIPPING_NORM_KEY: float(self.dp.clipping_norm)} if self.clipping_on_nodes else {}
        additions = Additions(self.dp.transforms(type(self).__name__), extras)
        return self.strategy.start(grid, initial_arrays, additions=additions, **options)


class DifferentialPrivacyServerSideFixedClipping(_FixedClippingWrapper):
    """Central DP with fixed clipping on the server: Flower's wrapper of the same name.

    Args:
        strategy: the named strategy to make private (FedAvg, FedAdam, …).
        noise_multiplier: σ; the noise on each aggregated update has std σ·C/m.
        clipping_norm: C, the L2 bound of every node's update.
        num_sampled_clients: m, the nodes expected each round.
    """


class DifferentialPrivacyClientSideFixedClipping(_FixedClippingWrapper):
    """Central DP with fixed clipping on the nodes (`fixedclipping_mod`): Flower's wrapper of the
    same name. Every train config carries `"clipping_norm"`; the server clips too (a no-op for
    a node that ran the mod). Arguments as `DifferentialPrivacyServerSideFixedClipping`'s."""

    clipping_on_nodes = True
