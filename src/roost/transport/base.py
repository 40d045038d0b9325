"""The cohort-level transport contract that every engine implements.

The round loop hands a transport a whole cohort of `(client_id, instruction)` pairs and a timeout;
the transport yields `(client_id, result | Failure)` pairs as they finish. That is the only thing
in-process simulation, worker pools, the vectorized engine and gRPC differ in.

`NodeStateStore` is the one other thing the loop asks of a transport that keeps per-node state (a
simulation engine keeps each node's `Context.state`): a snapshot to checkpoint, and a restore.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from roost.core.types import ClientId, Instruction, Outcome


@runtime_checkable
class Transport(Protocol):
    """Where clients run, as the round loop sees it: it waits for clients, hands over a cohort's
    instructions and receives their outcomes as they finish (every engine and gRPC implement it)."""

    def wait_for_clients(self, count: int, timeout: float | None = None) -> list[ClientId]:
        """Return the ids of available clients once at least `count` are, in a stable order.

        Raise `NotEnoughClientsError` if that cannot happen within `timeout` seconds
        (a simulation knows at once that it never will).
        """
        ...

    def run(
        self, cohort: Sequence[tuple[ClientId, Instruction]], timeout: float | None
    ) -> Iterator[Outcome]:
        """Deliver each instruction to its client; yield one outcome per cohort member.

        A client that raises, disconnects or takes longer than `timeout` seconds yields a
        `Failure`. Outcomes may come in any order; each client id appears exactly once.
        """
        ...

    def close(self) -> None:
        """Release workers, connections and threads. Called once, when the run ends."""
        ...


NodeState = dict[str, Any]
"""A simulated node's `Context.state`; engines keep it between the node's instructions."""


@runtime_checkable
class NodeStateStore(Protocol):
    """Where a transport keeps its nodes' `Context.state`, as the round loop records and restores
    it (implemented by `roost.engines.node_states.NodeStates`)."""

    def snapshot(self) -> dict[ClientId, NodeState]:
        """A copy of every non-empty node state, by node id, for the round's checkpoint."""
        ...

    def restore(self, states: Mapping[ClientId, NodeState]) -> None:
        """Make every node's state a copy of its entry in `states`, before a resumed run's first
        round."""
        ...
