"""`flwr.serverapp.ServerApp`: the server side of a Flower app.

Two forms, as in Flower: `@app.main()` registers `main(grid, context)`, which drives the run
through a `Grid` (usually by calling a strategy's `start`); the older `ServerApp(server_fn=...)`
(or `ServerApp(config=..., strategy=...)`) names a classic strategy and a `ServerConfig`, which
roost's round loop runs directly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

from roost.errors import ConfigurationError
from roost.server.loop import ServerConfig
from roost.strategy.strategy import Strategy

MainFn = Callable[[Any, Any], None]
Lifespan = Callable[[Any], Iterator[None]]


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
    """A Flower server app: `@app.main()` over a `Grid`, or `server_fn(context) ->
    ServerAppComponents` (or a fixed `config=` and `strategy=`) for classic strategies."""

    def __init__(
        self,
        server_fn: Callable[[Any], ServerAppComponents] | None = None,
        *,
        config: ServerConfig | None = None,
        strategy: Strategy | None = None,
    ) -> None:
        if server_fn is not None and (config is not None or strategy is not None):
            raise ConfigurationError("give ServerApp either server_fn= or config=/strategy=")
        self.server_fn = server_fn
        self._components = ServerAppComponents(strategy=strategy, config=config)
        self._main: MainFn | None = None
        self._lifespan: Lifespan | None = None

    @property
    def is_message_app(self) -> bool:
        """Whether the app has a `main(grid, context)` (the Message API)."""
        return self._main is not None

    def main(self) -> Callable[[MainFn], MainFn]:
        """Register `main(grid, context)`, the function that runs the federation."""

        def register(function: MainFn) -> MainFn:
            if self.server_fn is not None or self._components != ServerAppComponents():
                raise ConfigurationError(
                    "@app.main() needs ServerApp() without server_fn=, config= or strategy="
                )
            self._main = function
            return function

        return register

    def lifespan(self) -> Callable[[Lifespan], Lifespan]:
        """Register a generator `(context) -> Iterator[None]` around `main`."""

        def register(function: Lifespan) -> Lifespan:
            self._lifespan = function
            return function

        return register

    def __call__(self, grid: Any, context: Any) -> None:
        """Run `main(grid, context)` (inside the lifespan, if one is registered)."""
        if self._main is None:
            raise ConfigurationError(
                "this ServerApp has no @app.main(); roost runs server_fn apps with its round "
                "loop directly (roost.compat.flwr.project.run_project)"
            )
        with self._living(context):
            self._main(grid, context)

    def _living(self, context: Any) -> AbstractContextManager[None]:
        if self._lifespan is None:
            return nullcontext()
        return contextmanager(self._lifespan)(context)

    def components(self, context: Any) -> ServerAppComponents:
        """The strategy and config for this run (calls `server_fn` when there is one)."""
        if self._main is not None:
            raise ConfigurationError(
                "this ServerApp runs @app.main(); it has no strategy components to hand out"
            )
        if self.server_fn is None:
            return self._components
        components = self.server_fn(context)
        if not isinstance(components, ServerAppComponents):
            raise ConfigurationError(
                f"server_fn must return ServerAppComponents, got {type(components).__name__}"
            )
        return components


__all__ = ["ServerApp", "ServerAppComponents"]
