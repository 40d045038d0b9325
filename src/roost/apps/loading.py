"""`--app module:attr`: run your own clients and strategy with `roost server` / `roost client`.

    # my_app.py
    import roost

    def client_fn(context: roost.Context):
        return MyClient(context.partition_id, context.num_partitions)

    app = roost.App(client_fn=client_fn, strategy=lambda: roost.FedAvg(min_available_clients=2))

    $ roost server --app my_app:app --rounds 3 --address 0.0.0.0:8080
    $ roost client --app my_app:app --server HOST:8080 --partition-id 0 --num-partitions 2

`attr` may also name a bare `client_fn`, which is enough for `roost client`.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

from roost.client.client import ClientFn
from roost.errors import ConfigurationError
from roost.strategy.strategy import Strategy


@dataclass(frozen=True)
class App:
    """A federated application for the command line: how to build clients, and the strategy.

    Args:
        client_fn: builds a client from a `roost.Context` (`partition_id`, `num_partitions`, ...).
        strategy: the server's strategy, or a function of no arguments returning a fresh one.
    """

    client_fn: ClientFn | None = None
    strategy: Strategy | Callable[[], Strategy] | None = None

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
