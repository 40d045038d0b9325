"""Strategies by composition: selection, weighting, transforms, aggregators, server optimizers."""

from roost.strategy.aggregators import Accumulator, Aggregator, WeightedMean
from roost.strategy.optimizers import ServerOptimizer, ServerSGD
from roost.strategy.presets import FedAvg
from roost.strategy.strategy import (
    Strategy,
    UpdateTransform,
    sample_uniformly,
    weight_by_num_examples,
)

__all__ = [
    "Accumulator",
    "Aggregator",
    "FedAvg",
    "ServerOptimizer",
    "ServerSGD",
    "Strategy",
    "UpdateTransform",
    "WeightedMean",
    "sample_uniformly",
    "weight_by_num_examples",
]
