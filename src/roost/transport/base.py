"""The cohort-level transport contract that every engine implements.

The round loop hands a transport a whole cohort of `(client_id, instruction)` pairs and a timeout;
the transport yields `(client_id, result | Failure)` pairs as they finish. That is the only thing
in-process simulation, worker pools, the vectorized engine and gRPC differ in.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol, runtime_checkable

from roost.core.types import ClientId, Instruction, Outcome


@runtime_checkable
class Transport(Protocol):
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
