"""The client side: the contract, the optional base class and the context a `client_fn` receives."""

from roost.client.client import Client, ClientFn, ClientLike, Context, call_client

__all__ = ["Client", "ClientFn", "ClientLike", "Context", "call_client"]
