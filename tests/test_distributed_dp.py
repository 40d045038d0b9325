"""Distributed DP under SecAgg+: the discrete Gaussian sampler, the field, the accounting formula,
calibration of the noised sum, dropouts and refusals."""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_secure_rounds import START, ClientFn

import roost
from roost.errors import ConfigurationError
from roost.privacy import DistributedDP
from roost.secagg.ddp import NoiseField, add_noise, discrete_gaussian, tail_bound
from roost.strategy import FedAvg, Mean, SecureAggregation, Strategy
from roost.strategy.secure_noise import NoisePlan


def _pmf_moments(variance: float) -> tuple[float, float]:
    """P(0) and the variance of N_Z(0, variance), summed over the support directly."""
    ys = np.arange(-int(40 * math.sqrt(variance)) - 40, int(40 * math.sqrt(variance)) + 41)
    weights = np.exp(-(ys.astype(float) ** 2) / (2 * variance))
    pmf = weights / weights.sum()
    return float(pmf[ys == 0][0]), float((pmf * ys**2).sum())


@pytest.mark.parametrize("variance", [0.3, 4.0, 2.5e5])
def test_the_discrete_gaussian_sampler_has_the_right_moments(variance) -> None:
    count = 100_000
    samples = discrete_gaussian(variance, count)
    assert samples.dtype == np.int64
    p0, exact_variance = _pmf_moments(variance)
    std = math.sqrt(exact_variance)
    assert abs(samples.mean()) < 5 * std / math.sqrt(count)
    # The sample variance's std is about √(2/n)·σ²: 5 of those.
    assert abs(samples.var() / exact_variance - 1) < 5 * math.sqrt(2 / count)
    assert abs(np.mean(samples == 0) - p0) < 5 * math.sqrt(p0 * (1 - p0) / count)
    # Symmetric, and the fourth moment of a near-Gaussian: 3σ⁴ (only where σ is large).
    assert abs(np.mean(samples > 0) - np.mean(samples < 0)) < 0.01
    if variance > 100:
        assert abs(np.mean(samples.astype(float) ** 4) / (3 * exact_variance**2) - 1) < 0.05


def test_noise_is_added_modulo_the_field_and_the_weight_stays_exact() -> None:
    encoded = np.array([0, 0, 0, 7], dtype=np.uint64)
    noised = add_noise(encoded, 1e6, 20, 3)
    assert noised[3] == 7 and noised.max() < 2**20
    signed = np.where(noised[:3] >= 2**19, noised[:3].astype(np.int64) - 2**20, noised[:3])
    assert np.all(np.abs(signed) < 10_000)  # 10σ: small values wrapped below zero come back


def _zcdp_epsilon(sensitivity: float, n: int, variance: float, d: int) -> float:
    """Kairouz, Liu, Steinke 2021, Theorem 1, written out again here."""
    tau = 10 * sum(math.exp(-2 * math.pi**2 * variance * k / (k + 1)) for k in range(1, n))
    return min(
        math.sqrt(sensitivity**2 / (n * variance) + tau * d / 2),
        sensitivity / (math.sqrt(n) * math.sqrt(variance)) + tau * math.sqrt(d),
    )


def _epsilon_of_zcdp(rho: float, delta: float) -> float:
    """(ε, δ) of ρ-zCDP: min over Rényi orders α of the conversion of Canonne, Kamath and Steinke
    (2020), αρ + (log(1/δ) + (α−1)·log(1 − 1/α) − log α)/(α − 1), on a fine grid."""
    alphas = np.linspace(1.01, 400, 100_000)
    values = alphas * rho + (
        np.log(1 / delta) + (alphas - 1) * np.log(1 - 1 / alphas) - np.log(alphas)
    ) / (alphas - 1)
    return float(values.min())


@pytest.mark.parametrize(("variance", "n", "d"), [(0.5, 8, 100), (2.0, 20, 650), (4e10, 10, 50)])
def test_epsilon_is_the_papers_bound_composed_over_rounds(variance, n, d) -> None:
    ddp = DistributedDP(1.0, 1.0, min_survivors=n, num_clients=100, delta=1e-5)
    state = ddp.init([np.zeros(d)])
    sensitivity = 2 * math.sqrt(variance * n)  # 2C with σ_total = z·C, z = 1
    for _ in range(3):
        state = ddp.noised(state, variance, sensitivity, d, n + 2)
    expected_rho = 3 * 0.5 * _zcdp_epsilon(sensitivity, n, variance, d) ** 2
    assert state == {"rounds": 3, "rho": pytest.approx(expected_rho, rel=1e-12)}
    # dp_accounting minimises over its own orders: at most a little above the fine grid's minimum.
    expected = _epsilon_of_zcdp(expected_rho, 1e-5)
    _, _, measured = ddp.finish(None, state)
    assert expected <= measured["epsilon"] <= expected * 1.02
    assert measured["delta"] == 1e-5
    if variance < 1:  # small σ_c: the τ term is what separates the sum from one discrete Gaussian
        assert _zcdp_epsilon(sensitivity, n, variance, d) > 2 / math.sqrt(1.0) * 1.05


def test_the_field_never_wraps_for_extreme_inputs_within_the_noise_tail() -> None:
    field = NoiseField(clip=1.0, cohort=10, bits=24, noise_ratio=3.0, dimension=100)
    q = field.quantizer.max_level
    assert q % 2 == 0 and field.max_clients * q < 2**24
    tail = int(tail_bound(3.0 * q / 2, 100))
    # All ten at the top level plus the largest noise, all at zero minus it: both decode exactly.
    extremes = np.array([10 * q + tail, -tail, 5 * q], dtype=np.int64)
    total = (extremes % 2**24).astype(np.uint64)
    np.testing.assert_array_equal(field.centered(total), extremes.astype(float))
    with pytest.raises(ConfigurationError, match="bits"):
        NoisePlan.build(DistributedDP(30.0, 1.0, 10, 10), 1.0, 8, 10, 100)


