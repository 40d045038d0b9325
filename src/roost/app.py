"""`roost.App`: a federated application as the `roost` command runs it.

    # my_app.py
    import roost

    def client_fn(context: roost.Context):
        return MyClient(context.partition_id, context.num_partitions)

    app = roost.App(client_fn=client_fn, strategy=lambda: roost.FedAvg(min_available_clients=2))

    $ roost simulate --app my_app:app --clients 10 --rounds 3

The command line (`roost.cli`) reads its options once into a `roost.settings.RunSettings` and
hands it to the app; this module does not import the command line, so `import roost` does not
load it. An app that builds its clients and strategy from those settings (the bundled one,
`roost.apps.digits`) subclasses `App` and overrides `simulation`, `server_strategy` and
`make_client_fn`, building its strategy with `settings.build_strategy(its own knobs)` (and
`add_arguments` for options of its own, which it finds in `settings.app_options`).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from roost.client.client import ClientFn
from roost.errors import ConfigurationError
from roost.server.loop import ServerConfig
from roost.settings import RunSettings
from roost.strategy.presets import FedAvg
from roost.strategy.strategy import Strategy

if TYPE_CHECKING:
    from roost.server.history import History
    from roost.server.loop import RoundCallback

DEMO_OPTIONS = ("fraction_fit", "fraction_evaluate", "local_epochs", "batch_size", "lr")
"""The training settings only an app that builds its clients from them reads (the demo does)."""


def refuse_strategy_options(settings: RunSettings) -> None:
    """Refuse the command line's strategy and training options for an app that brings its own
    clients and strategy: they would be silently ignored."""
    if settings.strategy.given:
        raise ConfigurationError(
            "--strategy, --dp, --secagg and their options build the strategy of the default app; "
            "with --app, your roost.App's strategy is used: set the strategy there (for privacy: "
            "roost.privacy.with_central_dp or LocalDPClientFn; "
            "secure_aggregation=roost.strategy.SecureAggregation(...))"
        )
    if given := sorted(set(settings.given) & set(DEMO_OPTIONS)):
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        raise ConfigurationError(
            f"{flags} set the default app's training; with --app, your roost.App builds its "
            "own clients and strategy: set them there"
        )


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

    serves_whole_run: ClassVar[bool] = False
    """True when `serve` runs the whole server side itself (a Flower project's ServerApp)."""

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

    def simulation(self, settings: RunSettings) -> Simulation:
        """What `roost simulate` runs: `client_fn` and the strategy (FedAvg when none is set)."""
        refuse_strategy_options(settings)
        strategy = self.make_strategy()
        engine, why = (
            (settings.engine, "--engine") if settings.engine else ("sequential", "the default")
        )
        return Simulation(
            client_fn=self.make_client_fn(settings.seed),
            strategy=strategy if strategy is not None else FedAvg(),
            engine=engine,
            notice=f"engine: {engine} ({why})",
        )

    def server_strategy(self, settings: RunSettings) -> Strategy:
        """The strategy `roost server` runs; a plain App must name one."""
        refuse_strategy_options(settings)
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

    def server_config(self, settings: RunSettings) -> ServerConfig:
        """The rounds and timeout `roost server` runs (`--rounds`, `--round-timeout`)."""
        return ServerConfig(num_rounds=settings.num_rounds, round_timeout=settings.round_timeout)

    def run_settings(self) -> dict[str, Any]:
        """Settings of the app's own that a resumed run must keep (beyond the command line's)."""
        return {}

    def serve(self, args: argparse.Namespace, on_round_end: RoundCallback) -> History:
        """Serve the whole run for `roost server` (where `serves_whole_run`), calling
        `on_round_end` after every round; return its History."""
        raise NotImplementedError("roost server serves this app's server_strategy itself")

    def connect(self, args: argparse.Namespace) -> bool:
        """Run the whole node for `roost client`; False (the default) lets `roost client` run
        `make_client_fn`'s clients itself."""
        return False
