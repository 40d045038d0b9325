"""Named strategies users know, each a thin preset of `Strategy`'s parts.

Every preset accepts all of `Strategy`'s knobs (fractions, minimums, `initial_parameters`,
`evaluate_fn`, config functions, metric aggregation functions, `accept_failures`) and any part it
does not define itself, so `FedAdam(aggregator=TrimmedMean(0.2), update_transforms=[ClipL2(1.0)])`
is trimmed mean + server Adam + clipping, with no new class. Passing the part a preset defines
(for example `server_optimizer` to `FedAdam`) is an error: use `Strategy(...)` for that.
"""

from __future__ import annotations

from typing import Any

from roost.core import config_keys
from roost.core.types import Config, Parameters
from roost.errors import ConfigurationError
from roost.privacy.preset import DPFedAvg
from roost.strategy.aggregators import (
    BulyanMean,
    CoordinateMedian,
    KrumMean,
    QFFLMean,
    TrimmedMean,
    WeightedMean,
)
from roost.strategy.base import FitAggregate, RoundContext
from roost.strategy.line_search import backtracking_fit_round
from roost.strategy.optimizers import ServerAdagrad, ServerAdam, ServerSGD, ServerYogi
from roost.strategy.strategy import Strategy
from roost.strategy.updates import negative_gradient
from roost.strategy.weighting import weight_by_metric, weight_by_num_examples


class _Preset(Strategy):
    """A `Strategy` with some parts fixed and, optionally, entries added to every fit config."""

    def __init__(
        self, parts: dict[str, Any], kwargs: dict[str, Any], fit_config: Config | None = None
    ) -> None:
        name = type(self).__name__
        for part in parts:
            if part in kwargs:
                raise ConfigurationError(
                    f"{name} sets {part} itself; build a roost.Strategy(...) to choose your own "
                    f"{part}, or pick another preset"
                )
        kwargs.setdefault("aggregator", WeightedMean())
        kwargs.setdefault("weight_fn", weight_by_num_examples)
        kwargs.setdefault("server_optimizer", ServerSGD())
        super().__init__(**{**kwargs, **parts})
        self.fit_config_defaults = dict(fit_config or {})


def _robust_minimums(kwargs: dict[str, Any], needed: int) -> dict[str, Any]:
    """Raise min_fit_clients / min_available_clients to what a robust aggregator needs."""
    for knob in ("min_fit_clients", "min_available_clients"):
        kwargs[knob] = max(kwargs.get(knob, 2), needed)
    return kwargs


