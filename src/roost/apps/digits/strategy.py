"""The demo's strategy: FedAvg with centralized evaluation, or any preset `--strategy` names.

For FedSGD the demo client answers `fit` with its full-batch gradient: `FedSGD` puts
`RETURN_GRADIENTS: True` in every fit config.
"""

from __future__ import annotations

from typing import Any

from roost.apps.digits import softmax
from roost.apps.digits.settings import NUM_CLASSES, NUM_FEATURES
from roost.core.config_keys import BATCH_SIZE, LEARNING_RATE, LOCAL_EPOCHS, SERVER_ROUND
from roost.core.types import Config, Metrics, Parameters
from roost.data.bundled_digits import load_digits_split
from roost.errors import ConfigurationError
from roost.metrics import weighted_average
from roost.settings import RunSettings
from roost.strategy.presets import FedAvg
from roost.strategy.strategy import EvaluateFn, Strategy


def centralized_evaluate_fn(seed: int = 0) -> EvaluateFn:
    """Evaluate the global model on the held-out digits test split, on the server."""

    def evaluate(
        server_round: int, parameters: Parameters, config: Config
    ) -> tuple[float, Metrics]:
        _, test = load_digits_split(seed=seed)
        loss, accuracy = softmax.loss_and_accuracy(parameters, test.x, test.y)
        return loss, {"accuracy": accuracy}

    return evaluate


def strategy_knobs(settings: RunSettings) -> dict[str, Any]:
    """The demo's own knobs of any strategy: its fractions and minimums, initial model,
    centralized evaluation, fit config (epochs, batch size, learning rate) and metric means."""

    def fit_config(server_round: int) -> Config:
        return {
            SERVER_ROUND: server_round,
            LOCAL_EPOCHS: settings.local_epochs,
            BATCH_SIZE: settings.batch_size,
            LEARNING_RATE: settings.learning_rate,
        }

    minimum = min(2, settings.num_clients)
    return {
        "fraction_fit": settings.fraction_fit,
        "fraction_evaluate": settings.fraction_evaluate,
        "min_fit_clients": minimum,
        "min_evaluate_clients": minimum if settings.fraction_evaluate > 0 else 0,
        "min_available_clients": minimum,
        "initial_parameters": softmax.init_parameters(NUM_FEATURES, NUM_CLASSES),
        "evaluate_fn": centralized_evaluate_fn(settings.seed),
        "on_fit_config_fn": fit_config,
        "on_evaluate_config_fn": lambda server_round: {SERVER_ROUND: server_round},
        "fit_metrics_aggregation_fn": weighted_average,
        "evaluate_metrics_aggregation_fn": weighted_average,
    }


def make_strategy(settings: RunSettings) -> FedAvg:
    """FedAvg over the demo's clients, with centralized evaluation and weighted metrics."""
    return FedAvg(**strategy_knobs(settings))


def demo_strategy(settings: RunSettings, **knobs: Any) -> Strategy:
    """The strategy `settings` ask for (`--strategy`, its options, `--dp`, `--secagg`) with the
    demo's knobs, and `knobs` of the command's (`min_available_clients` of a server).

    A preset's own client learning rate (FedAdam's `eta_l`, ...) is the demo's `--lr`.
    """
    strategy = settings.build_strategy({**strategy_knobs(settings), **knobs})
    needed = strategy.aggregator.min_updates
    if needed > settings.num_clients:
        raise ConfigurationError(
            f"{strategy.aggregator!r} needs at least {needed} clients per round but the demo has "
            f"{settings.num_clients}; raise --clients (--min-clients) or lower --num-malicious"
        )
    return strategy
