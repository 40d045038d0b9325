"""Named presets: defaults, FedAvg knobs, what they send to clients, and end-to-end runs."""

from __future__ import annotations

import numpy as np
import pytest

import roost
from roost.apps.digits import make_client_fn, make_strategy, softmax
from roost.core.types import FitRes
from roost.engines.sequential import SequentialEngine
from roost.errors import ConfigurationError
from roost.metrics import weighted_average
from roost.server.loop import run_rounds
from roost.settings import RunSettings
from roost.strategy import (
    PRESETS,
    AdaptiveClipL2,
    BulyanMean,
    CoordinateMedian,
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedProx,
    FedSGD,
    FedTrimmedAvg,
    FedYogi,
    Krum,
    KrumMean,
    MultiKrum,
    QFedAvg,
    ServerAdagrad,
    ServerAdam,
    ServerSGD,
    ServerYogi,
    TrimmedMean,
    presets,
)
from roost.strategy.options import STRATEGY_KNOBS
from roost.strategy.presets import preset

REQUIRED = {
    "fedprox": {"proximal_mu": 0.1},
    # σ = 0 over the whole federation: clipped uniform FedAvg, so the demo's checks apply.
    "dpfedavg": {
        "noise_multiplier": 0.0,
        "clip_norm": 10.0,
        "expected_clients": 5,
        "num_clients": 5,
        "sampling": "fixed",
    },
}


def test_every_named_preset_is_registered() -> None:
    assert sorted(PRESETS) == sorted(
        [
            "fedavg",
            "fedweightedavg",
            "fedavgm",
            "fedadagrad",
            "fedadam",
            "fedyogi",
            "fedprox",
            "fedsgd",
            "fedmedian",
            "fedtrimmedavg",
            "krum",
            "multikrum",
            "bulyan",
            "qfedavg",
            "dpfedavg",
            "fedbuff",
            "fedasync",
        ]
    )


def test_roost_and_roost_strategy_export_every_named_preset() -> None:
    named = sorted(cls.__name__ for cls in PRESETS.values())
    # presets.py lists its own; roost.privacy registers DPFedAvg from the layer above, and
    # roost.strategy.buffered the asynchronous FedBuff and FedAsync.
    assert sorted([*presets.__all__, "DPFedAvg", "FedAsync", "FedBuff"]) == named
    assert set(named) <= set(roost.__all__)
    assert set(presets.__all__) <= set(roost.strategy.__all__)
    for package in (roost, roost.strategy):
        assert [getattr(package, name) for name in named] == [PRESETS[n.lower()] for n in named]


def test_register_preset_refuses_a_second_class_under_a_taken_name() -> None:
    from roost.strategy.options import NamedStrategy, register_preset

    class FedAvg(NamedStrategy):  # the name of a built-in preset
        pass

    with pytest.raises(ConfigurationError, match="already registered"):
        register_preset(FedAvg)
    assert register_preset(PRESETS["dpfedavg"]) is PRESETS["dpfedavg"]  # the same class: no-op


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_accepts_the_fedavg_knobs(name) -> None:
    def evaluate_fn(server_round, parameters, config):
        return 0.0, {}

    knobs = {
        "fraction_fit": 0.5,
        "fraction_evaluate": 0.25,
        "min_fit_clients": 3,
        "min_evaluate_clients": 1,
        "min_available_clients": 4,
        "initial_parameters": [np.zeros(2)],
        "evaluate_fn": evaluate_fn,
        "on_fit_config_fn": lambda r: {"lr": 0.1},
        "on_evaluate_config_fn": lambda r: {"batch": 8},
        "fit_metrics_aggregation_fn": weighted_average,
        "evaluate_metrics_aggregation_fn": weighted_average,
        # Central DP refuses accept_failures=False: the unchanged model would reveal a failure.
        "accept_failures": name == "dpfedavg",
        "fit_config_defaults": {"extra": 1},
    }
    strategy = PRESETS[name](**knobs, **REQUIRED.get(name, {}))
    assert set(STRATEGY_KNOBS) == set(knobs)
    for knob, value in knobs.items():
        got = getattr(strategy, knob)
        if knob == "initial_parameters":
            np.testing.assert_array_equal(got[0], value[0])
        elif knob == "fit_config_defaults":
            assert value.items() <= got.items()  # beside the preset's own entries
        elif knob in ("min_fit_clients", "min_available_clients") and name in (
            "krum",
            "multikrum",
            "bulyan",
        ):
            assert got >= value  # raised to what the aggregator needs (3 for f = 0)
        else:
            assert got == value, knob


