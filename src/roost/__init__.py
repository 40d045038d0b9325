"""roost: federated learning that is fast to simulate, safe to deploy and simple to read.

    import roost

    history = roost.run_simulation(
        client_fn, num_clients=10, strategy=roost.FedAvg(), config=roost.ServerConfig(num_rounds=5)
    )
"""

from roost.client import Client, ClientFn, ClientLike, Context
from roost.core.types import (
    Config,
    EvaluateIns,
    EvaluateRes,
    Failure,
    FitIns,
    FitRes,
    Metrics,
    Parameters,
    Scalar,
)
from roost.errors import (
    ConfigurationError,
    InvalidMessageError,
    NotEnoughClientsError,
    RoostError,
)
from roost.server import History, ServerConfig, ServerState, run_rounds
from roost.simulation import run_simulation
from roost.strategy import FedAvg, Strategy

__version__ = "0.1.0"

__all__ = [
    "Client",
    "ClientFn",
    "ClientLike",
    "Config",
    "ConfigurationError",
    "Context",
    "EvaluateIns",
    "EvaluateRes",
    "Failure",
    "FedAvg",
    "FitIns",
    "FitRes",
    "History",
    "InvalidMessageError",
    "Metrics",
    "NotEnoughClientsError",
    "Parameters",
    "RoostError",
    "Scalar",
    "ServerConfig",
    "ServerState",
    "Strategy",
    "run_rounds",
    "run_simulation",
]
