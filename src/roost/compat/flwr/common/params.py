"""`Parameters` and its helpers: serialized arrays as `flwr.common` names them.

`Parameters` here holds each array as NumPy's `.npy` bytes written with `allow_pickle=False` (read
back the same way), so it never unpickles anything.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np

from roost.core.types import Scalar
from roost.errors import InvalidMessageError

NDArray = np.ndarray
NDArrays = list[np.ndarray]
Properties = dict[str, Scalar]


@dataclass
class Parameters:
    """Serialized model parameters: one `.npy` byte string per array."""

    tensors: list[bytes] = field(default_factory=list)
    tensor_type: str = "numpy.ndarray"


def ndarray_to_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)
    return buffer.getvalue()


def bytes_to_ndarray(data: bytes) -> np.ndarray:
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as error:
        raise InvalidMessageError(f"not a NumPy array without objects: {error}") from error


def ndarrays_to_parameters(ndarrays: NDArrays) -> Parameters:
    """Wrap a list of arrays (e.g. `model.get_weights()`) as `Parameters`."""
    return Parameters(tensors=[ndarray_to_bytes(array) for array in ndarrays])


def parameters_to_ndarrays(parameters: Parameters) -> NDArrays:
    """The arrays inside `Parameters`, in order."""
    return [bytes_to_ndarray(tensor) for tensor in parameters.tensors]


def as_ndarrays(parameters: Parameters | NDArrays | None) -> NDArrays | None:
    """Accept both `Parameters` and a plain list of arrays (roost's own form)."""
    if isinstance(parameters, Parameters):
        return parameters_to_ndarrays(parameters)
    return None if parameters is None else [np.asarray(array) for array in parameters]