def test_documented_defaults() -> None:
    adam = FedAdam().server_optimizer
    assert (adam.learning_rate, adam.beta_1, adam.beta_2, adam.tau) == (0.1, 0.9, 0.99, 1e-9)
    assert FedAdam().eta_l == 0.1
    yogi = FedYogi().server_optimizer
    assert (yogi.learning_rate, yogi.beta_1, yogi.beta_2, yogi.tau) == (0.01, 0.9, 0.99, 1e-3)
    assert FedYogi().eta_l == 0.0316
    adagrad = FedAdagrad().server_optimizer
    assert (adagrad.learning_rate, adagrad.beta_1, adagrad.tau) == (0.1, 0.0, 1e-9)
    sgd = FedAvgM().server_optimizer
    assert (sgd.learning_rate, sgd.momentum) == (1.0, 0.0)
    assert FedTrimmedAvg().aggregator.beta == 0.2
    krum = Krum().aggregator
    assert (krum.num_malicious_clients, krum.num_selected) == (0, 1)
    assert (QFedAvg().q_param, QFedAvg().qffl_learning_rate) == (0.2, 0.1)
    assert isinstance(FedAvg().server_optimizer, ServerSGD)
    assert isinstance(FedAdagrad().server_optimizer, ServerAdagrad)
    assert isinstance(FedAdam().server_optimizer, ServerAdam)
    assert isinstance(FedYogi().server_optimizer, ServerYogi)
    assert isinstance(PRESETS["fedmedian"]().aggregator, CoordinateMedian)
    assert isinstance(FedTrimmedAvg().aggregator, TrimmedMean)
    assert isinstance(PRESETS["bulyan"]().aggregator, BulyanMean)
    assert MultiKrum(num_malicious_clients=1).aggregator.num_selected is None
    assert Krum(num_clients_to_keep=3).aggregator.num_selected == 3
    with pytest.raises(TypeError):
        FedProx()  # μ is required, as in Flower


def test_robust_presets_raise_their_minimums() -> None:
    bulyan = PRESETS["bulyan"](num_malicious_clients=2)
    assert bulyan.min_fit_clients == bulyan.min_available_clients == 11
    krum = Krum(num_malicious_clients=2, min_fit_clients=9)
    assert krum.min_fit_clients == 9 and krum.min_available_clients == 7


def test_fedavgm_without_momentum_is_fedavg_and_with_momentum_by_hand() -> None:
    start = [np.zeros(2)]
    round_1 = [("a", FitRes([np.array([1.0, 2.0])], 1)), ("b", FitRes([np.array([3.0, 0.0])], 3))]
    fedavg, _, *_ = FedAvg().aggregate_fit(1, start, round_1)
    fedavgm, _, *_ = FedAvgM().aggregate_fit(1, start, round_1)
    np.testing.assert_array_equal(fedavg[0], fedavgm[0])

    strategy = FedAvgM(server_learning_rate=0.5, server_momentum=0.9)
    x1, _, state, _ = strategy.aggregate_fit(1, start, round_1)  # Δ1 = (2.5, 0.5); x1 = 0.5·Δ1
    np.testing.assert_allclose(x1[0], [1.25, 0.25])
    round_2 = [("a", FitRes([x1[0] + 1.0], 1))]  # Δ2 = (1, 1); v2 = 0.9·Δ1 + Δ2
    x2, _, *_ = strategy.aggregate_fit(2, x1, round_2, state)
    np.testing.assert_allclose(x2[0], x1[0] + 0.5 * (0.9 * np.array([2.5, 0.5]) + 1.0))


# -- what presets send to clients --------------------------------------------------------------


