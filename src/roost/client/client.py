"""The client contract: any object with `get_parameters`, `fit` and `evaluate`.

Clients are built on demand by a `client_fn(context)`, so a simulation of thousands of clients keeps
only the ones currently working alive.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from roost.core import types
from roost.core.types import Config, Instruction, Metrics, Parameters, Result
from roost.errors import InvalidMessageError


@dataclass
class Context:
    """What a `client_fn` knows about the client it builds.

    `node_config` mirrors the same facts under the hyphenated keys Flower users know
    (`"partition-id"`, `"num-partitions"`). `state` is the node's own record: it persists
    across the instructions a node answers, on every engine except the vectorized one (the
    engine keeps it, even where the client object is rebuilt for each instruction) and in a
    deployed client process. A simulation with a state directory records it with every round
    and gives it back on resume, so there it may hold only arrays, scalars, None, and lists,
    tuples or dicts of them. Client-side protocols (secure aggregation) keep their round's
    secrets there (never recorded).
    """

    partition_id: int
    num_partitions: int
    node_id: str = ""
    run_config: Config = field(default_factory=dict)
    node_config: Config = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.node_id:
            self.node_id = str(self.partition_id)
        self.node_config.setdefault("partition-id", self.partition_id)
        self.node_config.setdefault("num-partitions", self.num_partitions)

    @classmethod
    def for_partition(
        cls,
        partition_id: int,
        num_partitions: int,
        *,
        run_config: Config | None = None,
        node_id: str = "",
        state: dict[str, Any] | None = None,
    ) -> Context:
        """The context of the client that holds partition `partition_id` of `num_partitions`.

        The client gets its own copy of `run_config`, so a client that changes it cannot reach
        the next one; `node_id` defaults to the partition id.
        """
        return cls(
            partition_id=partition_id,
            num_partitions=num_partitions,
            node_id=node_id,
            run_config=dict(run_config or {}),
            state={} if state is None else state,
        )


@runtime_checkable
class ClientLike(Protocol):
    """What roost needs from a client. No base class is required."""

    def get_parameters(self, config: Config) -> Parameters: ...

    def fit(self, parameters: Parameters, config: Config) -> tuple[Parameters, int, Metrics]: ...

    def evaluate(self, parameters: Parameters, config: Config) -> tuple[float, int, Metrics]: ...


ClientFn = Callable[[Context], ClientLike]
"""Builds the client of one node on demand, from its `Context` (`context.partition_id` says
which data it holds): how simulations keep only working clients in memory."""


class Client:
    """Optional base class for clients; subclass it and override what your client supports."""

    def get_parameters(self, config: Config) -> Parameters:
        """Return the current local parameters as a list of NumPy arrays."""
        raise NotImplementedError(
            f"{type(self).__name__} does not implement get_parameters; give the strategy "
            "initial_parameters or implement get_parameters"
        )

    def fit(self, parameters: Parameters, config: Config) -> tuple[Parameters, int, Metrics]:
        """Train on local data from `parameters`; return (new parameters, num_examples, metrics)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement fit")

    def evaluate(self, parameters: Parameters, config: Config) -> tuple[float, int, Metrics]:
        """Evaluate `parameters` on local data; return (loss, num_examples, metrics)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement evaluate")


def _unpack(value: object, names: tuple[str, ...], method: str) -> tuple:
    if not isinstance(value, tuple | list) or len(value) != len(names):
        raise InvalidMessageError(
            f"{method} must return a tuple ({', '.join(names)}), got {type(value).__name__}"
            + (f" of length {len(value)}" if isinstance(value, tuple | list) else "")
        )
    return tuple(value)


# The client method each model instruction calls, the names of the tuple it returns, and the
# result those values make.
_MODEL_CALLS: dict[type, tuple[str, tuple[str, ...], Callable[..., Result]]] = {
    types.FitIns: ("fit", ("parameters", "num_examples", "metrics"), types.FitRes),
    types.EvaluateIns: ("evaluate", ("loss", "num_examples", "metrics"), types.EvaluateRes),
}


def call_client(client: ClientLike, instruction: Instruction) -> Result:
    """Run one fit, evaluate or get_parameters instruction on a client object and wrap what it
    returns (not yet validated). Protocol phases go through `roost.client.protocols.execute`."""
    for kind, (method, names, result) in _MODEL_CALLS.items():
        if isinstance(instruction, kind):
            returned = getattr(client, method)(instruction.parameters, dict(instruction.config))
            return result(*_unpack(returned, names, method))
    if isinstance(instruction, types.GetParametersIns):
        return types.GetParametersRes(client.get_parameters(dict(instruction.config)))
    raise TypeError(f"unknown instruction {type(instruction).__name__}")


def client_rng(seed: int, server_round: int, partition_id: int) -> np.random.Generator:
    """One reproducible stream per (seed, round, client), independent across clients and rounds,
    for simulated training and simulated attacks (batch order, subsampling).

    Not for anything that protects people: DP noise and secure-aggregation masks use the operating
    system's CSPRNG or a cryptographic stream instead.
    """
    return np.random.default_rng([seed, server_round, partition_id])
