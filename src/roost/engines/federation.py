"""What every engine that runs a `client_fn` simulates: a `Federation` of `num_clients` nodes.

`SimulatedFederation` is the base of those engines (sequential, process, Ray): it holds the
federation, keeps each node's `Context.state` and answers that every simulated client is always
available. The federation travels as one value to wherever clients are built (`ClientHost`, a
worker process, a Ray actor).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from roost.client.client import ClientFn
from roost.core.types import ClientId, Config
from roost.engines.node_states import KeepsNodeStates, NodeStates
from roost.errors import ConfigurationError, NotEnoughClientsError


def simulation_clients(num_clients: int, count: int) -> list[ClientId]:
    """A simulation's client ids ("0" … "N-1", its partition ids), every one always available.

    Raises `NotEnoughClientsError` at once when the strategy needs more than `num_clients`:
    unlike a deployment, a simulation cannot wait for more clients to arrive.
    """
    if count > num_clients:
        raise NotEnoughClientsError(
            f"the strategy needs at least {count} clients but the simulation has "
            f"{num_clients}; raise num_clients or lower min_available_clients / "
            "min_fit_clients / min_evaluate_clients"
        )
    return [str(index) for index in range(num_clients)]


def check_num_clients(num_clients: int) -> None:
    """Refuse a simulation without clients."""
    if num_clients < 1:
        raise ConfigurationError(f"num_clients must be at least 1, got {num_clients}")


@dataclass(frozen=True)
class Federation:
    """The federation an engine simulates.

    Attributes:
        client_fn: builds the client of a node from its `Context`.
        num_clients: how many nodes (partitions) exist, at least 1.
        run_config: every client's `context.run_config`.
    """

    client_fn: ClientFn
    num_clients: int
    run_config: Config = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_num_clients(self.num_clients)

    @classmethod
    def of(cls, client_fn: ClientFn, num_clients: int, run_config: Config | None) -> Federation:
        """The federation an engine constructor describes, with its own copy of `run_config`."""
        return cls(client_fn, num_clients, dict(run_config or {}))


class SimulatedFederation(KeepsNodeStates):
    """An engine that runs `federation`'s clients: every one is always available, and each
    node's `Context.state` is kept in `node_states` between its instructions."""

    def __init__(self, federation: Federation) -> None:
        self.federation = federation
        self.node_states = NodeStates()

    def wait_for_clients(self, count: int, timeout: float | None = None) -> list[ClientId]:
        """Every simulated client is always available."""
        return simulation_clients(self.federation.num_clients, count)
