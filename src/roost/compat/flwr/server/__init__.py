"""`flwr.server` names: ServerApp, ServerAppComponents, ServerConfig, Grid, LegacyContext,
start_server, the client manager and proxy a classic strategy's steps get, and the submodules
`strategy` and `workflow`."""

from __future__ import annotations

from typing import Any

from roost.compat.flwr.server import strategy, workflow
from roost.compat.flwr.server.client_manager import ClientManager, SimpleClientManager
from roost.compat.flwr.server.client_proxy import ClientProxy
from roost.compat.flwr.server.workflow import LegacyContext
from roost.compat.flwr.serverapp.app import ServerApp, ServerAppComponents
from roost.compat.flwr.serverapp.grid import Grid
from roost.compat.flwr.unsupported import missing_names
from roost.errors import ConfigurationError
from roost.server.history import History
from roost.server.loop import ServerConfig
from roost.strategy.strategy import Strategy


def start_server(
    *,
    server_address: str = "0.0.0.0:8080",
    config: ServerConfig | None = None,
    strategy: Strategy | None = None,
    certificates: tuple[Any, ...] | None = None,
    grpc_max_message_length: int | None = None,
    **options: Any,
) -> History:
    """Serve a run over gRPC with roost (see `roost.start_server`) and return its History.

    Other keyword arguments (`state_dir=`, `auth_tokens=`, `out_dir=`, …) go to
    `roost.deploy.start_server`.
    """
    from roost.deploy import start_server as roost_start_server

    for unsupported in ("server", "client_manager"):
        if options.pop(unsupported, None) is not None:
            raise ConfigurationError(f"roost's start_server takes no {unsupported}=")
    if grpc_max_message_length is not None:
        options.setdefault("max_message_bytes", grpc_max_message_length)
    return roost_start_server(
        server_address=server_address,
        config=config,
        strategy=strategy if strategy is not None else _default_strategy(),
        certificates=certificates,
        **options,
    )


def _default_strategy() -> Strategy:
    # A function because start_server's `strategy` argument hides the submodule of that name.
    return strategy.FedAvg()


__all__ = [
    "ClientManager",
    "ClientProxy",
    "Grid",
    "History",
    "LegacyContext",
    "ServerApp",
    "ServerAppComponents",
    "ServerConfig",
    "SimpleClientManager",
    "start_server",
    "strategy",
    "workflow",
]

__getattr__ = missing_names("flwr.server", __all__)
