"""`flwr.serverapp`: `ServerApp`, `Grid` and the message-based strategies (`.strategy`)."""

from __future__ import annotations

from roost.compat.flwr.serverapp import strategy
from roost.compat.flwr.serverapp.app import ServerApp, ServerAppComponents
from roost.compat.flwr.serverapp.grid import Grid
from roost.compat.flwr.unsupported import missing_names

__all__ = ["Grid", "ServerApp", "ServerAppComponents", "strategy"]

__getattr__ = missing_names("flwr.serverapp", __all__)
