"""`flwr.server.workflow`: `DefaultWorkflow` and `SecAggPlusWorkflow` over roost's round loop.

    context = LegacyContext(context=context, config=ServerConfig(num_rounds=3), strategy=FedAvg())
    workflow = DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(num_shares=3,
                                                               reconstruction_threshold=2))
    workflow(grid, context)

`DefaultWorkflow` runs the classic strategy in the `LegacyContext` for its `ServerConfig`'s rounds
on roost's round loop, over the grid's transport, with the nodes' `ClientApp(client_fn=...)`.
With `SecAggPlusWorkflow` as its fit workflow every round's training goes through roost's SecAgg+
(`roost.strategy.secure.SecureAggregation`): Flower's settings are mapped onto roost's, below.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from roost.compat.flwr.message import Context
from roost.compat.flwr.server.strategy import FedAvg
from roost.compat.flwr.serverapp.grid import Grid
from roost.compat.flwr.unsupported import missing_names
from roost.errors import ConfigurationError
from roost.secagg import SecAggParameters
from roost.server.loop import ServerConfig, run_rounds
from roost.strategy.secure import SecureAggregation
from roost.strategy.strategy import Strategy


class LegacyContext(Context):
    """A server `Context` that also carries a classic strategy and its `ServerConfig`.

    Args:
        context: the ServerApp's context (its run config, state, …).
        config: rounds and per-client timeout (default: one round).
        strategy: a classic strategy from `flwr.server.strategy` (default: FedAvg).
        client_manager: Flower's; roost has none, so only None is accepted.
    """

    def __init__(
        self,
        context: Context,
        config: ServerConfig | None = None,
        strategy: Strategy | None = None,
        client_manager: Any = None,
    ) -> None:
        if client_manager is not None:
            raise ConfigurationError(
                "roost samples clients with the strategy, not a client manager; leave "
                "LegacyContext(client_manager=...) out"
            )
        if strategy is not None and not isinstance(strategy, Strategy):
            raise ConfigurationError(
                f"LegacyContext(strategy=...) takes a classic strategy from flwr.server.strategy, "
                f"got {type(strategy).__name__}; a flwr.serverapp.strategy one runs with its own "
                "strategy.start(grid, ...)"
            )
        super().__init__(
            context.run_id, context.node_id, context.node_config, context.state, context.run_config
        )
        self.config = config if config is not None else ServerConfig()
        self.strategy = strategy
        self.client_manager = None


@dataclass(frozen=True)
class _FlowerShares(SecureAggregation):
    """roost's SecAgg+ with Flower's share count and threshold, which may be fractions of the
    cohort (`num_shares`) and of the shares (`reconstruction_threshold`)."""

    num_shares: float = 1.0
    reconstruction_threshold: float = 1.0

    def graph(self, cohort_size: int) -> SecAggParameters:
        """Flower's shares count the client itself: k = shares − 1 neighbours."""
        shares = _count(self.num_shares, cohort_size)
        degree = max(1, min(shares - 1, cohort_size - 1))
        if degree % 2 and cohort_size % 2 and degree != cohort_size - 1:
            degree += 1  # no odd-regular graph on an odd cohort: one holder more, never fewer
        threshold = _count(self.reconstruction_threshold, shares)
        parameters = SecAggParameters(degree, threshold)
        parameters.check(cohort_size)
        return parameters

    def describe(self, cohort_size: int) -> str:
        """roost's line for the graph these shares give a cohort of `cohort_size`."""
        graph = self.graph(cohort_size)
        chosen = SecureAggregation(
            self.clip_range, self.bits, self.max_weight, graph.threshold, graph.degree
        )
        return (
            f"{chosen.describe(cohort_size)} (Flower's num_shares={self.num_shares}, "
            f"reconstruction_threshold={self.reconstruction_threshold})"
        )


def _count(value: float, of: int) -> int:
    """An int as it is; a float in (0, 1] as that share of `of` (rounded up, at least 1)."""
    if isinstance(value, float) and value <= 1:
        return max(1, math.ceil(value * of))
    return int(value)


