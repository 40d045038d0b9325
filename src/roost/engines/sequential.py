"""The sequential engine: clients one after another, in this process. The reference engine.

What every simulation engine shares (the federation it runs, its clients' ids and the check of
their number) is `roost.engines.federation`, whose helpers this module also offers. How one
instruction runs on a client (built cold, or kept warm) is `roost.engines.warm`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence

from roost.client.client import ClientFn
from roost.core.types import ClientId, Config, Failure, Instruction, Outcome, Result
from roost.engines.federation import (
    Federation,
    SimulatedFederation,
    check_num_clients,
    simulation_clients,
)
from roost.engines.node_states import NodeState
from roost.engines.warm import ClientHost, WarmClients, warm_setting

log = logging.getLogger(__name__)

# The federation helpers stay importable from here, where the engines have always found them.
__all__ = ["SequentialEngine", "check_num_clients", "simulation_clients"]


class SequentialEngine(SimulatedFederation):
    """Run each sampled client in this process, one at a time.

    Any number of exchanges (`run` calls) may share a round. Cold (the default), each instruction
    gets a client freshly built by `client_fn`; with `warm_clients`, the client built for a
    partition is kept for its next instructions (see `roost.engines.warm.WarmClients`, including
    how that can change the results of clients that keep state).

    With a `timeout`, each client runs in a helper thread and gets `timeout` seconds from its own
    start, as it would if all clients ran in parallel. A client past its time is a failure; its
    thread cannot be killed and finishes in the background, its result is discarded, and a warm
    client is not kept.
    """

    def __init__(
        self,
        client_fn: ClientFn,
        num_clients: int,
        run_config: Config | None = None,
        *,
        warm_clients: bool | WarmClients = False,
    ) -> None:
        super().__init__(Federation.of(client_fn, num_clients, run_config))
        self.host = ClientHost(self.federation, warm_setting(warm_clients))

    def run(
        self, cohort: Sequence[tuple[ClientId, Instruction]], timeout: float | None
    ) -> Iterator[Outcome]:
        """Run each instruction on its client and yield the outcome, in cohort order."""
        for client_id, instruction in cohort:
            state = self.node_states.for_node(client_id)
            if timeout is None:
                yield client_id, self.host.run(client_id, instruction, state)[0]
            else:
                yield client_id, self._run_with_timeout(client_id, instruction, state, timeout)

    def _run_with_timeout(
        self, client_id: ClientId, instruction: Instruction, state: NodeState, timeout: float
    ) -> Result | Failure:
        box: list[Result | Failure] = []
        worker = threading.Thread(
            target=lambda: box.append(self.host.run(client_id, instruction, state)[0]),
            name=f"roost-client-{client_id}",
            daemon=True,
        )
        worker.start()
        worker.join(timeout)
        if worker.is_alive() or not box:
            self.host.abandon(client_id)
            return Failure(
                client_id, f"no result within the round timeout of {timeout:g} s", "timeout"
            )
        return box[0]

    def close(self) -> None:
        """Drop the clients kept warm."""
        self.host.clear()
