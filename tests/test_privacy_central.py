"""Central DP (DP-FedAvg): clipping, noise on the sum, the fixed denominator, the accountant."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from roost.core.types import FitIns, FitRes
from roost.engines.sequential import SequentialEngine
from roost.errors import ConfigurationError, RunFinished
from roost.privacy import CentralDP, FixedSizeSampler, PoissonSampler, SampledMean
from roost.privacy.accounting import default_delta, epsilon
from roost.server.loop import ServerConfig, run_rounds
from roost.server.state import StateStore
from roost.strategy import (
    PRESETS,
    ClipL2,
    DPFedAvg,
    Mean,
    ServerAdam,
    Strategy,
    WeightedMean,
    uniform_weight,
)

GLOBAL = [np.zeros((4, 3), np.float32), np.zeros(3, np.float32)]


def client_updates(count: int, seed: int = 0) -> list[tuple[str, FitRes]]:
    """Results whose updates have norms from about 0.3 to 3 (some clipped at C = 1)."""
    rng = np.random.default_rng(seed)
    results = []
    for index in range(count):
        scale = 0.3 + 2.7 * index / max(count - 1, 1)
        update = [rng.normal(size=a.shape).astype(np.float32) for a in GLOBAL]
        norm = np.sqrt(sum(float((u.astype(np.float64) ** 2).sum()) for u in update))
        parameters = [g + u * np.float32(scale / norm) for g, u in zip(GLOBAL, update, strict=True)]
        results.append((str(index), FitRes(parameters, 10 + index, {})))
    return results


def dp_strategy(transform: CentralDP, **kwargs) -> Strategy:
    return Strategy(
        aggregator=Mean(), weight_fn=uniform_weight, update_transforms=[transform], **kwargs
    )


# -- the mechanism ------------------------------------------------------------------------------


@pytest.mark.parametrize("optimizer", [None, ServerAdam(0.05)])
def test_without_noise_central_dp_is_clipped_fedavg_exactly(optimizer) -> None:
    results = client_updates(6)
    central = CentralDP(0.0, 1.0, expected_clients=6, num_clients=60)
    extra = {} if optimizer is None else {"server_optimizer": optimizer}
    private = dp_strategy(central, **extra).aggregate_fit(1, GLOBAL, results)
    clipped = Strategy(
        aggregator=Mean(), weight_fn=uniform_weight, update_transforms=[ClipL2(1.0)], **extra
    ).aggregate_fit(1, GLOBAL, results)
    for got, want in zip(private.parameters, clipped.parameters, strict=True):
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
    assert private.measurements["clip_norm"] == 1.0
    assert "epsilon" not in private.measurements  # σ = 0: there is no privacy to report


def test_the_denominator_is_the_expected_cohort_not_the_arrivals() -> None:
    results = client_updates(3)
    central = CentralDP(0.0, 1.0, expected_clients=6, num_clients=60)
    half = dp_strategy(central).aggregate_fit(1, GLOBAL, results).parameters
    full = dp_strategy(ClipL2(1.0)).aggregate_fit(1, GLOBAL, results).parameters
    for got, mean in zip(half, full, strict=True):
        np.testing.assert_allclose(got, mean * 3 / 6, rtol=1e-6)


def test_the_noise_on_the_sum_has_std_sigma_times_c() -> None:
    template = [np.zeros(200_000, np.float32), np.zeros((100, 100), np.float32)]
    sigma, clip, expected = 1.3, 0.5, 4
    central = CentralDP(sigma, clip, expected_clients=expected, num_clients=40)
    strategy = dp_strategy(central)
    results = [(str(k), FitRes([a.copy() for a in template], 1, {})) for k in range(expected)]
    noised = strategy.aggregate_fit(1, template, results).parameters
    values = np.concatenate([a.ravel().astype(np.float64) for a in noised]) * expected
    target = sigma * clip  # the std added to the sum, before dividing by m
    assert abs(values.mean()) < 6 * target / np.sqrt(values.size)
    assert abs(values.std() / target - 1.0) < 0.01  # 0.01 is about 5 standard errors here


def test_adaptive_clipping_splits_sigma_and_follows_the_quantile() -> None:
    sigma, count_noise = 1.0, 2.0
    central = CentralDP(
        sigma,
        1.0,
        expected_clients=6,
        num_clients=60,
        clip_quantile=0.5,
        count_noise_stddev=count_noise,
    )
    # Andrew et al.: 1/σ² = 1/z_Δ² + 1/(2σ_b)², so the pair costs what σ alone would.
    z = central.update_noise_multiplier
    assert z**-2 + (2 * count_noise) ** -2 == pytest.approx(sigma**-2)
    with pytest.raises(ConfigurationError, match="count_noise_stddev"):
        CentralDP(1.0, 1.0, 6, num_clients=60, clip_quantile=0.5, count_noise_stddev=0.4)

    exact = CentralDP(0.0, 1.0, expected_clients=6, num_clients=60, clip_quantile=0.5)
    strategy = dp_strategy(exact)
    state = strategy.init(GLOBAL)
    # Norms run from 0.3 to 3: two of six are at most 1, so the bound must grow.
    out = strategy.aggregate_fit(1, GLOBAL, client_updates(6), state)
    share = out.measurements["unclipped_share"]
    assert share == pytest.approx(2 / 6)
    next_clip = out.state["transforms"][0]["clip_norm"]
    assert next_clip == pytest.approx(np.exp(-0.2 * (share - 0.5)))


def test_an_aggregate_that_is_not_the_plain_mean_is_refused() -> None:
    central = CentralDP(1.0, 1.0, expected_clients=6, num_clients=60)
    weighted = Strategy(aggregator=WeightedMean(), update_transforms=[central])
    with pytest.raises(ConfigurationError, match="weight_fn=uniform_weight"):
        weighted.aggregate_fit(1, GLOBAL, client_updates(6))


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"noise_multiplier": -1.0}, "noise_multiplier"),
        ({"clip_norm": 0.0}, "clip_norm"),
        ({"expected_clients": 100}, "cannot exceed num_clients"),
        ({"sampling": "fixed", "accountant": "pld"}, 'use accountant="rdp"'),
        ({"target_epsilon": 0.0}, "target_epsilon"),
        ({"clip_quantile": 1.5}, "clip_quantile"),
        ({"delta": 2.0}, "delta"),
    ],
)
def test_bad_settings_are_refused_at_construction(kwargs, fragment) -> None:
    settings = {"noise_multiplier": 1.0, "clip_norm": 1.0, "expected_clients": 5}
    settings.update(kwargs)
    with pytest.raises(ConfigurationError, match=fragment):
        CentralDP(num_clients=50, **settings)


# -- runs: the accountant in the state ----------------------------------------------------------


class StepClient:
    """Moves every parameter by partition_id + 1."""

    def __init__(self, partition_id: int) -> None:
        self.partition_id = partition_id

    def get_parameters(self, config):
        return [np.zeros(3, np.float32)]

    def fit(self, parameters, config):
        return [p + np.float32(self.partition_id + 1) for p in parameters], 1, {}

    def evaluate(self, parameters, config):
        return 0.0, 1, {}


def step_client_fn(context):
    return StepClient(context.partition_id)


NUM_CLIENTS = 20


def dp_run(strategy, rounds, **kwargs):
    transport = SequentialEngine(step_client_fn, NUM_CLIENTS)
    return run_rounds(strategy, transport, ServerConfig(num_rounds=rounds), seed=0, **kwargs)


class CohortSizes:
    """A transport that counts each round's fit instructions (a DP run's history withholds
    them), read per round through `on_round_end`."""

    def __init__(self) -> None:
        self.engine = SequentialEngine(step_client_fn, NUM_CLIENTS)
        self.pending = 0
        self.sizes: list[int] = []
        self.states: list = []

    def wait_for_clients(self, count, timeout=None):
        return self.engine.wait_for_clients(count, timeout)

    def run(self, cohort, timeout):
        self.pending += sum(isinstance(ins, FitIns) for _, ins in cohort)
        return self.engine.run(cohort, timeout)

    def close(self) -> None:
        self.engine.close()

    def __call__(self, state) -> None:
        self.sizes.append(self.pending)
        self.states.append(state)
        self.pending = 0

    def empty_rounds(self) -> list[int]:
        return [r for r, size in enumerate(self.sizes, start=1) if size == 0]


def counted_run(strategy, rounds) -> tuple[object, CohortSizes]:
    counts = CohortSizes()
    config = ServerConfig(num_rounds=rounds)
    return run_rounds(strategy, counts, config, seed=0, on_round_end=counts), counts


def dpfedavg(**kwargs) -> DPFedAvg:
    options = {
        "noise_multiplier": 1.0,
        "clip_norm": 1.0,
        "expected_clients": 4,
        "num_clients": NUM_CLIENTS,
        "initial_parameters": [np.zeros(3, np.float32)],
        "fraction_evaluate": 0.0,
    }
    options.update(kwargs)
    return DPFedAvg(**options)


def test_target_epsilon_stops_before_the_round_that_would_exceed_it(caplog) -> None:
    delta = default_delta(NUM_CLIENTS)
    spent = [epsilon(1.0, r, delta, q=4 / NUM_CLIENTS) for r in range(1, 6)]
    target = (spent[2] + spent[3]) / 2  # three rounds fit, the fourth would not
    history = dp_run(dpfedavg(target_epsilon=target), rounds=10)
    assert len(history.rounds) == 3
    reported = history.measurements["epsilon"]
    assert [value for _, value in reported] == pytest.approx(
        [spent[r - 1] for r, _ in reported], rel=1e-12
    )
    assert "privacy budget is spent: round 4 would raise" in caplog.text


def test_start_round_raises_run_finished_with_the_numbers() -> None:
    central = CentralDP(1.0, 1.0, 4, num_clients=NUM_CLIENTS, target_epsilon=1e-3)
    with pytest.raises(RunFinished, match=r"target_epsilon 0\.001"):
        central.start_round(central.init(GLOBAL))


def test_a_resumed_run_continues_noise_and_epsilon_exactly(tmp_path, caplog) -> None:
    def strategy():
        return dpfedavg(seed=11, clip_quantile=0.5, count_noise_stddev=1.0)

    whole = dp_run(strategy(), rounds=4)
    store = StateStore(tmp_path)
    dp_run(strategy(), rounds=2, on_round_end=store.save)
    saved = store.load()
    assert saved.server_round == 2
    transform_state = saved.strategy_state["transforms"][0]
    assert transform_state["rounds"] == 2 and not transform_state["open"]
    resumed = dp_run(strategy(), rounds=4, resume_from=saved)
    np.testing.assert_array_equal(resumed.parameters[0], whole.parameters[0])
    assert resumed.measurements == whole.measurements
    assert [r for r, _ in whole.measurements["clip_norm"]] == [1, 2, 3, 4]
    assert "NOT private" in caplog.text


def test_without_a_seed_every_run_draws_new_noise() -> None:
    def everyone():  # the same cohort every time: only the noise can differ
        return dpfedavg(sampling="fixed", expected_clients=NUM_CLIENTS)

    first = dp_run(everyone(), rounds=1).parameters[0]
    second = dp_run(everyone(), rounds=1).parameters[0]
    assert not np.array_equal(first, second)


def test_dpfedavg_wires_secret_sampling_and_composes_with_any_optimizer() -> None:
    poisson = dpfedavg(server_optimizer=ServerAdam(0.1))
    assert isinstance(poisson.sampler, PoissonSampler) and poisson.sampler.q == 0.2
    assert isinstance(poisson.aggregator, SampledMean) and poisson.aggregator.min_updates == 0
    assert isinstance(poisson.server_optimizer, ServerAdam)
    assert poisson.central_dp.delta == default_delta(NUM_CLIENTS)
    fixed = dpfedavg(sampling="fixed", delta=1e-4)
    assert isinstance(fixed.sampler, FixedSizeSampler) and fixed.sampler.cohort_size == 4
    assert fixed.central_dp.accounting_args == {"sampling": "fixed", "cohort": 4, "population": 20}
    assert PRESETS["dpfedavg"] is DPFedAvg
    with pytest.raises(ConfigurationError, match="needs noise_multiplier, clip_norm"):
        DPFedAvg(expected_clients=4, num_clients=20)
    with pytest.raises(ConfigurationError, match="sets aggregator, sampler itself"):
        dpfedavg(sampler=PoissonSampler(0.5), aggregator=Mean())
    clipped_first = dpfedavg(update_transforms=[ClipL2(0.5)])
    assert clipped_first.update_transforms.transforms == (ClipL2(0.5), clipped_first.central_dp)
    history = dp_run(poisson, rounds=3)
    assert [r for r, _ in history.measurements["epsilon"]] == sorted(
        r for r, _ in history.measurements["epsilon"]
    )


# -- samplers -----------------------------------------------------------------------------------


def test_poisson_sampler_includes_each_client_with_probability_q() -> None:
    sampler = PoissonSampler(0.25)
    rng = np.random.default_rng(0)
    before = rng.bit_generator.state
    state = sampler.init()
    ids = [str(k) for k in range(40)]
    counts = dict.fromkeys(ids, 0)
    for _ in range(400):
        chosen, state = sampler.sample(ids, 5, rng, state)
        for client in chosen:
            counts[client] += 1
    assert state == {"draws": 400}
    assert rng.bit_generator.state == before  # secret sampling never touches the loop's RNG
    rates = np.array(list(counts.values())) / 400
    assert np.all(np.abs(rates - 0.25) < 6 * np.sqrt(0.25 * 0.75 / 400))


def test_fixed_size_sampler_picks_exactly_m_and_refuses_too_few(caplog) -> None:
    sampler = FixedSizeSampler(3)
    ids = [str(k) for k in range(10)]
    chosen, state = sampler.sample(ids, 7, np.random.default_rng(0), sampler.init())
    assert len(set(chosen)) == 3 and state == {"draws": 1}
    with pytest.raises(ConfigurationError, match="only 2 are available"):
        sampler.sample(ids[:2], 2, np.random.default_rng(0), sampler.init())
    seeded = FixedSizeSampler(3, seed=5)
    assert "NOT private" in caplog.text

    def cohorts(loop_seed):
        rng, state, picks = np.random.default_rng(loop_seed), seeded.init(), []
        for _ in range(5):
            chosen, state = seeded.sample(ids, 3, rng, state)
            picks.append(chosen)
        return picks

    assert cohorts(0) == cohorts(0)
    assert cohorts(0) != cohorts(1)


def test_an_empty_poisson_cohort_passes_without_stopping_the_run(caplog) -> None:
    caplog.set_level(logging.INFO, logger="roost")
    history, counts = counted_run(dpfedavg(expected_clients=1, seed=3), rounds=12)
    assert len(history.rounds) == 12
    assert counts.empty_rounds()


# -- empty Poisson cohorts ------------------------------------------------------------------------


def test_a_round_whose_poisson_cohort_is_empty_still_releases_the_noise() -> None:
    # q = 1/20: about a third of the rounds choose nobody; the research seed fixes which.
    history, counts = counted_run(dpfedavg(expected_clients=1, seed=3), rounds=8)
    states, empty = counts.states, counts.empty_rounds()
    assert empty and len(empty) < 8, "the seed should give an empty cohort, and a full one"
    assert [r for r, _ in history.measurements["epsilon"]] == list(range(1, 9))
    for server_round in empty:
        before = states[server_round - 2].parameters[0] if server_round > 1 else np.zeros(3)
        after = states[server_round - 1].parameters[0]
        assert not np.array_equal(before, after)  # the noise on an empty sum, divided by m
    assert all(not state.strategy_state["transforms"][-1]["open"] for state in states)


def test_without_noise_an_empty_cohort_leaves_the_model_alone() -> None:
    strategy = dpfedavg(expected_clients=1, seed=3, noise_multiplier=0.0)
    _, counts = counted_run(strategy, rounds=8)
    states, empty = counts.states, counts.empty_rounds()
    assert empty and 1 not in empty
    for server_round in empty:
        np.testing.assert_array_equal(
            states[server_round - 2].parameters[0], states[server_round - 1].parameters[0]
        )


# -- any mean strategy under central DP ---------------------------------------------------------


def test_with_central_dp_keeps_the_strategys_optimizer_and_refuses_robust_ones() -> None:
    from roost.privacy import with_central_dp
    from roost.strategy import FedAdam, FedSGD, FedWeightedAvg, Krum, QFedAvg

    dp = {"noise_multiplier": 1.0, "clip_norm": 1.0, "expected_clients": 4, "num_clients": 20}
    adam = FedAdam(eta=0.05, eta_l=0.2, update_transforms=[ClipL2(2.0)], min_fit_clients=3)
    private = with_central_dp(adam, **dp)
    assert isinstance(private, DPFedAvg) and private.server_optimizer is adam.server_optimizer
    assert private.update_transforms.transforms == (ClipL2(2.0), private.central_dp)
    assert private.fit_config_defaults == {"lr": 0.2} and private.min_fit_clients == 3
    for robust, message in (
        (Krum(), "aggregates with KrumMean"),
        (QFedAvg(), "aggregates with QFFLMean"),
        (FedWeightedAvg(weight_metric="quality"), "has its own weight_fn"),
        (FedSGD(line_search_probes=2), "line search"),
        (private, "DP-FedAvg already"),
    ):
        with pytest.raises(ConfigurationError, match=message):
            with_central_dp(robust, **dp)


def test_with_central_dp_takes_its_parameters_as_one_object() -> None:
    from roost.privacy import CentralDPParams, with_central_dp
    from roost.strategy import FedAdam

    params = CentralDPParams(1.0, 1.0, 4, num_clients=20, clip_quantile=0.5, count_noise_stddev=1.0)
    private = with_central_dp(FedAdam(eta=0.05), params)
    assert private.central_dp == CentralDP(**params.options())
    assert private.central_dp == with_central_dp(FedAdam(eta=0.05), **params.options()).central_dp
    with pytest.raises(ConfigurationError, match="not both; got seed"):
        with_central_dp(FedAdam(), params, seed=1)
