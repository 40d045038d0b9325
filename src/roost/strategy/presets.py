"""Named strategies users know, each a thin preset of `Strategy`'s parts.

Each preset declares its own parameters once, as `Option` records in its `options`
(`roost.strategy.options`); its signature, docstring "Args", the command line's `--strategy`
flags and the Flower-compatible classes are derived from them. Every preset accepts all of
`Strategy`'s knobs (fractions, minimums, `initial_parameters`, `evaluate_fn`, config functions,
metric aggregation functions, `accept_failures`) and any part it does not define itself, so
`FedAdam(aggregator=TrimmedMean(0.2), update_transforms=[ClipL2(1.0)])` is trimmed mean + server
Adam + clipping, with no new class. Passing the part a preset defines
(for example `server_optimizer` to `FedAdam`) is an error: use `Strategy(...)` for that.
"""

from __future__ import annotations

from typing import Any, ClassVar

from roost.core import config_keys
from roost.core.types import Config, Parameters
from roost.errors import ConfigurationError
from roost.strategy.aggregators import (
    BulyanMean,
    CoordinateMedian,
    KrumMean,
    QFFLMean,
    TrimmedMean,
)
from roost.strategy.base import FitAggregate, RoundContext, ServerOptimizer
from roost.strategy.line_search import backtracking_fit_round
from roost.strategy.optimizers import (
    ServerAdagrad,
    ServerAdam,
    ServerSGD,
    ServerYogi,
    negative_gradient,
)
from roost.strategy.options import PRESETS as PRESETS  # `roost.strategy.presets.PRESETS` too
from roost.strategy.options import NamedStrategy, Option, register_preset
from roost.strategy.options import preset as preset
from roost.strategy.weighting import weight_by_metric

__all__ = [
    "Bulyan",
    "FedAdagrad",
    "FedAdam",
    "FedAvg",
    "FedAvgM",
    "FedMedian",
    "FedProx",
    "FedSGD",
    "FedTrimmedAvg",
    "FedWeightedAvg",
    "FedYogi",
    "Krum",
    "MultiKrum",
    "QFedAvg",
]
"""The named strategies defined here: `roost` and `roost.strategy` re-export them (and those
registered from above, `register_preset`)."""


def _robust_minimums(knobs: dict[str, Any], needed: int) -> None:
    """Raise min_fit_clients / min_available_clients to what a robust aggregator needs."""
    for knob in ("min_fit_clients", "min_available_clients"):
        knobs[knob] = max(knobs.get(knob, 2), needed)


class FedAvg(NamedStrategy):
    """Federated Averaging (McMahan et al., 2017).

    The next global model is the mean of the clients' models weighted by their `num_examples`,
    computed as a running sum. Accepts every knob and part of `Strategy`.
    """


class FedWeightedAvg(NamedStrategy):
    """Federated weighted averaging: the mean weighted by data size *or* by data quality.

    Without `weight_metric`, `weight_fn` may be any `(client_id, num_examples, metrics) -> weight`
    function (default: `num_examples`).
    """

    options = (
        Option(
            "weight_metric",
            str,
            None,
            "weight each client by this fit metric (e.g. a data quality score)",
            flag="--weight-metric",
        ),
        Option("times_num_examples", bool, False, "with weight_metric: metric × num_examples"),
    )

    def preset_parts(self, knobs: dict[str, Any]) -> dict[str, Any]:
        if self.weight_metric is None:
            return {}
        if "weight_fn" in knobs:
            raise ConfigurationError("give FedWeightedAvg weight_metric or weight_fn, not both")
        metric = weight_by_metric(self.weight_metric, times_num_examples=self.times_num_examples)
        return {"weight_fn": metric}


_SERVER_LR = "server learning rate η"


class FedAvgM(NamedStrategy):
    """FedAvg with server momentum (Hsu et al., 2019): v ← μ·v + Δ, x ← x + η·v."""

    options = (
        Option("server_learning_rate", float, 1.0, _SERVER_LR, flag="--server-lr"),
        Option(
            "server_momentum",
            float,
            0.0,
            "server momentum μ (0 is FedAvg)",
            flag="--server-momentum",
            at_least=0,
        ),
    )

    def preset_parts(self, knobs: dict[str, Any]) -> dict[str, Any]:
        optimizer = ServerSGD(
            learning_rate=self.server_learning_rate, momentum=self.server_momentum
        )
        return {"server_optimizer": optimizer}