class FedAvg(_Preset):
    """Federated Averaging (McMahan et al., 2017).

    The next global model is the mean of the clients' models weighted by their `num_examples`,
    computed as a running sum. Accepts every knob and part of `Strategy`.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__({}, kwargs)


class FedWeightedAvg(_Preset):
    """Federated weighted averaging: the mean weighted by data size *or* by data quality.

    Args:
        weight_metric: weight each client by this metric from its fit metrics (e.g. a data
            quality score); None keeps `weight_fn` (default: `num_examples`).
        times_num_examples: with `weight_metric`, weight by metric × num_examples instead.
        **kwargs: every `Strategy` knob; `weight_fn` may be any
            `(client_id, num_examples, metrics) -> weight` function.
    """

    def __init__(
        self, *, weight_metric: str | None = None, times_num_examples: bool = False, **kwargs: Any
    ) -> None:
        parts: dict[str, Any] = {}
        if weight_metric is not None:
            if "weight_fn" in kwargs:
                raise ConfigurationError("give FedWeightedAvg weight_metric or weight_fn, not both")
            parts["weight_fn"] = weight_by_metric(
                weight_metric, times_num_examples=times_num_examples
            )
        self.weight_metric = weight_metric
        super().__init__(parts, kwargs)


class FedAvgM(_Preset):
    """FedAvg with server momentum (Hsu et al., 2019): v ← μ·v + Δ, x ← x + η·v.

    Args:
        server_learning_rate: η (default 1.0).
        server_momentum: μ (default 0.0, which is FedAvg).
    """

    def __init__(
        self, *, server_learning_rate: float = 1.0, server_momentum: float = 0.0, **kwargs: Any
    ) -> None:
        self.server_learning_rate = server_learning_rate
        self.server_momentum = server_momentum
        optimizer = ServerSGD(learning_rate=server_learning_rate, momentum=server_momentum)
        super().__init__({"server_optimizer": optimizer}, kwargs)


class _FedOpt(_Preset):
    def __init__(self, optimizer: Any, eta: float, eta_l: float, kwargs: dict[str, Any]) -> None:
        if not eta_l > 0:
            raise ConfigurationError(f"eta_l must be > 0, got {eta_l}")
        self.eta = eta
        self.eta_l = eta_l
        super().__init__(
            {"server_optimizer": optimizer}, kwargs, {config_keys.LEARNING_RATE: float(eta_l)}
        )


class FedAdagrad(_FedOpt):
    """Adaptive federated optimization with Adagrad on the server (Reddi et al., 2020).

    Args:
        eta: server learning rate (default 1e-1).
        eta_l: client learning rate, sent to clients as `config["lr"]` unless
            `on_fit_config_fn` sends its own `"lr"` (default 1e-1).
        beta_1: momentum of the first moment (default 0.0).
        tau: adaptivity τ (default 1e-9).
    """

    def __init__(
        self,
        *,
        eta: float = 1e-1,
        eta_l: float = 1e-1,
        beta_1: float = 0.0,
        tau: float = 1e-9,
        **kwargs: Any,
    ) -> None:
        self.beta_1, self.tau = beta_1, tau
        super().__init__(ServerAdagrad(eta, beta_1=beta_1, tau=tau), eta, eta_l, kwargs)


class FedAdam(_FedOpt):
    """Adaptive federated optimization with Adam on the server (Reddi et al., 2020).

    Args:
        eta: server learning rate (default 1e-1).
        eta_l: client learning rate, sent to clients as `config["lr"]` unless
            `on_fit_config_fn` sends its own `"lr"` (default 1e-1).
        beta_1, beta_2: moment decay rates (defaults 0.9, 0.99).
        tau: adaptivity τ (default 1e-9).
    """

    def __init__(
        self,
        *,
        eta: float = 1e-1,
        eta_l: float = 1e-1,
        beta_1: float = 0.9,
        beta_2: float = 0.99,
        tau: float = 1e-9,
        **kwargs: Any,
    ) -> None:
        self.beta_1, self.beta_2, self.tau = beta_1, beta_2, tau
        optimizer = ServerAdam(eta, beta_1=beta_1, beta_2=beta_2, tau=tau)
        super().__init__(optimizer, eta, eta_l, kwargs)


class FedYogi(_FedOpt):
    """Adaptive federated optimization with Yogi on the server (Reddi et al., 2020).

    Args:
        eta: server learning rate (default 1e-2).
        eta_l: client learning rate, sent to clients as `config["lr"]` unless
            `on_fit_config_fn` sends its own `"lr"` (default 0.0316).
        beta_1, beta_2: moment decay rates (defaults 0.9, 0.99).
        tau: adaptivity τ (default 1e-3).
    """

    def __init__(
        self,
        *,
        eta: float = 1e-2,
        eta_l: float = 0.0316,
        beta_1: float = 0.9,
        beta_2: float = 0.99,
        tau: float = 1e-3,
        **kwargs: Any,
    ) -> None:
        self.beta_1, self.beta_2, self.tau = beta_1, beta_2, tau
        optimizer = ServerYogi(eta, beta_1=beta_1, beta_2=beta_2, tau=tau)
        super().__init__(optimizer, eta, eta_l, kwargs)


class FedProx(_Preset):
    """FedProx (Li et al., 2020): FedAvg whose clients add (μ/2)·‖w − w_global‖² to their loss.

    The server sends μ in every fit config as `config["proximal_mu"]`; the client adds the
    proximal term (the bundled NumPy demo client does).

    Args:
        proximal_mu: μ >= 0 (required, as in Flower; 0 is FedAvg).
    """

    def __init__(self, *, proximal_mu: float, **kwargs: Any) -> None:
        if not proximal_mu >= 0:
            raise ConfigurationError(f"proximal_mu must be >= 0, got {proximal_mu}")
        self.proximal_mu = float(proximal_mu)
        super().__init__({}, kwargs, {config_keys.PROXIMAL_MU: self.proximal_mu})


class FedSGD(_Preset):
    """Federated SGD (McMahan et al., 2017): clients send gradients, the server takes the step.

    Every fit config carries `config["return_gradients"] = True`; clients answer `fit` with
    their gradient at the global model (one step or their full batch) in place of parameters.
    The server averages the gradients weighted by `num_examples` (the full-batch gradient of
    all clients' data when each sends its full-batch gradient) and steps
    x ← x − learning_rate · mean gradient.

    With `line_search_probes` > 0 each round has more phases: the server backtracks the step
    (1, ½, ¼, … of it) until the cohort's training loss decreases enough (Armijo's rule), asking
    the same clients for their loss at each probe; see `roost.strategy.line_search`.

    Args:
        learning_rate: the server's step size (default 0.1).
        line_search_probes: the most probes per round (0, the default: no line search).
        loss_metric: the fit metric holding a client's training loss at the model it received
            (default "train_loss"); used by the line search only.
    """

    def __init__(
        self,
        *,
        learning_rate: float = 0.1,
        line_search_probes: int = 0,
        loss_metric: str = "train_loss",
        **kwargs: Any,
    ) -> None:
        if not isinstance(line_search_probes, int) or line_search_probes < 0:
            raise ConfigurationError(
                f"line_search_probes must be an int >= 0, got {line_search_probes!r}"
            )
        self.learning_rate = learning_rate
        self.line_search_probes = line_search_probes
        self.loss_metric = loss_metric
        parts = {
            "server_optimizer": ServerSGD(learning_rate=learning_rate),
            "update_fn": negative_gradient,
        }
        super().__init__(parts, kwargs, {config_keys.RETURN_GRADIENTS: True})

    def fit_round(
        self, context: RoundContext, parameters: Parameters, state: dict[str, Any]
    ) -> FitAggregate:
        """One fit phase, then (with `line_search_probes`) the line search's probe phases."""
        if not self.line_search_probes:
            return super().fit_round(context, parameters, state)
        state = {**state, "transforms": self.transform.start_round(state["transforms"])}
        return backtracking_fit_round(
            self,
            context,
            parameters,
            state,
            learning_rate=self.learning_rate,
            max_probes=self.line_search_probes,
            loss_metric=self.loss_metric,
        )


