"""`flwr.server` names: ServerApp, ServerAppComponents, ServerConfig, start_server, strategy."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from roost.client.client import Context
from roost.compat.flwr.server import strategy
from roost.errors import ConfigurationError
from roost.server.history import History
from roost.server.loop import ServerConfig
from roost.strategy.strategy import Strategy


@dataclass
class ServerAppComponents:
    """What a `server_fn` returns: the strategy and the server config."""

    strategy: Strategy | None = None
    config: ServerConfig | None = None
    server: Any = None
    client_manager: Any = None

    def __post_init__(self) -> None:
        if self.server is not None or self.client_manager is not None:
            raise ConfigurationError(
                "roost has one server loop and no client managers; pass only strategy= and "
                "config= to ServerAppComponents"
            )


class ServerApp:
    """Holds `server_fn(context) -> ServerAppComponents`, or a fixed strategy and config."""

    def __init__(
        self,
        server_fn: Callable[[Context], ServerAppComponents] | None = None,
        *,
        config: ServerConfig | None = None,
        strategy: Strategy | None = None,
    ) -> None:
        if server_fn is not None and (config is not None or strategy is not None):
            raise ConfigurationError("give ServerApp either server_fn= or config=/strategy=")
        self.server_fn = server_fn
        self._components = ServerAppComponents(strategy=strategy, config=config)

    def components(self, context: Context) -> ServerAppComponents:
        """The strategy and config for this run (calls `server_fn` when there is one)."""
        if self.server_fn is None:
            return self._components
        components = self.server_fn(context)
        if not isinstance(components, ServerAppComponents):
            raise ConfigurationError(
                f"server_fn must return ServerAppComponents, got {type(components).__name__}"
            )
        return components


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
    "History",
    "ServerApp",
    "ServerAppComponents",
    "ServerConfig",
    "start_server",
    "strategy",
]
