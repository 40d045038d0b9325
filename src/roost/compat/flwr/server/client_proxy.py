"""`flwr.server.client_proxy.ClientProxy`: a client as a classic strategy names it.

On roost a strategy never calls a client itself: `configure_fit` / `configure_evaluate` return
`(ClientProxy, instruction)` pairs and roost's round loop delivers them (with its timeouts,
validation and failure handling), so the proxy's own calls are refused with a message saying so.
"""

from __future__ import annotations

from typing import Any

from roost.core.types import ClientId
from roost.errors import ConfigurationError


class ClientProxy:
    """One client of the run, known by its id.

    Attributes:
        cid: the client's id (roost's client id, a string: "0", "1", … in a simulation).
        node_id: the id as an int where it is one (Flower's node id), else a stable hash of it.
        properties: Flower's client properties (empty: roost sends none).
    """

    def __init__(self, cid: ClientId) -> None:
        self.cid = str(cid)
        self.node_id = int(self.cid) if self.cid.isdigit() else _stable_number(self.cid)
        self.properties: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"ClientProxy(cid={self.cid!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ClientProxy) and other.cid == self.cid

    def __hash__(self) -> int:
        return hash(self.cid)

    def _refuse(self, call: str) -> ConfigurationError:
        return ConfigurationError(
            f"ClientProxy.{call} is not available on roost: return (client, instruction) pairs "
            "from configure_fit / configure_evaluate and the round loop delivers them"
        )

    def get_properties(self, *args: Any, **kwargs: Any) -> Any:
        raise self._refuse("get_properties")

    def get_parameters(self, *args: Any, **kwargs: Any) -> Any:
        raise self._refuse("get_parameters")

    def fit(self, *args: Any, **kwargs: Any) -> Any:
        raise self._refuse("fit")

    def evaluate(self, *args: Any, **kwargs: Any) -> Any:
        raise self._refuse("evaluate")

    def reconnect(self, *args: Any, **kwargs: Any) -> Any:
        raise self._refuse("reconnect")


def _stable_number(text: str) -> int:
    """A non-negative int from a non-numeric id, the same in every process (unlike `hash`)."""
    return int.from_bytes(text.encode()[:7].ljust(7, b"\0"), "big")


__all__ = ["ClientProxy"]
