"""`flwr.client` names: NumPyClient, Client, ClientApp, start_client, start_numpy_client.

Its submodules `flwr.client.mod` (the mods) and `flwr.client.typing` are here too.
"""

from __future__ import annotations

from typing import Any

from roost.client.client import Client, ClientFn, ClientLike, Context
from roost.compat.flwr.client import mod, typing
from roost.compat.flwr.clientapp import ClientApp, StatefulClientFn
from roost.compat.flwr.unsupported import missing_names
from roost.core.types import Config, Scalar
from roost.errors import ConfigurationError


class NumPyClient(Client):
    """Subclass it and implement `get_parameters`, `fit` and `evaluate` with NumPy arrays.

    roost calls these methods directly; `to_client()` returns the client itself, so code written
    as `FlowerClient(...).to_client()` keeps working.
    """

    context: Context | None = None

    def get_properties(self, config: Config) -> dict[str, Scalar]:
        """Flower's optional property hook; roost never asks for it."""
        return {}

    def to_client(self) -> NumPyClient:
        """Return this client (roost needs no wrapper around a NumPy client)."""
        return self


def start_client(
    *,
    server_address: str,
    client: ClientLike | None = None,
    client_fn: ClientFn | None = None,
    root_certificates: bytes | str | None = None,
    insecure: bool | None = None,
    max_wait_time: float | None = None,
    **options: Any,
) -> None:
    """Connect to a roost server (see `roost.start_client`) and serve it until the run ends.

    As on Flower, the client (or each one `client_fn(context)` builds) sees the node's state as a
    `RecordDict` in `context.state` (a `NumPyClient` also as `self.context`), kept across the
    run's instructions. `max_wait_time` becomes roost's `reconnect_timeout`; other keyword
    arguments are passed on to `roost.deploy.start_client` (e.g. `token=`, `partition_id=`).
    """
    from roost.deploy import start_client as roost_start_client

    if insecure is False and root_certificates is None:
        raise ConfigurationError("insecure=False needs root_certificates= (the server's CA)")
    if max_wait_time is not None:
        options.setdefault("reconnect_timeout", max_wait_time)
    options.pop("transport", None)  # roost speaks one protocol: gRPC
    options.pop("grpc_max_message_length", None)
    if (client is None) != (client_fn is None):  # else roost's start_client says what is wrong
        build = client_fn if client_fn is not None else _Always(client)
        client, client_fn = None, StatefulClientFn(build)
    roost_start_client(
        server_address=server_address,
        client=client,
        client_fn=client_fn,
        root_certificates=root_certificates,
        **options,
    )


class _Always:
    """A `client_fn` that returns the one client it was given."""

    def __init__(self, client: ClientLike) -> None:
        self.client = client

    def __call__(self, context: Context) -> ClientLike:
        return self.client


def start_numpy_client(*, server_address: str, client: NumPyClient, **options: Any) -> None:
    """The older spelling of `start_client(server_address=..., client=client)`."""
    start_client(server_address=server_address, client=client, **options)


__all__ = [
    "Client",
    "ClientApp",
    "NumPyClient",
    "mod",
    "start_client",
    "start_numpy_client",
    "typing",
]

__getattr__ = missing_names("flwr.client", __all__)