def test_fedprox_sends_mu_in_every_fit_config_with_the_users_entries() -> None:
    strategy = FedProx(proximal_mu=0.25, on_fit_config_fn=lambda r: {"lr": 0.1, "server_round": r})
    cohort, _ = strategy.configure_fit(4, [np.zeros(1)], ["0", "1", "2"], np.random.default_rng(0))
    assert len(cohort) == 3
    for _, instruction in cohort:
        assert instruction.config == {"lr": 0.1, "server_round": 4, "proximal_mu": 0.25}
    with pytest.raises(ConfigurationError, match="proximal_mu"):
        FedProx(proximal_mu=-1.0)


def test_adaptive_presets_send_eta_l_as_the_clients_learning_rate() -> None:
    cohort, _ = FedYogi().configure_fit(1, [np.zeros(1)], ["0", "1"], np.random.default_rng(0))
    assert cohort[0][1].config == {"lr": 0.0316}
    # The user's own on_fit_config_fn wins: a preset default never overrides their choice.
    own = FedAdam(eta_l=0.5, on_fit_config_fn=lambda r: {"lr": 0.01})
    cohort, _ = own.configure_fit(1, [np.zeros(1)], ["0", "1"], np.random.default_rng(0))
    assert cohort[0][1].config == {"lr": 0.01}


def digits_run(strategy, rounds=2, client_fn=None, num_clients=5):
    return roost.run_simulation(
        client_fn or make_client_fn(0),
        num_clients,
        strategy=strategy,
        config=roost.ServerConfig(num_rounds=rounds),
        seed=0,
    )


def demo_knobs(num_clients=5, rounds=2):
    return make_strategy(RunSettings(num_clients=num_clients, num_rounds=rounds))


def test_fedprox_reaches_the_demo_client_and_pulls_toward_the_global_model() -> None:
    base = demo_knobs()
    fedavg = digits_run(preset("fedavg", like=base), rounds=1).parameters
    prox_zero = digits_run(preset("fedprox", like=base, proximal_mu=0.0), rounds=1).parameters
    prox_big = digits_run(preset("fedprox", like=base, proximal_mu=1.0), rounds=1).parameters
    np.testing.assert_array_equal(fedavg[0], prox_zero[0])
    # A strong proximal term keeps every client, hence the aggregate, closer to the start (zeros).
    assert np.linalg.norm(prox_big[0]) < 0.8 * np.linalg.norm(fedavg[0])


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_trains_the_digits_demo(name) -> None:
    options = REQUIRED.get(name, {})
    if name == "fedsgd":
        from roost.apps.digits import make_client_fn

        history = digits_run(
            preset(name, like=demo_knobs(), learning_rate=2.0), 3, make_client_fn(0)
        )
    else:
        history = digits_run(preset(name, like=demo_knobs(), **options), 3)
    accuracies = [value for _, value in history.metrics_centralized["accuracy"]]
    assert accuracies[-1] > accuracies[0] + 0.2, accuracies  # round 0 is the untrained model
    assert all(record.fit_failures == 0 for record in history.rounds)


# -- FedSGD ------------------------------------------------------------------------------------


class LeastSquaresGradientClient:
    """Returns the gradient of its mean squared error ½‖Xw − y‖²/n when asked for gradients."""

    def __init__(self, x, y) -> None:
        self.x, self.y = x, y

    def get_parameters(self, config):
        return [np.zeros(self.x.shape[1])]

    def fit(self, parameters, config):
        assert config["return_gradients"] is True
        w = parameters[0]
        gradient = self.x.T @ (self.x @ w - self.y) / len(self.y)
        return [gradient], len(self.y), {}

    def evaluate(self, parameters, config):
        return 0.0, len(self.y), {}


def test_fedsgd_is_full_batch_gradient_descent_on_the_union_of_the_data() -> None:
    rng = np.random.default_rng(0)
    sizes = [5, 20, 11]
    xs = [rng.normal(size=(n, 3)) for n in sizes]
    ys = [x @ np.array([1.0, -2.0, 0.5]) + rng.normal(0, 0.1, len(x)) for x in xs]

    def client_fn(context):
        k = context.partition_id
        return LeastSquaresGradientClient(xs[k], ys[k])

    strategy = FedSGD(learning_rate=0.3, initial_parameters=[np.zeros(3)], fraction_evaluate=0.0)
    history = roost.run_simulation(
        client_fn, 3, strategy=strategy, config=roost.ServerConfig(num_rounds=4), seed=0
    )
    x_all, y_all = np.vstack(xs), np.concatenate(ys)
    w = np.zeros(3)
    for _ in range(4):
        w = w - 0.3 * x_all.T @ (x_all @ w - y_all) / len(y_all)
    np.testing.assert_allclose(history.parameters[0], w, rtol=1e-10)