def _fedopt_options(
    eta: float, eta_l: float, beta_1: float, beta_2: float | None, tau: float
) -> tuple[Option, ...]:
    """The options of the adaptive presets (Reddi et al., 2020), with their defaults."""
    moments = [Option("beta_1", float, beta_1, "first-moment decay β₁", flag="--beta1", at_least=0)]
    if beta_2 is not None:
        moments.append(
            Option("beta_2", float, beta_2, "second-moment decay β₂", flag="--beta2", at_least=0)
        )
    return (
        Option("eta", float, eta, _SERVER_LR, flag="--server-lr"),
        Option(
            "eta_l",
            float,
            eta_l,
            "client learning rate, sent to clients as config['lr'] unless on_fit_config_fn "
            "sends its own",
            above=0,
            mirrors="learning_rate",
        ),
        *moments,
        Option("tau", float, tau, "adaptivity τ", flag="--tau"),
        Option(
            "convention",
            str,
            "reddi",
            "'reddi': v starts at τ², no bias correction (Reddi et al., 2020); 'flower': "
            "Flower's arithmetic (v starts at 0; FedAdam's step bias-corrected by the round)",
        ),
    )


class _FedOpt(NamedStrategy):
    """An adaptive preset: its server optimizer takes η and the options after `eta_l`."""

    optimizer: ClassVar[type[ServerOptimizer]]

    def preset_parts(self, knobs: dict[str, Any]) -> dict[str, Any]:
        settings = self.option_values()
        eta = settings.pop("eta")
        del settings["eta_l"]
        return {"server_optimizer": self.optimizer(eta, **settings)}

    def preset_fit_config(self) -> Config:
        return {config_keys.LEARNING_RATE: self.eta_l}


class FedAdagrad(_FedOpt):
    """Adaptive federated optimization with Adagrad on the server (Reddi et al., 2020)."""

    options = _fedopt_options(eta=1e-1, eta_l=1e-1, beta_1=0.0, beta_2=None, tau=1e-9)
    optimizer = ServerAdagrad


class FedAdam(_FedOpt):
    """Adaptive federated optimization with Adam on the server (Reddi et al., 2020)."""

    options = _fedopt_options(eta=1e-1, eta_l=1e-1, beta_1=0.9, beta_2=0.99, tau=1e-9)
    optimizer = ServerAdam


class FedYogi(_FedOpt):
    """Adaptive federated optimization with Yogi on the server (Reddi et al., 2020)."""

    options = _fedopt_options(eta=1e-2, eta_l=0.0316, beta_1=0.9, beta_2=0.99, tau=1e-3)
    optimizer = ServerYogi


class FedProx(NamedStrategy):
    """FedProx (Li et al., 2020): FedAvg whose clients add (μ/2)·‖w − w_global‖² to their loss.

    The server sends μ in every fit config as `config["proximal_mu"]`; the client adds the
    proximal term (the bundled NumPy demo client does). μ is required, as in Flower.
    """

    options = (
        Option(
            "proximal_mu",
            float,
            help="proximal term μ >= 0, e.g. 0.1 (0 is FedAvg)",
            flag="--proximal-mu",
            at_least=0,
        ),
    )

    def preset_fit_config(self) -> Config:
        return {config_keys.PROXIMAL_MU: self.proximal_mu}


class FedSGD(NamedStrategy):
    """Federated SGD (McMahan et al., 2017): clients send gradients, the server takes the step.

    Every fit config carries `config["return_gradients"] = True`; clients answer `fit` with
    their gradient at the global model (one step or their full batch) in place of parameters.
    The server averages the gradients weighted by `num_examples` (the full-batch gradient of
    all clients' data when each sends its full-batch gradient) and steps
    x ← x − learning_rate · mean gradient.

    With `line_search_probes` > 0 each round has more phases: the server backtracks the step
    (1, ½, ¼, … of it) until the cohort's training loss decreases enough (Armijo's rule), asking
    the same clients for their loss at each probe; see `roost.strategy.line_search`.
    """

    options = (
        Option("learning_rate", float, 0.1, "the server's step size", flag="--server-lr"),
        Option("line_search_probes", int, 0, "the most probes per round (0: none)", at_least=0),
        Option(
            "loss_metric",
            str,
            "train_loss",
            "the fit metric holding a client's training loss at the model it received "
            "(the line search reads it)",
        ),
    )

    def preset_parts(self, knobs: dict[str, Any]) -> dict[str, Any]:
        return {
            "server_optimizer": ServerSGD(learning_rate=self.learning_rate),
            "update_fn": negative_gradient,
        }

    def preset_fit_config(self) -> Config:
        return {config_keys.RETURN_GRADIENTS: True}

    def fit_round(
        self, context: RoundContext, parameters: Parameters, state: dict[str, Any]
    ) -> FitAggregate:
        """One fit phase, then (with `line_search_probes`) the line search's probe phases."""
        if not self.line_search_probes:
            return super().fit_round(context, parameters, state)
        state = {**state, "transforms": self.update_transforms.start_round(state["transforms"])}
        return backtracking_fit_round(
            self,
            context,
            parameters,
            state,
            learning_rate=self.learning_rate,
            max_probes=self.line_search_probes,
            loss_metric=self.loss_metric,
        )