class SecAggPlusWorkflow:
    """Train every round with SecAgg+: the server learns only the cohort's sum.

    Args (Flower's): `num_shares` (shares of each client's secrets, itself included; a float
    ≤ 1 is that share of the cohort) becomes roost's graph degree k = num_shares − 1, raised by
    one where the cohort has no k-regular graph; `reconstruction_threshold` (an int, or a float
    ≤ 1 of the shares) is roost's threshold t, which must be more than half the shares;
    `max_weight` caps each client's `num_examples`; `clipping_range` clips every coordinate of a
    client's update (roost masks updates, Flower masks models); `modulus_range` (a power of two)
    sets the arithmetic's bits; `timeout` is each phase's per-client timeout when the
    `ServerConfig` sets none. `quantization_range` is accepted and unused: roost chooses the
    quantizer's levels from the modulus and the cohort size, so the sum never wraps.
    """

    def __init__(
        self,
        num_shares: int | float,
        reconstruction_threshold: int | float,
        *,
        max_weight: float = 1000.0,
        clipping_range: float = 8.0,
        quantization_range: int = 4194304,
        modulus_range: int = 4294967296,
        timeout: float | None = None,
    ) -> None:
        for name, value in (
            ("num_shares", num_shares),
            ("reconstruction_threshold", reconstruction_threshold),
        ):
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ConfigurationError(f"{name} must be an int or a float > 0, got {value!r}")
        bits = int(modulus_range).bit_length() - 1
        if modulus_range != 2**bits:
            raise ConfigurationError(
                f"modulus_range must be a power of two (2**32 by default), got {modulus_range}"
            )
        self.num_shares = num_shares
        self.reconstruction_threshold = reconstruction_threshold
        self.max_weight = max_weight
        self.clipping_range = clipping_range
        self.quantization_range = quantization_range
        self.modulus_range = modulus_range
        self.timeout = timeout
        self.secure_aggregation: SecureAggregation = _FlowerShares(
            clip_range=float(clipping_range),
            bits=bits,
            max_weight=float(max_weight),
            num_shares=num_shares,
            reconstruction_threshold=reconstruction_threshold,
        )

    def __repr__(self) -> str:
        return (
            f"SecAggPlusWorkflow(num_shares={self.num_shares}, reconstruction_threshold="
            f"{self.reconstruction_threshold}, max_weight={self.max_weight}, clipping_range="
            f"{self.clipping_range}, modulus_range={self.modulus_range})"
        )


class DefaultWorkflow:
    """Run a `LegacyContext`'s classic strategy for its rounds: fit (in the clear, or with
    `fit_workflow=SecAggPlusWorkflow(...)`) and evaluate, on roost's round loop.

    `evaluate_workflow` is accepted for Flower's signature; roost's round loop evaluates as the
    strategy says (`fraction_evaluate`, `evaluate_fn`), so only None is accepted.
    """

    def __init__(
        self, fit_workflow: SecAggPlusWorkflow | None = None, evaluate_workflow: Any = None
    ) -> None:
        if fit_workflow is not None and not isinstance(fit_workflow, SecAggPlusWorkflow):
            raise ConfigurationError(
                f"DefaultWorkflow(fit_workflow=...) takes SecAggPlusWorkflow or None on roost, got "
                f"{type(fit_workflow).__name__}"
            )
        if evaluate_workflow is not None:
            raise ConfigurationError(
                "roost evaluates as the strategy says (fraction_evaluate, evaluate_fn); leave "
                "DefaultWorkflow(evaluate_workflow=...) out"
            )
        self.fit_workflow = fit_workflow

    def __call__(self, grid: Grid, context: Context) -> None:
        """Run the rounds; the run's History is the grid's (what `roost run` saves)."""
        if not isinstance(context, LegacyContext):
            raise ConfigurationError(
                "DefaultWorkflow needs a LegacyContext(context=..., config=..., strategy=...)"
            )
        strategy = context.strategy
        if strategy is None:
            strategy = FedAvg()
        config = context.config
        if self.fit_workflow is not None:
            strategy = strategy.replace(secure_aggregation=self.fit_workflow.secure_aggregation)
            if config.round_timeout is None and self.fit_workflow.timeout is not None:
                config = ServerConfig(config.num_rounds, float(self.fit_workflow.timeout))
        settings = grid.settings
        history = run_rounds(
            strategy,
            grid.transport,
            config,
            seed=settings.seed,
            resume_from=settings.take_resume_state(),
            on_round_end=settings.round_end,
            node_states=settings.node_states,
        )
        settings.histories.append(history)


__all__ = ["DefaultWorkflow", "LegacyContext", "SecAggPlusWorkflow"]

__getattr__ = missing_names("flwr.server.workflow", __all__)
