"""The digits demo under any named strategy, optionally with simulated attackers.

`roost simulate --strategy NAME [--attack ...]` builds its clients and strategy here. For FedSGD
the demo client (`DigitsClient`) answers `fit` with its full-batch gradient: `FedSGD` puts
`"return_gradients": True` in every fit config.
"""

from __future__ import annotations

import argparse
from typing import Any

from roost.apps.digits import DemoSettings, make_client_fn, make_strategy
from roost.client.client import ClientFn
from roost.errors import ConfigurationError
from roost.strategy.options import attacked_client_fn, strategy_from_args
from roost.strategy.strategy import Strategy

# Presets whose own parameters include the clients' learning rate: the demo passes its --lr.
_CLIENT_LEARNING_RATE = {
    "fedadagrad": "eta_l",
    "fedadam": "eta_l",
    "fedyogi": "eta_l",
    "qfedavg": "qffl_learning_rate",
}


def demo_client_fn_and_strategy(
    args: argparse.Namespace, settings: DemoSettings
) -> tuple[ClientFn, Strategy]:
    """The demo's `client_fn` (with any `--attack`) and the `--strategy` with the demo's knobs."""
    strategy = demo_strategy(args, settings)
    return attacked_client_fn(args, make_client_fn(settings.seed), settings.num_clients), strategy


def demo_strategy(args: argparse.Namespace, settings: DemoSettings) -> Strategy:
    """The `--strategy` preset with the demo's knobs (`roost simulate` and `roost server`)."""
    name = getattr(args, "strategy", "fedavg")
    overrides: dict[str, Any] = {}
    if name in _CLIENT_LEARNING_RATE:
        overrides[_CLIENT_LEARNING_RATE[name]] = settings.learning_rate
    strategy = strategy_from_args(args, like=make_strategy(settings), **overrides)
    needed = strategy.aggregator.min_updates
    if needed > settings.num_clients:
        raise ConfigurationError(
            f"{strategy.aggregator!r} needs at least {needed} clients per round but the demo has "
            f"{settings.num_clients}; raise --clients (--min-clients) or lower --num-malicious"
        )
    return strategy
