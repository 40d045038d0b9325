"""Flower's named message-based strategies, each on the roost preset of the same name.

Every class takes `FedAvg`'s arguments (`fraction_train`, `min_train_nodes`, `weighted_by_key`, …)
plus its own, with Flower's names and defaults: its fields, which `FedAvg.preset_options` hands to
the roost preset (renamed by `roost_names` where roost's name differs).
"""

from __future__ import annotations

from typing import Any, ClassVar

from roost.compat.flwr.serverapp.strategy.base import FedAvg
from roost.strategy import presets


class FedAvgM(FedAvg):
    """FedAvg with server momentum: `server_learning_rate`, `server_momentum`."""

    preset = presets.FedAvgM
    server_learning_rate: float = 1.0
    server_momentum: float = 0.0


class FedAdagrad(FedAvg):
    """Adagrad on the server: `eta`, `eta_l` (kept, not sent), `tau`."""

    preset = presets.FedAdagrad
    eta: float = 1e-1
    eta_l: float = 1e-1
    tau: float = 1e-3

    def preset_options(self) -> dict[str, Any]:
        # Flower's arithmetic (v from 0, its Adam's bias correction), not roost's default.
        return {**super().preset_options(), "convention": "flower"}


class FedAdam(FedAvg):
    """Adam on the server: `eta`, `eta_l` (kept, not sent), `beta_1`, `beta_2`, `tau`."""

    preset = presets.FedAdam
    eta: float = 1e-1
    eta_l: float = 1e-1
    beta_1: float = 0.9
    beta_2: float = 0.99
    tau: float = 1e-3

    def preset_options(self) -> dict[str, Any]:
        return {**super().preset_options(), "convention": "flower"}


class FedYogi(FedAdam):
    """Yogi on the server: `eta`, `eta_l` (kept, not sent), `beta_1`, `beta_2`, `tau`."""

    preset = presets.FedYogi
    # Flower's Yogi defaults where they differ from Adam's
    eta: float = 1e-2
    eta_l: float = 0.0316


class FedProx(FedAvg):
    """FedAvg that sends `proximal-mu` in every train config for the nodes' proximal term."""

    preset = presets.FedProx
    proximal_mu: float = 0.0

    def __post_init__(self) -> None:
        self.proximal_mu = float(self.proximal_mu)

    def train_extras(self) -> dict[str, Any]:
        return {"proximal-mu": self.proximal_mu}


class FedMedian(FedAvg):
    """The coordinate-wise median of the nodes' arrays."""

    preset = presets.FedMedian


class FedTrimmedAvg(FedAvg):
    """The coordinate-wise trimmed mean: `beta` cut from each end."""

    preset = presets.FedTrimmedAvg
    beta: float = 0.2


class MultiKrum(FedAvg):
    """Multi-Krum: average the `num_nodes_to_select` best-scored arrays, tolerating
    `num_malicious_nodes`."""

    preset = presets.MultiKrum
    roost_names: ClassVar[dict[str, str]] = {
        "num_malicious_nodes": "num_malicious_clients",
        "num_nodes_to_select": "num_clients_to_keep",
    }
    num_malicious_nodes: int = 0
    num_nodes_to_select: int = 1


class Krum(FedAvg):
    """Krum: keep the one array closest to its neighbours, tolerating `num_malicious_nodes`."""

    preset = presets.Krum
    roost_names: ClassVar[dict[str, str]] = {"num_malicious_nodes": "num_malicious_clients"}
    num_malicious_nodes: int = 0


class Bulyan(Krum):
    """Bulyan: Krum selection, then a coordinate-wise trimmed mean."""

    preset = presets.Bulyan


class QFedAvg(FedAvg):
    """q-FedAvg: nodes with a higher `train_loss_key` loss weigh more (fairness `q`)."""

    preset = presets.QFedAvg
    weights_by_key = False  # q-FedAvg weighs by the loss
    roost_names: ClassVar[dict[str, str]] = {
        "client_learning_rate": "qffl_learning_rate",
        "q": "q_param",
        "train_loss_key": "loss_metric",
    }
    client_learning_rate: float
    q: float = 0.1
    train_loss_key: str = "train_loss"

    # Flower takes client_learning_rate by position, before FedAvg's arguments.
    def __init__(
        self,
        client_learning_rate: float,
        q: float = 0.1,
        train_loss_key: str = "train_loss",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.client_learning_rate = client_learning_rate
        self.q = q
        self.train_loss_key = train_loss_key