def test_the_unmasked_sum_carries_noise_of_std_z_c_scaled_to_the_survivors() -> None:
    ddp = DistributedDP(2.0, 0.5, min_survivors=4, num_clients=10)
    size, cohort = 4000, 6
    plan = NoisePlan.build(ddp, 1.0, 48, cohort, size)
    quant = plan.quantizer
    total = np.zeros(size + 1, dtype=np.uint64)
    updates = np.full(size, 0.002)
    for _ in range(cohort):
        encoded = add_noise(quant.encode(updates, 1.0), plan.variance, 48, size)
        total = (total + encoded) & np.uint64(2**48 - 1)
    error = plan.decode_mean(total, cohort) - updates
    expected_std = 2.0 * 0.5 * math.sqrt(cohort / 4) / cohort
    assert abs(error.std() / expected_std - 1) < 0.05
    assert abs(error.mean()) < 5 * expected_std / math.sqrt(size)


def _ddp_strategy(min_survivors: int, **options) -> Strategy:
    knobs = {
        "min_fit_clients": 5,
        "min_available_clients": 5,
        "fraction_evaluate": 0.0,
        "initial_parameters": START,
        "aggregator": Mean(),
        "update_transforms": [DistributedDP(0.5, 1.0, min_survivors, num_clients=5)],
        "secure_aggregation": SecureAggregation(clip_range=4.0, bits=48),
    }
    return Strategy(**{**knobs, **options})


def _run(strategy: Strategy, failing=frozenset(), rounds: int = 2) -> roost.History:
    return roost.run_simulation(
        ClientFn(frozenset(failing)),
        5,
        strategy=strategy,
        config=roost.ServerConfig(num_rounds=rounds),
        seed=0,
    )


def test_a_run_records_the_accountants_epsilon_and_withholds_client_statistics(
    monkeypatch,
) -> None:
    from roost.strategy.secure import SecurePhase

    received = []
    run_phase = SecurePhase.run

    def recording(self, *args, **kwargs):
        metrics = run_phase(self, *args, **kwargs)
        received.extend(metrics)
        return metrics

    monkeypatch.setattr(SecurePhase, "run", recording)
    strategy = _ddp_strategy(4)
    assert strategy.withholds_client_statistics
    history = _run(strategy)
    # The clients send the server no fit metrics (ClientFn's clients report "partition").
    assert received and all(metrics == {} for _, metrics in received)
    size = sum(a.size for a in START)
    plan = NoisePlan.build(DistributedDP(0.5, 1.0, 4, 5), 4.0, 48, 5, size)
    rho = 0.5 * _zcdp_epsilon(plan.sensitivity, 4, plan.variance, size) ** 2
    epsilons = [_epsilon_of_zcdp(r * rho, 1e-5) for r in (1, 2)]
    assert [round_ for round_, _ in history.privacy.epsilon] == [1, 2]
    for (_, measured), expected in zip(history.privacy.epsilon, epsilons, strict=True):
        assert expected <= measured <= expected * 1.02
    assert history.metrics_distributed_fit == {}  # fit metrics withheld, as under central DP
    assert not np.allclose(history.parameters[0], START[0])


def test_fewer_survivors_than_the_noise_needs_abort_the_round() -> None:
    history = _run(_ddp_strategy(5), failing={1}, rounds=1)
    np.testing.assert_array_equal(history.parameters[0], START[0])
    assert history.privacy is None  # nothing released, nothing spent


def test_distributed_dp_is_refused_where_it_cannot_hold() -> None:
    with pytest.raises(ConfigurationError, match="secure_aggregation"):
        _run(_ddp_strategy(4, secure_aggregation=None), rounds=1)
    with pytest.raises(ConfigurationError, match="uniformly"):
        FedAvg(
            update_transforms=[DistributedDP(1.0, 1.0, 2, 5)],
            secure_aggregation=SecureAggregation(),
        )
    with pytest.raises(ConfigurationError, match="min_survivors"):
        _run(_ddp_strategy(4, min_fit_clients=3, fraction_fit=0.5), rounds=1)
    with pytest.raises(ConfigurationError, match="noise_multiplier"):
        DistributedDP(0.0, 1.0, 2, 5)


@pytest.mark.parametrize("required", [4, 5])
def test_clients_refuse_to_unmask_a_sum_of_fewer_inputs_than_the_noise_needs(
    monkeypatch, required
) -> None:
    from roost.secagg import SecAggAbortedError, SecAggClient, inmemory
    from roost.secagg.server import Phase

    class Calibrated(SecAggClient):
        def __init__(self) -> None:
            super().__init__()
            self.min_survivors = required

    monkeypatch.setattr(inmemory, "SecAggClient", Calibrated)
    inputs = {f"c{i}": np.full(3, i, dtype=np.uint64) for i in range(5)}
    silent = {Phase.MASKED_INPUT: {"c1"}}
    if required == 5:  # 4 inputs survived: the clients keep their shares, nothing is unmasked
        with pytest.raises(SecAggAbortedError):
            inmemory.run_in_memory(inputs, silent=silent)
    else:
        trace = inmemory.run_in_memory(inputs, silent=silent)
        assert trace.result.total.tolist() == [9, 9, 9]
