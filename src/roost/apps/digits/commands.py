"""The demo as the app `roost simulate | server | client` run when no `--app` is given."""

from __future__ import annotations

import argparse

from roost.app import App, Simulation
from roost.apps.digits.attacks import add_attack_arguments, attacked_client_fn
from roost.apps.digits.client import make_client_fn
from roost.apps.digits.settings import check_settings
from roost.apps.digits.strategy import demo_strategy
from roost.apps.digits.task import demo_engine
from roost.client.client import ClientFn
from roost.settings import RunSettings
from roost.strategy.strategy import Strategy


class DigitsApp(App):
    """Softmax regression on scikit-learn's digits, split IID, under any `--strategy`."""

    title = "the bundled digits demo"
    description = (
        "Simulate FedAvg over softmax regression on scikit-learn's digits, split IID across "
        "clients, with centralized evaluation on a held-out test split."
    )

    def add_arguments(self, parser: argparse.ArgumentParser, command: str) -> None:
        """`roost simulate` gets the attack options (a server builds no clients)."""
        if command == "simulate":
            add_attack_arguments(parser)

    def simulation(self, settings: RunSettings) -> Simulation:
        """The demo's clients (some attacking, with `--attack`; noising their updates, with
        `--dp local`) and `--strategy`, on `--engine`.

        Without `--engine`, the NumPy clients run on the sequential engine, the fastest here.
        Attackers do not protect themselves: local DP wraps the honest client inside the attack.
        """
        check_settings(settings)
        strategy = demo_strategy(settings, min_available_clients=min(2, settings.num_clients))
        client_fn = make_client_fn(settings.seed)
        local_dp = settings.privacy is not None and settings.privacy.mode == "local"
        if settings.privacy is not None:
            client_fn = settings.privacy.client_fn(client_fn)
        options = settings.app_options
        client_fn = attacked_client_fn(options, client_fn, settings.num_clients, settings.seed)
        plain = (
            options.get("attack") is None
            and settings.strategy.name != "fedsgd"
            and not local_dp
            and settings.secure_aggregation is None
            and settings.strategy.compression is None
        )
        engine, client_fn, notice = demo_engine(settings.engine, client_fn, settings, plain=plain)
        return Simulation(client_fn, strategy, engine, notice)

    def server_strategy(self, settings: RunSettings) -> Strategy:
        """`--strategy` with the demo's knobs, waiting for `settings.num_clients` clients."""
        return demo_strategy(settings, min_available_clients=settings.num_clients)

    def make_client_fn(self, seed: int) -> ClientFn:
        """The demo client of a partition, with the data split of `seed`."""
        return make_client_fn(seed)
