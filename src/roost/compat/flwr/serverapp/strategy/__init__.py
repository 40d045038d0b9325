"""`flwr.serverapp.strategy`: Flower's message-based strategies on roost's presets and loop.

strategy = FedAvg(fraction_train=0.5)
result = strategy.start(
    grid=grid,
    initial_arrays=ArrayRecord(model.state_dict()),
    num_rounds=3,
    train_config=ConfigRecord({"lr": 0.01}),
)
"""

from __future__ import annotations

from roost.compat.flwr.serverapp.strategy.base import FedAvg, Strategy
from roost.compat.flwr.serverapp.strategy.fedxgb import FedXgbBagging, FedXgbCyclic
from roost.compat.flwr.serverapp.strategy.presets import (
    Bulyan,
    FedAdagrad,
    FedAdam,
    FedAvgM,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    FedYogi,
    Krum,
    MultiKrum,
    QFedAvg,
)
from roost.compat.flwr.serverapp.strategy.privacy import (
    DifferentialPrivacyClientSideFixedClipping,
    DifferentialPrivacyServerSideFixedClipping,
)
from roost.compat.flwr.serverapp.strategy.result import Result
from roost.compat.flwr.unsupported import missing_names

__all__ = [
    # the interface, FedAvg and the result first; then the presets built on FedAvg
    "Strategy",
    "FedAvg",
    "Result",
    "Bulyan",
    "FedAdagrad",
    "FedAdam",
    "FedAvgM",
    "FedMedian",
    "FedProx",
    "FedTrimmedAvg",
    "FedYogi",
    "Krum",
    "MultiKrum",
    "QFedAvg",
    # XGBoost tree ensembles, on a loop of their own (serialized models, not weighted means)
    "FedXgbBagging",
    "FedXgbCyclic",
    # wrappers that add central differential privacy to one of the above
    "DifferentialPrivacyClientSideFixedClipping",
    "DifferentialPrivacyServerSideFixedClipping",
]

__getattr__ = missing_names("flwr.serverapp.strategy", __all__)
