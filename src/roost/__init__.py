"""roost: federated learning that is fast to simulate, safe to deploy and simple to read.

A run in a few lines:

    import roost

    history = roost.run_simulation(
        client_fn, num_clients=10, strategy=roost.FedAvg(),
        config=roost.ServerConfig(num_rounds=5),
    )
"""

from typing import TYPE_CHECKING

from roost.app import App
from roost.client import Client, ClientFn, ClientLike, Context
from roost.core.simclock import ClientProfile, ClientProfiles, VirtualClock
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
from roost.engines.warm import WarmClients
from roost.errors import (
    ClientRefusedError,
    ConfigurationError,
    InvalidMessageError,
    NotEnoughClientsError,
    RoostError,
    ServerUnreachableError,
)

# Before anything reads roost.strategy.presets.PRESETS: Python runs this file before any roost
# submodule, whichever is imported first, so importing roost.privacy here (it registers DPFedAvg,
# which `roost.DPFedAvg` exports anyway) makes `--strategy dpfedavg` and `preset("dpfedavg")`
# work from every entry point: the CLI, roost.privacy, a user's own import.
from roost.privacy import DPFedAvg
from roost.server import History, ServerConfig, ServerState, run_rounds
from roost.simulation import run_simulation
from roost.strategy import FedAsync, FedBuff, Strategy
from roost.strategy import presets as _presets
from roost.strategy.presets import *  # noqa: F403 (the named strategies: presets.__all__)
from roost.strategy.run_config import strategy_from_run_config
from roost.tasks import SGD, Adam, Task

if TYPE_CHECKING:
    from roost.deploy import start_client, start_server

__version__ = "0.1.0"

# Deployment needs grpc; it is imported on first use so that `import roost` stays light (type
# checkers see the import above).
_LAZY = {"start_server": "roost.deploy", "start_client": "roost.deploy"}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'roost' has no attribute {name!r}")


__all__ = [
    "SGD",
    "Adam",
    "App",
    "Client",
    "ClientProfile",
    "ClientProfiles",
    "ClientFn",
    "ClientLike",
    "ClientRefusedError",
    "Config",
    "ConfigurationError",
    "Context",
    "DPFedAvg",
    "EvaluateIns",
    "EvaluateRes",
    "FedAsync",
    "FedBuff",
    "Failure",
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
    "ServerUnreachableError",
    "Strategy",
    "Task",
    "VirtualClock",
    "WarmClients",
    "run_rounds",
    "run_simulation",
    "start_client",
    "start_server",
    "strategy_from_run_config",
]
__all__ += _presets.__all__
