"""Run a whole secure-aggregation round in one process, every message through its wire form.

For tests, benchmarks and as the reference for wiring the protocol into a transport: each
instruction and reply goes through `to_wire()` and `from_wire()`, exactly as over a network.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field

import numpy as np

from roost.secagg.client import SecAggClient
from roost.secagg.errors import SecAggClientError, SecAggInstructionError
from roost.secagg.graph import SecAggParameters
from roost.secagg.messages import WireMessage
from roost.secagg.server import Phase, SecAggResult, SecAggServer

Intercept = Callable[[Phase, str, WireMessage], WireMessage]


@dataclass
class RoundCosts:
    """Per-client counters filled while a round runs."""

    client_seconds: dict[str, float] = field(default_factory=dict)
    bytes_to_clients: dict[str, int] = field(default_factory=dict)
    bytes_from_clients: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RoundTrace:
    """What a round cost and how it ended.

    Bytes count array payloads plus value payloads (8 per number, the length of str/bytes and of
    every key): the size of the data, not of any particular transport's framing.
    """

    result: SecAggResult
    server_seconds: float
    client_seconds: dict[str, float]
    bytes_to_clients: dict[str, int]
    bytes_from_clients: dict[str, int]
    rejected: dict[str, str]


def run_in_memory(
    inputs: Mapping[str, np.ndarray],
    *,
    server_round: int = 1,
    bits: int = 32,
    parameters: SecAggParameters | None = None,
    shuffle: Callable[[list[int]], None] | None = None,
    silent: Mapping[Phase, Collection[str]] | None = None,
    intercept: Intercept | None = None,
) -> RoundTrace:
    """One round over `inputs` (client id -> quantized uint64 vector, all the same length).

    `silent[phase]` are clients that never answer that phase (they drop out in it); `intercept`
    may replace any reply on its way to the server (to test what the server does with it).
    """
    lengths = {vector.size for vector in inputs.values()}
    if len(lengths) != 1:
        raise ValueError("every input must be a vector of the same length")
    started = time.perf_counter()
    server = SecAggServer(
        list(inputs),
        lengths.pop(),
        server_round=server_round,
        bits=bits,
        parameters=parameters,
        shuffle=shuffle,
    )
    costs = RoundCosts()
    server_time = time.perf_counter() - started
    clients = {client_id: SecAggClient() for client_id in inputs}
    silent = silent or {}
    while not server.done:
        phase = server.phase
        started = time.perf_counter()
        instructions = server.instructions()
        server_time += time.perf_counter() - started
        for client_id, (arrays, values) in instructions.items():
            _count(costs.bytes_to_clients, client_id, arrays, values)
            if client_id in silent.get(phase, ()):
                continue
            started = time.perf_counter()
            try:
                reply = clients[client_id].respond(arrays, values, inputs[client_id])
            except SecAggInstructionError:
                continue  # a client that refuses simply does not answer
            finally:
                elapsed = time.perf_counter() - started
                costs.client_seconds[client_id] = costs.client_seconds.get(client_id, 0) + elapsed
            if intercept is not None:
                reply = intercept(phase, client_id, reply)
            _count(costs.bytes_from_clients, client_id, *reply)
            started = time.perf_counter()
            try:
                server.receive(client_id, *reply)
            except SecAggClientError as error:
                costs.rejected[client_id] = error.reason
            server_time += time.perf_counter() - started
        started = time.perf_counter()
        server.close_phase()
        server_time += time.perf_counter() - started
    return RoundTrace(server.result(), server_time, **vars(costs))


def wire_size(arrays: object, values: object) -> int:
    """Payload bytes of a wire message (see `RoundTrace`); what is not a message counts 0."""
    size = 0
    if isinstance(arrays, list | tuple):
        size += sum(array.nbytes for array in arrays if isinstance(array, np.ndarray))
    if isinstance(values, Mapping):
        for key, value in values.items():
            size += len(str(key)) + (len(value) if isinstance(value, str | bytes) else 8)
    return size


def _count(counter: dict[str, int], client_id: str, arrays: object, values: object) -> None:
    counter[client_id] = counter.get(client_id, 0) + wire_size(arrays, values)
