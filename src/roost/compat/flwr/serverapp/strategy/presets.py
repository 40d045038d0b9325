"""Flower's named message-based strategies, each on the roost preset of the same name.

Every class takes `FedAvg`'s arguments (`fraction_train`, `min_train_nodes`, `weighted_by_key`, …)
as keywords, plus its own, with Flower's names and defaults.
"""

from __future__ import annotations

from typing import Any, ClassVar

from roost.compat.flwr.serverapp.strategy.base import FedAvg
from roost.strategy import presets


class FedAvgM(FedAvg):
    """FedAvg with server momentum: `server_learning_rate`, `server_momentum`."""

    preset = presets.FedAvgM

    def __init__(
        self, *, server_learning_rate: float = 1.0, server_momentum: float = 0.0, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.server_learning_rate = server_learning_rate
        self.server_momentum = server_momentum

    def preset_options(self) -> dict[str, Any]:
        return {
            "server_learning_rate": self.server_learning_rate,
            "server_momentum": self.server_momentum,
        }


class FedAdagrad(FedAvg):
    """Adagrad on the server: `eta`, `eta_l` (kept, not sent), `tau`."""

    preset = presets.FedAdagrad

    def __init__(
        self, *, eta: float = 1e-1, eta_l: float = 1e-1, tau: float = 1e-3, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.eta, self.eta_l, self.tau = eta, eta_l, tau

    def preset_options(self) -> dict[str, Any]:
        return {"eta": self.eta, "eta_l": self.eta_l, "tau": self.tau}


class FedAdam(FedAvg):
    """Adam on the server: `eta`, `eta_l` (kept, not sent), `beta_1`, `beta_2`, `tau`."""

    preset = presets.FedAdam
    defaults: ClassVar[dict[str, float]] = {
        "eta": 1e-1,
        "eta_l": 1e-1,
        "beta_1": 0.9,
        "beta_2": 0.99,
        "tau": 1e-3,
    }

    def __init__(
        self,
        *,
        eta: float | None = None,
        eta_l: float | None = None,
        beta_1: float | None = None,
        beta_2: float | None = None,
        tau: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        given = {"eta": eta, "eta_l": eta_l, "beta_1": beta_1, "beta_2": beta_2, "tau": tau}
        self.options = {k: self.defaults[k] if v is None else v for k, v in given.items()}
        self.eta, self.eta_l = self.options["eta"], self.options["eta_l"]
        self.beta_1, self.beta_2, self.tau = (self.options[k] for k in ("beta_1", "beta_2", "tau"))

    def preset_options(self) -> dict[str, Any]:
        return dict(self.options)


class FedYogi(FedAdam):
    """Yogi on the server: `eta`, `eta_l` (kept, not sent), `beta_1`, `beta_2`, `tau`."""

    preset = presets.FedYogi
    defaults: ClassVar[dict[str, float]] = {
        "eta": 1e-2,
        "eta_l": 0.0316,
        "beta_1": 0.9,
        "beta_2": 0.99,
        "tau": 1e-3,
    }


class FedProx(FedAvg):
    """FedAvg that sends `proximal-mu` in every train config for the nodes' proximal term."""

    preset = presets.FedProx

    def __init__(self, *, proximal_mu: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.proximal_mu = float(proximal_mu)

    def preset_options(self) -> dict[str, Any]:
        return {"proximal_mu": self.proximal_mu}

    def train_extras(self) -> dict[str, Any]:
        return {"proximal-mu": self.proximal_mu}


class FedMedian(FedAvg):
    """The coordinate-wise median of the nodes' arrays."""

    preset = presets.FedMedian


class FedTrimmedAvg(FedAvg):
    """The coordinate-wise trimmed mean: `beta` cut from each end."""

    preset = presets.FedTrimmedAvg

    def __init__(self, *, beta: float = 0.2, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.beta = beta

    def preset_options(self) -> dict[str, Any]:
        return {"beta": self.beta}


class MultiKrum(FedAvg):
    """Multi-Krum: average the `num_nodes_to_select` best-scored arrays, tolerating
    `num_malicious_nodes`."""

    preset = presets.MultiKrum

    def __init__(
        self, *, num_malicious_nodes: int = 0, num_nodes_to_select: int = 1, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.num_malicious_nodes = num_malicious_nodes
        self.num_nodes_to_select = num_nodes_to_select

    def preset_options(self) -> dict[str, Any]:
        return {
            "num_malicious_clients": self.num_malicious_nodes,
            "num_clients_to_keep": self.num_nodes_to_select,
        }


class Krum(FedAvg):
    """Krum: keep the one array closest to its neighbours, tolerating `num_malicious_nodes`."""

    preset = presets.Krum

    def __init__(self, *, num_malicious_nodes: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_malicious_nodes = num_malicious_nodes

    def preset_options(self) -> dict[str, Any]:
        return {"num_malicious_clients": self.num_malicious_nodes}


class Bulyan(Krum):
    """Bulyan: Krum selection, then a coordinate-wise trimmed mean."""

    preset = presets.Bulyan


class QFedAvg(FedAvg):
    """q-FedAvg: nodes with a higher `train_loss_key` loss weigh more (fairness `q`)."""

    preset = presets.QFedAvg
    weights_by_key = False  # q-FedAvg weighs by the loss

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

    def preset_options(self) -> dict[str, Any]:
        return {
            "q_param": self.q,
            "qffl_learning_rate": self.client_learning_rate,
            "loss_metric": self.train_loss_key,
        }
