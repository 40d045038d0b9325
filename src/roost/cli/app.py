"""What `roost simulate | server | client` run: a `roost.App`, named with `--app module:attr`.

    # my_app.py
    import roost

    def client_fn(context: roost.Context):
        return MyClient(context.partition_id, context.num_partitions)

    app = roost.App(client_fn=client_fn, strategy=lambda: roost.FedAvg(min_available_clients=2))

    $ roost server --app my_app:app --rounds 3 --address 0.0.0.0:8080
    $ roost client --app my_app:app --server HOST:8080 --partition-id 0 --num-partitions 2
    $ roost simulate --app my_app:app --clients 10 --rounds 3

`attr` may also name a bare `client_fn`, which is enough for `roost client` and `roost simulate`.

An `App` runs as it is; the command line's training options (`--lr`, `--fraction-fit`, ...) and
`--strategy` are for apps that build their clients and strategy from them. Such an app subclasses
`App` and overrides `simulation`, `server_strategy` and `make_client_fn` (and `add_arguments` for
options of its own); the app `roost` runs without `--app` is one.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from roost.cli.dp_options import privacy_flags_given
from roost.cli.settings import RunSettings
from roost.cli.strategy_options import strategy_options
from roost.client.client import ClientFn
from roost.errors import ConfigurationError
from roost.strategy.presets import FedAvg
from roost.strategy.strategy import Strategy


@dataclass(frozen=True)
class Simulation:
    """What `roost simulate` runs: the clients, the strategy, the engine, and a line to print."""

    client_fn: ClientFn
    strategy: Strategy
    engine: str
    notice: str | None = None


@dataclass(frozen=True)
class App:
    """A federated application for the command line: how to build clients, and the strategy.

    Args:
        client_fn: builds a client from a `roost.Context` (`partition_id`, `num_partitions`, ...).
        strategy: the server's strategy, or a function of no arguments returning a fresh one.
    """

    client_fn: ClientFn | None = None
    strategy: Strategy | Callable[[], Strategy] | None = None

    title: ClassVar[str] = "your app"
    """How help texts name this app."""

    description: ClassVar[str] = "Simulate a federation of your app's clients on this machine."
    """What `roost simulate --help` says the run does."""

    def make_strategy(self) -> Strategy | None:
        """The strategy, built fresh when `strategy` is a factory."""
        if self.strategy is None or isinstance(self.strategy, Strategy):
            return self.strategy
        strategy = self.strategy()
        if not isinstance(strategy, Strategy):
            raise ConfigurationError(
                f"the app's strategy factory returned a {type(strategy).__name__}, not a Strategy"
            )
        return strategy

    def add_arguments(self, parser: argparse.ArgumentParser, command: str) -> None:
        """Add this app's own options to `roost COMMAND` (none for a plain App)."""

    def simulation(self, args: argparse.Namespace, settings: RunSettings) -> Simulation:
        """What `roost simulate` runs: `client_fn` and the strategy (FedAvg when none is set)."""
        _refuse_strategy_options(args)
        strategy = self.make_strategy()
        return Simulation(
            client_fn=self.make_client_fn(settings.seed),
            strategy=strategy if strategy is not None else FedAvg(),
            engine=args.engine or "sequential",
        )

    def server_strategy(self, args: argparse.Namespace, settings: RunSettings) -> Strategy:
        """The strategy `roost server` runs; a plain App must name one."""
        _refuse_strategy_options(args)
        strategy = self.make_strategy()
        if strategy is None:
            raise ConfigurationError(
                "the app names no strategy; roost server needs roost.App(strategy=...)"
            )
        return strategy

    def make_client_fn(self, seed: int) -> ClientFn:
        """The `client_fn` of `roost client` and `roost simulate` (`seed`: their `--seed`)."""
        if self.client_fn is None:
            raise ConfigurationError("the app names no client_fn; set roost.App(client_fn=...)")
        return self.client_fn


def _refuse_strategy_options(args: argparse.Namespace) -> None:
    secure = getattr(args, "secagg", False)
    if args.strategy != "fedavg" or strategy_options(args) or privacy_flags_given(args) or secure:
        raise ConfigurationError(
            "--strategy, --dp, --secagg and their options build the strategy of the default app; "
            "with --app, your roost.App's strategy is used: set the strategy there (for privacy: "
            "roost.privacy.with_central_dp or LocalDPClientFn; "
            "secure_aggregation=roost.strategy.SecureAggregation(...))"
        )


def load_app(spec: str) -> App:
    """Import `module:attr` (from the current directory or `sys.path`) and return it as an App."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ConfigurationError(f"--app expects module:attribute (e.g. my_app:app), got {spec!r}")
    if os.getcwd() not in sys.path:  # like `python -m`, find modules next to where you run roost
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigurationError(
            f"cannot import {module_name!r} for --app: {error}; run roost from the directory "
            "holding it or add that directory to PYTHONPATH"
        ) from None
    try:
        value = getattr(module, attribute)
    except AttributeError:
        raise ConfigurationError(f"module {module_name!r} has no attribute {attribute!r}") from None
    if isinstance(value, App):
        return value
    if callable(value):
        return App(client_fn=value)
    raise ConfigurationError(
        f"{spec} is a {type(value).__name__}; it must be a roost.App or a client_fn"
    )
