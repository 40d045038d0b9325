"""`Parameters` and its helpers as `flwr.common` names them (kept in `roost.compat.flwr.legacy`
beside the classic strategy API's messages), plus `Properties` and roost's `as_ndarrays`.

`Parameters` holds each array as NumPy's `.npy` bytes written with `allow_pickle=False` (read back
the same way), so it never unpickles anything.
"""

from __future__ import annotations

import numpy as np

from roost.compat.flwr.legacy import (
    NDArray,
    NDArrays,
    Parameters,
    bytes_to_ndarray,
    ndarray_to_bytes,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from roost.core.types import Scalar

Properties = dict[str, Scalar]

__all__ = [
    "NDArray",
    "NDArrays",
    "Parameters",
    "Properties",
    "as_ndarrays",
    "bytes_to_ndarray",
    "ndarray_to_bytes",
    "ndarrays_to_parameters",
    "parameters_to_ndarrays",
]


def as_ndarrays(parameters: Parameters | NDArrays | None) -> NDArrays | None:
    """Accept both `Parameters` and a plain list of arrays (roost's own form)."""
    if isinstance(parameters, Parameters):
        return parameters_to_ndarrays(parameters)
    return None if parameters is None else [np.asarray(array) for array in parameters]
