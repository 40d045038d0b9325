"""The message types of Flower's classic strategy API: `Parameters`, `FitIns`, `FitRes`, ….

A classic `flwr.server.strategy.Strategy` speaks these: `configure_fit` returns
`(ClientProxy, FitIns)` pairs and `aggregate_fit` receives `(ClientProxy, FitRes)` pairs. roost's
round loop turns them into its own instructions and results at the strategy's edge, after it has
validated every result. `Parameters` holds each array as NumPy's `.npy` bytes written with
`allow_pickle=False` (and read back the same way), so it never unpickles anything.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from roost.core.types import Scalar
from roost.errors import InvalidMessageError

NDArray = np.ndarray
NDArrays = list[np.ndarray]


@dataclass
class Parameters:
    """Serialized model parameters: one `.npy` byte string per array."""

    tensors: list[bytes] = field(default_factory=list)
    tensor_type: str = "numpy.ndarray"


class HeldParameters(Parameters):
    """`Parameters` made from arrays roost already holds: the `.npy` bytes are written only if
    someone reads `tensors`, and `parameters_to_ndarrays` hands back the arrays themselves, so a
    model passed through a strategy's Flower steps is not serialized for nothing."""

    def __init__(self, arrays: NDArrays) -> None:
        self._arrays: NDArrays | None = list(arrays)
        self._tensors: list[bytes] | None = None
        self.tensor_type = "numpy.ndarray"

    @property  # type: ignore[override]
    def tensors(self) -> list[bytes]:
        if self._tensors is None:
            self._tensors = [ndarray_to_bytes(array) for array in self._arrays or []]
        return self._tensors

    @tensors.setter
    def tensors(self, value: list[bytes]) -> None:
        # Someone wrote new bytes: they are the parameters now.
        self._tensors, self._arrays = list(value), None


def ndarray_to_bytes(array: np.ndarray) -> bytes:
    """One array as `.npy` bytes (no pickle)."""
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)
    return buffer.getvalue()


def bytes_to_ndarray(data: bytes) -> np.ndarray:
    """The array `ndarray_to_bytes` wrote; refuses anything that would need pickle."""
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as error:
        raise InvalidMessageError(f"not a NumPy array without objects: {error}") from error


def ndarrays_to_parameters(ndarrays: NDArrays) -> Parameters:
    """Wrap a list of arrays (e.g. `model.get_weights()`) as `Parameters`."""
    return Parameters(tensors=[ndarray_to_bytes(array) for array in ndarrays])


def parameters_to_ndarrays(parameters: Parameters) -> NDArrays:
    """The arrays inside `Parameters`, in order."""
    if isinstance(parameters, HeldParameters) and parameters._arrays is not None:
        return list(parameters._arrays)
    return [bytes_to_ndarray(tensor) for tensor in parameters.tensors]


class Code(Enum):
    """How a client's call ended (Flower's status codes)."""

    OK = 0
    GET_PROPERTIES_NOT_IMPLEMENTED = 1
    GET_PARAMETERS_NOT_IMPLEMENTED = 2
    FIT_NOT_IMPLEMENTED = 3
    EVALUATE_NOT_IMPLEMENTED = 4


@dataclass
class Status:
    """A `Code` and a message."""

    code: Code
    message: str


OK = Status(Code.OK, "Success")


@dataclass
class FitIns:
    """What one client is sent for training: the model and its config."""

    parameters: Parameters
    config: dict[str, Scalar]


@dataclass
class FitRes:
    """One client's training result, as the loop validated it."""

    status: Status
    parameters: Parameters
    num_examples: int
    metrics: dict[str, Scalar]


@dataclass
class EvaluateIns:
    """What one client is sent for evaluation: the model and its config."""

    parameters: Parameters
    config: dict[str, Scalar]


@dataclass
class EvaluateRes:
    """One client's evaluation result, as the loop validated it."""

    status: Status
    loss: float
    num_examples: int
    metrics: dict[str, Scalar]


__all__ = [
    "Code",
    "EvaluateIns",
    "EvaluateRes",
    "FitIns",
    "FitRes",
    "NDArray",
    "NDArrays",
    "Parameters",
    "Status",
    "bytes_to_ndarray",
    "ndarray_to_bytes",
    "ndarrays_to_parameters",
    "parameters_to_ndarrays",
]
