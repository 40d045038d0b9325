"""`flwr.server.criterion.Criterion`: which clients `ClientManager.sample` may pick."""

from __future__ import annotations

from abc import ABC, abstractmethod

from roost.compat.flwr.server.client_proxy import ClientProxy


class Criterion(ABC):
    """A filter on clients for `ClientManager.sample(..., criterion=...)`."""

    @abstractmethod
    def select(self, client: ClientProxy) -> bool:
        """Whether `client` may be sampled."""


__all__ = ["Criterion"]
