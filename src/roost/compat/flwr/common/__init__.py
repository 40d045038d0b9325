"""`flwr.common` names: Context, Message, Metrics, Scalar, NDArrays, the Parameters helpers, `log`,
and the classic strategy API's messages (`FitIns`, `FitRes`, `Status`, …).

Its submodules `flwr.common.logger`, `.config` and `.typing` are here too.
"""

from __future__ import annotations

from roost.client.client import Context
from roost.compat.flwr.common import config, logger, typing
from roost.compat.flwr.common.logger import log
from roost.compat.flwr.common.params import (
    NDArray,
    NDArrays,
    Parameters,
    Properties,
    as_ndarrays,  # noqa: F401  (roost's own helper, used by flwr.server.strategy)
    bytes_to_ndarray,
    ndarray_to_bytes,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from roost.compat.flwr.legacy import Code, EvaluateIns, EvaluateRes, FitIns, FitRes, Status
from roost.compat.flwr.message import Error, Message, MessageType, Metadata
from roost.compat.flwr.records import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from roost.compat.flwr.unsupported import missing_names
from roost.core.types import Config, Metrics, Scalar

__all__ = [
    "Array",
    "ArrayRecord",
    "Code",
    "Config",
    "ConfigRecord",
    "Context",
    "Error",
    "EvaluateIns",
    "EvaluateRes",
    "FitIns",
    "FitRes",
    "Message",
    "MessageType",
    "Metadata",
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
    "config",
    "log",
    "logger",
    "ndarray_to_bytes",
    "ndarrays_to_parameters",
    "parameters_to_ndarrays",
    "typing",
]

__getattr__ = missing_names("flwr.common", __all__)
