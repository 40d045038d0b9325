"""`flwr.common` names: Context, Metrics, Scalar, NDArrays, the Parameters helpers and the
classic strategy API's message types (`FitIns`, `FitRes`, `Status`, …, from
`roost.compat.flwr.legacy`)."""

from __future__ import annotations

import numpy as np

from roost.client.client import Context
from roost.compat.flwr.legacy import (
    Code,
    EvaluateIns,
    EvaluateRes,
    FitIns,
    FitRes,
    NDArray,
    NDArrays,
    Parameters,
    Status,
    bytes_to_ndarray,
    ndarray_to_bytes,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from roost.compat.flwr.records import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from roost.core.types import Config, Metrics, Scalar

Properties = dict[str, Scalar]


def as_ndarrays(parameters: Parameters | NDArrays | None) -> NDArrays | None:
    """Accept both `Parameters` and a plain list of arrays (roost's own form)."""
    if isinstance(parameters, Parameters):
        return parameters_to_ndarrays(parameters)
    return None if parameters is None else [np.asarray(array) for array in parameters]


__all__ = [
    "Array",
    "ArrayRecord",
    "Code",
    "Config",
    "ConfigRecord",
    "Context",
    "EvaluateIns",
    "EvaluateRes",
    "FitIns",
    "FitRes",
    "MetricRecord",
    "Metrics",
    "NDArray",
    "NDArrays",
    "Parameters",
    "Properties",
    "RecordDict",
    "Scalar",
    "Status",
    "bytes_to_ndarray",
    "ndarray_to_bytes",
    "ndarrays_to_parameters",
    "parameters_to_ndarrays",
]
