"""`flwr.client.typing`: the types of a ClientApp's handlers, mods and `client_fn`.

def timing_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    ...
"""

from __future__ import annotations

from collections.abc import Callable

from roost.client.client import Client
from roost.compat.flwr.clientapp import Handler, Mod
from roost.compat.flwr.message import Context
from roost.compat.flwr.unsupported import missing_names

ClientAppCallable = Handler
"""`(message, context) -> reply`: a handler, or the rest of the mod chain a mod calls."""
ClientFnExt = Callable[[Context], Client]
"""`client_fn(context) -> client`: what `ClientApp(client_fn=...)` takes."""

__all__ = ["ClientAppCallable", "ClientFnExt", "Mod"]

__getattr__ = missing_names("flwr.client.typing", __all__)
