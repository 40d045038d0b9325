"""The values that cross every boundary: parameters, configs, metrics, instructions, results.

Parameters are an ordered list of NumPy arrays everywhere; config and metric values are scalars.
These types carry no behaviour beyond construction so that every transport (in-process, process
pool, vectorized, gRPC) can move them without knowing anything about training.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from typing import TypeAlias

import numpy as np

Scalar: TypeAlias = bool | int | float | str | bytes
"""A value of a config or of metrics: what every transport can carry."""
Config: TypeAlias = dict[str, Scalar]
"""What the server sends a client with an instruction: the round's settings (`lr`,
`local_epochs`, your `on_fit_config_fn`'s keys, ...) by name."""
Metrics: TypeAlias = dict[str, Scalar]
"""What a client reports with a result (`accuracy`, `train_loss`, ...) by name."""
Parameters: TypeAlias = list[np.ndarray]
"""A model's weights: an ordered list of NumPy arrays, the same order on the server and on every
client."""
ClientId: TypeAlias = str


@dataclass(frozen=True)
class GetParametersIns:
    """Ask a client for its current parameters (used when the strategy has no initial model)."""

    config: Config = field(default_factory=dict)


@dataclass(frozen=True)
class GetParametersRes:
    """A client's current parameters, the answer to `GetParametersIns`."""

    parameters: Parameters


@dataclass(frozen=True)
class ModelIns:
    """What FitIns and EvaluateIns both carry: the global model and the round's config."""

    parameters: Parameters
    config: Config = field(default_factory=dict)


@dataclass(frozen=True)
class FitIns(ModelIns):
    """Train locally, starting from `parameters`, as `config` says."""


@dataclass(frozen=True)
class EvaluateIns(ModelIns):
    """Evaluate `parameters` on the client's local data."""


@dataclass(frozen=True)
class FitRes:
    """What a client sends back after local training."""

    parameters: Parameters
    num_examples: int
    metrics: Metrics = field(default_factory=dict)


@dataclass(frozen=True)
class EvaluateRes:
    """What a client sends back after evaluating: its loss, on how many examples, and metrics."""

    loss: float
    num_examples: int
    metrics: Metrics = field(default_factory=dict)


@dataclass(frozen=True)
class PhaseIns:
    """One step of a client-side protocol other than fit and evaluate (secure aggregation's).

    `protocol` names the handler on the client (`roost.client.protocols`), `phase` its step;
    `parameters` is the global model when the step trains (empty otherwise), `arrays` and `config`
    the protocol's own payload.
    """

    protocol: str
    phase: str
    parameters: Parameters = field(default_factory=list)
    arrays: Parameters = field(default_factory=list)
    config: Config = field(default_factory=dict)


@dataclass(frozen=True)
class PhaseRes:
    """A protocol step's answer: its payload arrays and scalar values (and any fit metrics)."""

    arrays: Parameters
    values: Metrics = field(default_factory=dict)


Instruction: TypeAlias = GetParametersIns | FitIns | EvaluateIns | PhaseIns
Result: TypeAlias = GetParametersRes | FitRes | EvaluateRes | PhaseRes


def payload_bytes(message: Instruction | Result | Failure) -> int:
    """The bytes of the arrays `message` carries: its model, and a protocol's own arrays (a
    compressed update's payload); 0 for one that carries none."""
    arrays = [
        *(getattr(message, "parameters", None) or []),
        *(getattr(message, "arrays", None) or []),
    ]
    return int(sum(np.asarray(array).nbytes for array in arrays))


CLIENT_FN_RAISED = "client_fn raised "
"""How the reason of a failure starts when building the client (`client_fn`) raised."""


@dataclass(frozen=True)
class Failure:
    """A client that did not deliver a usable result this round, and why (one line).

    `detail` is the traceback of the exception behind an "error" failure, when one was caught;
    it is shown once per distinct error, never part of the one-line `reason`.
    """

    client_id: ClientId
    reason: str
    kind: str = "error"  # "error" | "timeout" | "invalid" | "disconnected"
    detail: str = field(default="", compare=False, repr=False)

    def __str__(self) -> str:
        return f"client {self.client_id}: {self.kind}: {self.reason}"

    @classmethod
    def from_exception(
        cls, client_id: ClientId, error: BaseException, *, in_client_fn: bool = False
    ) -> Failure:
        """The failure for `error` caught while client `client_id` ran, with its traceback.

        `in_client_fn` says the client could not even be built, so the reason names `client_fn`
        rather than the method that was about to run.
        """
        reason = f"{type(error).__name__}: {error}"
        if in_client_fn:
            reason = CLIENT_FN_RAISED + reason
        detail = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        return cls(client_id, reason, "error", detail)


Outcome: TypeAlias = tuple[ClientId, Result | Failure]