class FedMedian(NamedStrategy):
    """The coordinate-wise median of the client models (Yin et al., 2018)."""

    mean_aggregation = False

    def preset_parts(self, knobs: dict[str, Any]) -> dict[str, Any]:
        return {"aggregator": CoordinateMedian()}


class FedTrimmedAvg(NamedStrategy):
    """The coordinate-wise trimmed mean of the client models (Yin et al., 2018)."""

    options = (
        Option(
            "beta",
            float,
            0.2,
            "share cut from each end of every coordinate, in [0, 0.5)",
            flag="--trim-beta",
            at_least=0,
        ),
    )
    mean_aggregation = False

    def preset_parts(self, knobs: dict[str, Any]) -> dict[str, Any]:
        return {"aggregator": TrimmedMean(self.beta)}


_NUM_MALICIOUS = Option(
    "num_malicious_clients",
    int,
    0,
    "f, the attackers to tolerate",
    flag="--num-malicious",
    at_least=0,
)


class Krum(NamedStrategy):
    """Krum (Blanchard et al., 2017): keep the update closest to its n − f − 2 neighbours.

    Needs n ≥ 2f + 3 updates: `min_fit_clients` and `min_available_clients` are raised to at
    least 2f + 3.
    """

    options = (
        _NUM_MALICIOUS,
        Option(
            "num_clients_to_keep",
            int,
            0,
            "m: 0 is Krum; m > 0 averages the m best (Multi-Krum)",
            flag="--num-keep",
            at_least=0,
        ),
    )
    mean_aggregation = False

    def preset_parts(self, knobs: dict[str, Any]) -> dict[str, Any]:
        selected = self._selected(self.num_clients_to_keep)
        aggregator = KrumMean(self.num_malicious_clients, selected)
        _robust_minimums(knobs, aggregator.min_updates)
        return {"aggregator": aggregator}

    @staticmethod
    def _selected(num_clients_to_keep: int) -> int | None:
        """How many of the best-scored updates to average (None: n − f)."""
        return max(1, num_clients_to_keep)


class MultiKrum(Krum):
    """Multi-Krum (Blanchard et al., 2017): average the m updates with the best Krum scores.

    Needs n ≥ 2f + 3 updates: `min_fit_clients` and `min_available_clients` are raised to at
    least 2f + 3.
    """

    options = (
        _NUM_MALICIOUS,
        Option("num_clients_to_keep", int, 0, "m; 0 keeps n − f", flag="--num-keep", at_least=0),
    )

    @staticmethod
    def _selected(num_clients_to_keep: int) -> int | None:
        return num_clients_to_keep or None


class Bulyan(NamedStrategy):
    """Bulyan (El Mhamdi et al., 2018): Krum selection, then a coordinate-wise trimmed mean.

    Needs n ≥ 4f + 3 updates (refused otherwise): `min_fit_clients` and `min_available_clients`
    are raised to at least 4f + 3.
    """

    options = (_NUM_MALICIOUS,)
    mean_aggregation = False

    def preset_parts(self, knobs: dict[str, Any]) -> dict[str, Any]:
        aggregator = BulyanMean(self.num_malicious_clients)
        _robust_minimums(knobs, aggregator.min_updates)
        return {"aggregator": aggregator}


class QFedAvg(NamedStrategy):
    """q-FedAvg (Li et al., 2020, "Fair Resource Allocation in Federated Learning").

    Clients with a higher loss F_k get more say: updates are reweighted by F_k^q and the step is
    normalised by an estimate of the local Lipschitz constant L = 1 / qffl_learning_rate. The
    paper uses the loss of the global model on the client's data: report that under
    `loss_metric` for the exact algorithm. A client that does not report it is left out.
    """

    options = (
        Option(
            "q_param",
            float,
            0.2,
            "fairness parameter q >= 0 (0: the uniform mean)",
            flag="--q",
            at_least=0,
        ),
        Option(
            "qffl_learning_rate",
            float,
            0.1,
            "the clients' learning rate",
            above=0,
            mirrors="learning_rate",
        ),
        Option("loss_metric", str, "train_loss", "the fit metric holding each client's loss"),
    )
    mean_aggregation = False

    def preset_parts(self, knobs: dict[str, Any]) -> dict[str, Any]:
        return {
            "aggregator": QFFLMean(self.q_param, self.qffl_learning_rate),
            "weight_fn": weight_by_metric(self.loss_metric),
        }


for _preset in (
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
):
    register_preset(_preset)
