"""The bundled demo: softmax regression on scikit-learn's digits, split IID across clients.

`roost simulate` runs it with no arguments; `roost server` / `roost client` deploy it. `app` is the
demo as a `roost.App`; the parts are usable on their own:

    from roost.apps.digits import make_client_fn, make_strategy
    from roost.settings import RunSettings

    settings = RunSettings(num_clients=10, num_rounds=5)
    history = roost.run_simulation(
        make_client_fn(settings.seed), settings.num_clients, strategy=make_strategy(settings),
        config=roost.ServerConfig(num_rounds=settings.num_rounds), seed=settings.seed,
    )
"""

from roost.apps.digits.client import DigitsClient, DigitsClientFn, client_data, make_client_fn
from roost.apps.digits.commands import DigitsApp
from roost.apps.digits.settings import (
    NUM_CLASSES,
    NUM_FEATURES,
    check_settings,
)
from roost.apps.digits.strategy import centralized_evaluate_fn, make_strategy
from roost.apps.digits.task import DigitsData, digits_task

app = DigitsApp()
"""The demo as the app `roost simulate | server | client` run without `--app`."""

__all__ = [
    "NUM_CLASSES",
    "NUM_FEATURES",
    "DigitsApp",
    "DigitsClient",
    "DigitsClientFn",
    "DigitsData",
    "app",
    "centralized_evaluate_fn",
    "check_settings",
    "client_data",
    "digits_task",
    "make_client_fn",
    "make_strategy",
]
