"""Strategies by composition: selection, weighting, transforms, aggregators, server optimizers."""

from roost.strategy import presets
from roost.strategy.aggregators import (
    BulyanMean,
    CoordinateMedian,
    KrumMean,
    Mean,
    NotEnoughUpdatesError,
    QFFLMean,
    TrimmedMean,
    WeightedMean,
)
from roost.strategy.base import (
    Aggregator,
    FitAggregate,
    PartialFit,
    RoundContext,
    Sampler,
    ServerOptimizer,
    UpdateTransform,
    Weighting,
    chain,
    sample_uniformly,
)
from roost.strategy.buffered import FedAsync, FedBuff
from roost.strategy.optimizers import (
    ServerAdagrad,
    ServerAdam,
    ServerSGD,
    ServerYogi,
    negative_gradient,
    parameter_delta,
)
from roost.strategy.presets import *  # noqa: F403 (the named strategies: presets.__all__)
from roost.strategy.presets import PRESETS
from roost.strategy.secure import SecureAggregation
from roost.strategy.staleness import (
    ConstantStaleness,
    HingeStaleness,
    PolynomialStaleness,
    Staleness,
)
from roost.strategy.strategy import Strategy
from roost.strategy.transforms import AdaptiveClipL2, ClipL2
from roost.strategy.weighting import (
    uniform_weight,
    weight_by_metric,
    weight_by_num_examples,
)

__all__ = [
    "PRESETS",
    "AdaptiveClipL2",
    "Aggregator",
    "BulyanMean",
    "ClipL2",
    "ConstantStaleness",
    "CoordinateMedian",
    "FedAsync",
    "FedBuff",
    "FitAggregate",
    "HingeStaleness",
    "KrumMean",
    "Mean",
    "NotEnoughUpdatesError",
    "PartialFit",
    "PolynomialStaleness",
    "QFFLMean",
    "RoundContext",
    "Sampler",
    "SecureAggregation",
    "ServerAdagrad",
    "ServerAdam",
    "ServerOptimizer",
    "ServerSGD",
    "ServerYogi",
    "Staleness",
    "Strategy",
    "TrimmedMean",
    "UpdateTransform",
    "WeightedMean",
    "Weighting",
    "chain",
    "negative_gradient",
    "parameter_delta",
    "sample_uniformly",
    "uniform_weight",
    "weight_by_metric",
    "weight_by_num_examples",
]
__all__ += presets.__all__


def __getattr__(name: str) -> object:
    # Presets a layer above registers (roost.privacy's DPFedAvg) by class name, so
    # `roost.strategy.DPFedAvg` keeps working without this package importing that layer.
    for cls in PRESETS.values():
        if cls.__name__ == name:
            return cls
    raise AttributeError(f"module 'roost.strategy' has no attribute {name!r}")
