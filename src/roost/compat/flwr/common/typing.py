"""`flwr.common.typing`: the type aliases apps annotate with.

They are roost's own types under Flower's names: the same objects `flwr.common` exports, so an
annotation means what roost passes at run time.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from roost.compat.flwr.common.params import Parameters
from roost.compat.flwr.unsupported import missing_names
from roost.core.types import Config, Metrics, Scalar

NDArray = np.ndarray
NDArrays = list[np.ndarray]
Properties = dict[str, Scalar]
UserConfigValue = bool | float | int | str
"""One value of a run or node config (`[tool.flwr.app.config]` holds only these)."""
UserConfig = dict[str, UserConfigValue]
"""A run config or node config: `context.run_config`, `context.node_config`."""
MetricsAggregationFn = Callable[[list[tuple[int, Metrics]]], Metrics]
"""`[(num_examples, metrics), ...] -> metrics`, as a strategy's metrics aggregation takes it."""

__all__ = [
    "Config",
    "Metrics",
    "MetricsAggregationFn",
    "NDArray",
    "NDArrays",
    "Parameters",
    "Properties",
    "Scalar",
    "UserConfig",
    "UserConfigValue",
]

__getattr__ = missing_names("flwr.common.typing", __all__)
