"""`flwr.server.client_manager`: the clients a classic strategy's `configure_*` samples from.

In a run, roost hands `configure_fit` / `configure_evaluate` a `SimpleClientManager` filled with
the round's available clients; its `sample` draws from the run's seeded generator (the one the
round loop checkpoints), so a run with a seed, and a resumed run, samples the same clients.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable

import numpy as np

from roost.compat.flwr.server.client_proxy import ClientProxy
from roost.compat.flwr.server.criterion import Criterion
from roost.core.types import ClientId

log = logging.getLogger("roost")


class ClientManager(ABC):
    """Flower's interface for the set of connected clients."""

    @abstractmethod
    def num_available(self) -> int:
        """How many clients are available."""

    @abstractmethod
    def register(self, client: ClientProxy) -> bool:
        """Add `client`; False if it was already there."""

    @abstractmethod
    def unregister(self, client: ClientProxy) -> None:
        """Remove `client`."""

    @abstractmethod
    def all(self) -> dict[str, ClientProxy]:
        """Every available client by id."""

    @abstractmethod
    def wait_for(self, num_clients: int, timeout: int) -> bool:
        """Wait until `num_clients` are available; whether they are."""

    @abstractmethod
    def sample(
        self,
        num_clients: int,
        min_num_clients: int | None = None,
        criterion: Criterion | None = None,
    ) -> list[ClientProxy]:
        """`num_clients` distinct clients drawn uniformly (fewer available: none)."""


class SimpleClientManager(ClientManager):
    """The clients in a dict, sampled uniformly without replacement.

    Args:
        rng: where samples are drawn from (a fresh, unseeded generator by default; in a run,
            the round loop's seeded one).
        waiter: `count -> client ids once at least count are available`; in a run, the round
            loop's (which blocks, or fails when the clients can never be there).
    """

    def __init__(
        self,
        rng: np.random.Generator | None = None,
        waiter: Callable[[int], list[ClientId]] | None = None,
    ) -> None:
        self.clients: dict[str, ClientProxy] = {}
        self._rng = rng if rng is not None else np.random.default_rng()
        self._waiter = waiter

    def __len__(self) -> int:
        return len(self.clients)

    def num_available(self) -> int:
        return len(self.clients)

    def register(self, client: ClientProxy) -> bool:
        if client.cid in self.clients:
            return False
        self.clients[client.cid] = client
        return True

    def unregister(self, client: ClientProxy) -> None:
        self.clients.pop(client.cid, None)

    def all(self) -> dict[str, ClientProxy]:
        return dict(self.clients)

    def wait_for(self, num_clients: int, timeout: int = 86400) -> bool:
        if self._waiter is not None and len(self.clients) < num_clients:
            for client_id in self._waiter(num_clients):
                self.register(ClientProxy(client_id))
        return len(self.clients) >= num_clients

    def sample(
        self,
        num_clients: int,
        min_num_clients: int | None = None,
        criterion: Criterion | None = None,
    ) -> list[ClientProxy]:
        self.wait_for(num_clients if min_num_clients is None else min_num_clients)
        candidates = [c for c in self.clients.values() if criterion is None or criterion.select(c)]
        if num_clients > len(candidates):
            log.info(
                "sample: %d clients asked for, %d available; sampling none",
                num_clients,
                len(candidates),
            )
            return []
        chosen = np.sort(self._rng.choice(len(candidates), size=num_clients, replace=False))
        return [candidates[index] for index in chosen]


__all__ = ["ClientManager", "Criterion", "SimpleClientManager"]