def test_fedsgd_on_the_digits_demo_matches_central_gradient_descent() -> None:
    from roost.apps.digits import client_data, make_client_fn

    strategy = FedSGD(
        learning_rate=0.5, initial_parameters=softmax.init_parameters(64, 10), fraction_evaluate=0.0
    )
    history = digits_run(strategy, rounds=2, client_fn=make_client_fn(0), num_clients=4)
    parts = [client_data(k, 4, 0)[0] for k in range(4)]
    x = np.vstack([p.x for p in parts])
    y = np.concatenate([p.y for p in parts])
    w = softmax.init_parameters(64, 10)
    for _ in range(2):
        w = [p - 0.5 * g for p, g in zip(w, softmax.gradients(w, x, y), strict=True)]
    for got, expected in zip(history.parameters, w, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)


# -- q-FedAvg ----------------------------------------------------------------------------------


def test_qfedavg_reads_the_loss_from_fit_metrics() -> None:
    start = [np.zeros(1)]
    outcomes = [
        ("a", FitRes([np.array([1.0])], 10, {"train_loss": 1.0})),
        ("b", FitRes([np.array([-1.0])], 10, {"train_loss": 4.0})),
        ("c", FitRes([np.array([50.0])], 10, {})),  # no loss: left out
    ]
    new, *_ = QFedAvg(q_param=1.0, qffl_learning_rate=0.5).aggregate_fit(1, start, outcomes)
    np.testing.assert_allclose(new[0], [-1 / 3], rtol=1e-8)  # worked out in test_aggregators
    uniform, _, *_ = QFedAvg(q_param=0.0).aggregate_fit(1, start, outcomes[:2])
    np.testing.assert_allclose(uniform[0], [0.0], atol=1e-12)


# -- preset() and the demo's knobs ---------------------------------------------------------------


def test_preset_by_name_copies_knobs_and_refuses_unknown_names() -> None:
    base = demo_knobs()
    strategy = preset("FedAdam", like=base, eta=0.05)
    assert isinstance(strategy, FedAdam)
    assert strategy.server_optimizer.learning_rate == 0.05
    assert strategy.evaluate_fn is base.evaluate_fn
    assert strategy.on_fit_config_fn is base.on_fit_config_fn
    with pytest.raises(
        ConfigurationError, match="unknown strategy 'fedfoo'; choose one of: bulyan"
    ):
        preset("fedfoo")
    krum = preset("multi-krum", like=base, num_malicious_clients=1)
    assert isinstance(krum.aggregator, KrumMean)
    assert krum.min_fit_clients == 5


# -- resuming a run through the round loop --------------------------------------------------------


def test_a_resumed_run_ends_with_the_same_model_as_an_uninterrupted_one() -> None:
    def strategy():
        return preset(
            "fedadam",
            like=demo_knobs(num_clients=4),
            eta=0.05,
            update_transforms=[AdaptiveClipL2(initial_norm=0.5)],
        )

    uninterrupted = digits_run(strategy(), rounds=4, num_clients=4).parameters

    saved = []
    digits_run(strategy(), rounds=2, num_clients=4)  # warm-up: identical first half
    roost.run_simulation(
        make_client_fn(0),
        4,
        strategy=strategy(),
        config=roost.ServerConfig(num_rounds=2),
        seed=0,
        on_round_end=saved.append,
    )
    state = saved[-1]
    assert state.strategy_state["transforms"][0]["clip_norm"] != 0.5

    transport = SequentialEngine(make_client_fn(0), 4)
    resumed = run_rounds(
        strategy(), transport, roost.ServerConfig(num_rounds=4), seed=0, resume_from=state
    ).parameters
    for a, b in zip(uninterrupted, resumed, strict=True):
        np.testing.assert_array_equal(a, b)