class FedMedian(_Preset):
    """The coordinate-wise median of the client models (Yin et al., 2018)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__({"aggregator": CoordinateMedian()}, kwargs)


class FedTrimmedAvg(_Preset):
    """The coordinate-wise trimmed mean of the client models (Yin et al., 2018).

    Args:
        beta: share cut from each end of every coordinate, in [0, 0.5) (default 0.2).
    """

    def __init__(self, *, beta: float = 0.2, **kwargs: Any) -> None:
        self.beta = beta
        super().__init__({"aggregator": TrimmedMean(beta)}, kwargs)


class Krum(_Preset):
    """Krum (Blanchard et al., 2017): keep the update closest to its n − f − 2 neighbours.

    Args:
        num_malicious_clients: f, the attackers to tolerate (default 0); needs n ≥ 2f + 3.
        num_clients_to_keep: 0 (default) is Krum; m > 0 averages the m best (Multi-Krum).

    `min_fit_clients` and `min_available_clients` are raised to at least 2f + 3.
    """

    def __init__(
        self, *, num_malicious_clients: int = 0, num_clients_to_keep: int = 0, **kwargs: Any
    ) -> None:
        if not isinstance(num_clients_to_keep, int) or num_clients_to_keep < 0:
            raise ConfigurationError(
                f"num_clients_to_keep must be an int >= 0, got {num_clients_to_keep!r}"
            )
        self.num_malicious_clients = num_malicious_clients
        self.num_clients_to_keep = num_clients_to_keep
        aggregator = KrumMean(num_malicious_clients, self._selected(num_clients_to_keep))
        kwargs = _robust_minimums(kwargs, aggregator.min_updates)
        super().__init__({"aggregator": aggregator}, kwargs)

    @staticmethod
    def _selected(num_clients_to_keep: int) -> int | None:
        """How many of the best-scored updates to average (None: n − f)."""
        return max(1, num_clients_to_keep)


class MultiKrum(Krum):
    """Multi-Krum (Blanchard et al., 2017): average the m updates with the best Krum scores.

    Args:
        num_malicious_clients: f (default 0); needs n ≥ 2f + 3.
        num_clients_to_keep: m; 0 (default) keeps n − f.

    `min_fit_clients` and `min_available_clients` are raised to at least 2f + 3.
    """

    @staticmethod
    def _selected(num_clients_to_keep: int) -> int | None:
        return num_clients_to_keep or None


class Bulyan(_Preset):
    """Bulyan (El Mhamdi et al., 2018): Krum selection, then a coordinate-wise trimmed mean.

    Args:
        num_malicious_clients: f (default 0); needs n ≥ 4f + 3 updates, refused otherwise.

    `min_fit_clients` and `min_available_clients` are raised to at least 4f + 3.
    """

    def __init__(self, *, num_malicious_clients: int = 0, **kwargs: Any) -> None:
        self.num_malicious_clients = num_malicious_clients
        aggregator = BulyanMean(num_malicious_clients)
        kwargs = _robust_minimums(kwargs, aggregator.min_updates)
        super().__init__({"aggregator": aggregator}, kwargs)


class QFedAvg(_Preset):
    """q-FedAvg (Li et al., 2020, "Fair Resource Allocation in Federated Learning").

    Clients with a higher loss F_k get more say: updates are reweighted by F_k^q and the step is
    normalised by an estimate of the local Lipschitz constant L = 1 / qffl_learning_rate.

    Args:
        q_param: q >= 0 (default 0.2); q = 0 is the uniform mean of the client models.
        qffl_learning_rate: the clients' learning rate (default 0.1).
        loss_metric: the fit metric holding each client's loss (default "train_loss"). The paper
            uses the loss of the global model on the client's data; report that under this key
            for the exact algorithm. A client that does not report it is left out of the round.
    """

    def __init__(
        self,
        *,
        q_param: float = 0.2,
        qffl_learning_rate: float = 0.1,
        loss_metric: str = "train_loss",
        **kwargs: Any,
    ) -> None:
        self.q_param = q_param
        self.qffl_learning_rate = qffl_learning_rate
        self.loss_metric = loss_metric
        parts = {
            "aggregator": QFFLMean(q_param, qffl_learning_rate),
            "weight_fn": weight_by_metric(loss_metric),
        }
        super().__init__(parts, kwargs)


PRESETS: dict[str, type[Strategy]] = {
    cls.__name__.lower(): cls
    for cls in (
        FedAvg,
        FedWeightedAvg,
        FedAvgM,
        FedAdagrad,
        FedAdam,
        FedYogi,
        FedProx,
        FedSGD,
        FedMedian,
        FedTrimmedAvg,
        Krum,
        MultiKrum,
        Bulyan,
        QFedAvg,
        DPFedAvg,
    )
}
"""Every named preset by lower-case name, as `roost simulate --strategy NAME` knows them."""

STRATEGY_KNOBS = (
    "fraction_fit",
    "fraction_evaluate",
    "min_fit_clients",
    "min_evaluate_clients",
    "min_available_clients",
    "initial_parameters",
    "evaluate_fn",
    "on_fit_config_fn",
    "on_evaluate_config_fn",
    "fit_metrics_aggregation_fn",
    "evaluate_metrics_aggregation_fn",
    "accept_failures",
)
"""The FedAvg knobs every preset accepts."""


def preset(name: str, *, like: Strategy | None = None, **options: Any) -> Strategy:
    """Build the preset called `name` (any case, e.g. "FedAdam" or "fedadam").

    Args:
        name: a key of `PRESETS`.
        like: copy the FedAvg knobs (`STRATEGY_KNOBS`) from this strategy, e.g. an app's FedAvg.
        **options: the preset's own parameters and any `Strategy` knob; they win over `like`.
    """
    key = name.lower().replace("-", "").replace("_", "")
    if key not in PRESETS:
        raise ConfigurationError(
            f"unknown strategy {name!r}; choose one of: {', '.join(sorted(PRESETS))}"
        )
    kwargs = {knob: getattr(like, knob) for knob in STRATEGY_KNOBS} if like is not None else {}
    kwargs.update(options)
    return PRESETS[key](**kwargs)
