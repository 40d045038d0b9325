"""The sequential engine: clients one after another, in this process. The reference engine.

Also the pieces every engine that runs a `client_fn` shares: the simulated clients' ids and how one
instruction runs on a freshly built client.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

from roost.client.client import ClientFn, Context
from roost.client.protocols import execute
from roost.core.types import (
    ClientId,
    Config,
    EvaluateIns,
    Failure,
    FitIns,
    Instruction,
    Outcome,
    PhaseIns,
    Result,
)
from roost.errors import ConfigurationError, NotEnoughClientsError

log = logging.getLogger(__name__)


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


def run_instruction(
    client_fn: ClientFn, context: Context, instruction: Instruction
) -> Result | Failure:
    """Build a client with `client_fn`, run one instruction, and turn exceptions into failures.

    The client gets private copies of the arrays so that in-place updates cannot reach the global
    model, and is dropped afterwards so only working clients hold memory.
    """
    client_id = context.node_id
    try:
        client = client_fn(context)
        return execute(client, _with_copied_arrays(instruction), context)
    except Exception as error:  # a client's bug must not stop the federation
        return Failure(client_id, f"{type(error).__name__}: {error}", kind="error")


def run_node(
    client_fn: ClientFn,
    client_id: ClientId,
    num_clients: int,
    run_config: Config,
    instruction: Instruction,
    state: dict[str, Any],
) -> tuple[Result | Failure, dict[str, Any]]:
    """Run one instruction on simulated node `client_id` with its `state`; return the outcome
    and the node's state afterwards (engines keep it for the node's next instruction)."""
    context = Context.for_partition(int(client_id), num_clients, run_config=run_config, state=state)
    return run_instruction(client_fn, context, instruction), context.state


def _with_copied_arrays(instruction: Instruction) -> Instruction:
    if isinstance(instruction, FitIns | EvaluateIns | PhaseIns):
        return replace(instruction, parameters=[array.copy() for array in instruction.parameters])
    return instruction


class SequentialEngine:
    """Build and run each sampled client in this process, one at a time.

    Any number of exchanges (`run` calls) may share a round: each builds its clients afresh.

    With a `timeout`, each client runs in a helper thread and gets `timeout` seconds from its own
    start, as it would if all clients ran in parallel. A client past its time is a failure; its
    thread cannot be killed and finishes in the background, and its result is discarded.
    """

    def __init__(
        self, client_fn: ClientFn, num_clients: int, run_config: Config | None = None
    ) -> None:
        check_num_clients(num_clients)
        self.client_fn = client_fn
        self.num_clients = num_clients
        self.run_config = dict(run_config or {})
        self._states: dict[ClientId, dict[str, Any]] = {}  # each node's Context.state

    def wait_for_clients(self, count: int, timeout: float | None = None) -> list[ClientId]:
        """Every simulated client is always available."""
        return simulation_clients(self.num_clients, count)

    def run(
        self, cohort: Sequence[tuple[ClientId, Instruction]], timeout: float | None
    ) -> Iterator[Outcome]:
        """Build each client, run its instruction, and yield the outcome, in cohort order."""
        for client_id, instruction in cohort:
            context = Context.for_partition(
                int(client_id),
                self.num_clients,
                run_config=self.run_config,
                state=self._states.setdefault(client_id, {}),
            )
            if timeout is None:
                yield client_id, run_instruction(self.client_fn, context, instruction)
            else:
                yield client_id, self._run_with_timeout(context, instruction, timeout)

    def _run_with_timeout(
        self, context: Context, instruction: Instruction, timeout: float
    ) -> Result | Failure:
        box: list[Result | Failure] = []
        worker = threading.Thread(
            target=lambda: box.append(run_instruction(self.client_fn, context, instruction)),
            name=f"roost-client-{context.node_id}",
            daemon=True,
        )
        worker.start()
        worker.join(timeout)
        if worker.is_alive() or not box:
            return Failure(
                context.node_id, f"no result within the round timeout of {timeout:g} s", "timeout"
            )
        return box[0]

    def close(self) -> None:
        """Nothing to release: clients live only while they run."""
