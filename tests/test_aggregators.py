"""Aggregators against numbers computed by hand or by a plain NumPy formula written here."""

from __future__ import annotations

import logging

import numpy as np
import pytest

import roost
from roost.core.types import Failure, FitIns, FitRes
from roost.core.validation import validate_result
from roost.errors import ConfigurationError
from roost.strategy import (
    BulyanMean,
    CoordinateMedian,
    FedAvg,
    KrumMean,
    Mean,
    NotEnoughUpdatesError,
    QFFLMean,
    Strategy,
    TrimmedMean,
    WeightedMean,
)


def aggregate(aggregator, updates, weights=None):
    """Feed updates (lists of arrays) one by one and return the aggregate."""
    weights = [1.0] * len(updates) if weights is None else weights
    template = [np.zeros_like(a) for a in updates[0]]
    pairs = zip(updates, weights, strict=True)
    result, _, _ = aggregator.aggregate(pairs, template, aggregator.init(template))
    return result


def scalars(*values):
    return [[np.array([float(v)])] for v in values]


# -- means --------------------------------------------------------------------------------------


def test_weighted_mean_by_hand() -> None:
    updates = [[np.array([1.0, 2.0]), np.array([[3.0]])], [np.array([4.0, 8.0]), np.array([[0.0]])]]
    result = aggregate(WeightedMean(), updates, [1.0, 2.0])
    # (1*1 + 2*4)/3 = 3, (1*2 + 2*8)/3 = 6, (1*3 + 2*0)/3 = 1
    np.testing.assert_allclose(result[0], [3.0, 6.0])
    np.testing.assert_allclose(result[1], [[1.0]])


def test_weighted_mean_keeps_float32_and_sums_in_float64() -> None:
    # 10,001 float32 updates of 1e-4 around a large offset: float32 running sums would drift.
    updates = [[np.full(3, 1e-4, np.float32)]] * 10_001
    result = aggregate(WeightedMean(), updates)
    assert result[0].dtype == np.float32
    np.testing.assert_allclose(result[0], np.float32(1e-4), rtol=1e-6)


def test_mean_ignores_weight_size_but_skips_zero_weight() -> None:
    result = aggregate(Mean(), scalars(1, 2, 6, 100), [5.0, 1.0, 0.5, 0.0])
    np.testing.assert_allclose(result[0], [3.0])  # (1 + 2 + 6) / 3


def test_streaming_mean_consumes_a_generator_without_buffering() -> None:
    import weakref

    alive = []

    def updates():
        for k in range(1, 6):
            # The mean keeps a running sum only: the update before the one it holds is gone, freed
            # at once by reference counting (no gc.collect(): a full collection in a worker that
            # has loaded torch took about a second each, and a cycle keeping it would fail here).
            assert len(alive) < 2 or alive[-2]() is None
            array = np.full(4, float(k))
            alive.append(weakref.ref(array))
            yield [array], 1.0
            del array

    result, _, _ = WeightedMean().aggregate(updates(), [np.zeros(4)], ())
    np.testing.assert_allclose(result[0], np.full(4, 3.0))


def test_negative_or_nan_weight_is_refused() -> None:
    for weight in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="finite and >= 0"):
            aggregate(WeightedMean(), [[np.ones(1)]], [weight])


# -- median and trimmed mean --------------------------------------------------------------------


def test_median_by_hand_odd_and_even() -> None:
    np.testing.assert_allclose(aggregate(CoordinateMedian(), scalars(1, 2, 3, 4, 100))[0], [3.0])
    np.testing.assert_allclose(aggregate(CoordinateMedian(), scalars(1, 2, 3, 10))[0], [2.5])


def test_median_is_coordinate_wise() -> None:
    rng = np.random.default_rng(0)
    updates = [[rng.normal(size=(3, 2)), rng.normal(size=4)] for _ in range(7)]
    result = aggregate(CoordinateMedian(), updates)
    for layer in range(2):
        expected = np.median(np.array([u[layer] for u in updates]), axis=0)
        np.testing.assert_allclose(result[layer], expected)


def test_trimmed_mean_by_hand() -> None:
    # β = 0.2 of 5 cuts 1 from each end: mean(2, 3, 4) = 3.
    np.testing.assert_allclose(aggregate(TrimmedMean(0.2), scalars(1, 2, 3, 4, 100))[0], [3.0])
    # β = 0.2 of 4 cuts int(0.8) = 0: the plain mean.
    np.testing.assert_allclose(aggregate(TrimmedMean(0.2), scalars(1, 2, 3, 10))[0], [4.0])


def test_trimmed_mean_matches_a_sort_and_slice_formula() -> None:
    rng = np.random.default_rng(1)
    updates = [[rng.normal(size=(2, 3))] for _ in range(10)]
    result = aggregate(TrimmedMean(0.3), updates)
    stacked = np.sort(np.array([u[0] for u in updates]), axis=0)
    np.testing.assert_allclose(result[0], stacked[3:7].mean(axis=0))


def test_trimmed_mean_beta_must_be_below_half() -> None:
    with pytest.raises(ConfigurationError, match=r"\[0, 0.5\)"):
        TrimmedMean(0.5)


# -- Krum, Multi-Krum, Bulyan -------------------------------------------------------------------


def test_krum_by_hand() -> None:
    # f = 1, n = 5: scores use n - f - 2 = 2 neighbours.
    # 0: 1+4=5, 1: 1+1=2, 2: 1+1=2, 3: 1+4=5, 100: large -> Krum keeps update 1 (first of the tie).
    np.testing.assert_allclose(aggregate(KrumMean(1), scalars(0, 1, 2, 3, 100))[0], [1.0])


def test_multi_krum_by_hand_averages_the_kept_updates_with_their_weights() -> None:
    # Best three scores: updates 1 and 2 (score 2), then 0 (score 5, first of the tie with 3).
    result = aggregate(KrumMean(1, 3), scalars(0, 1, 2, 3, 100), [1, 1, 2, 1, 1])
    np.testing.assert_allclose(result[0], [(0 * 1 + 1 * 1 + 2 * 2) / 4])
    # num_selected=None keeps n - f = 4: everything but the outlier.
    result = aggregate(KrumMean(1, None), scalars(0, 1, 2, 3, 100))
    np.testing.assert_allclose(result[0], [1.5])


def reference_krum_scores(points: np.ndarray, f: int) -> np.ndarray:
    n = len(points)
    scores = []
    for i in range(n):
        d = sorted(float(np.sum((points[i] - points[j]) ** 2)) for j in range(n) if j != i)
        scores.append(sum(d[: max(1, n - f - 2)]))
    return np.array(scores)


def test_krum_matches_a_brute_force_reference_on_random_models() -> None:
    rng = np.random.default_rng(2)
    updates = [[rng.normal(size=3), rng.normal(size=(2, 2))] for _ in range(9)]
    flat = np.array([np.concatenate([a.ravel() for a in u]) for u in updates])
    best = int(np.argmin(reference_krum_scores(flat, 2)))
    result = aggregate(KrumMean(2), updates)
    np.testing.assert_allclose(result[0], updates[best][0])
    np.testing.assert_allclose(result[1], updates[best][1])


def test_krum_refuses_fewer_than_2f_plus_3_updates() -> None:
    with pytest.raises(NotEnoughUpdatesError, match="at least 7 updates, got 6"):
        aggregate(KrumMean(2), scalars(*range(6)))
    assert KrumMean(2).min_updates == 7
    # 0..6 with 3 neighbours: 1, 2, 3, 4, 5 all score 1 + 1 + 4 = 6; the first of the tie wins.
    np.testing.assert_allclose(aggregate(KrumMean(2), scalars(*range(7)))[0], [1.0])


def reference_bulyan(points: np.ndarray, f: int) -> np.ndarray:
    remaining = list(range(len(points)))
    chosen = []
    while len(chosen) < len(points) - 2 * f:
        scores = []
        for i in remaining:
            d = sorted(float(np.sum((points[i] - points[j]) ** 2)) for j in remaining if j != i)
            scores.append(sum(d[: max(1, len(remaining) - f - 2)]))
        chosen.append(remaining.pop(int(np.argmin(scores))))
    selected = points[chosen]
    beta = len(chosen) - 2 * f
    out = np.empty(points.shape[1])
    for c in range(points.shape[1]):
        column = selected[:, c]
        closest = sorted(column, key=lambda x: abs(x - np.median(column)))[:beta]
        out[c] = np.mean(closest)
    return out


def test_bulyan_by_hand() -> None:
    # f = 1, n = 7: repeated Krum keeps 0..4, then the β = 3 values nearest the median 2: 1, 2, 3.
    result = aggregate(BulyanMean(1), scalars(0, 1, 2, 3, 4, 5, 100))
    np.testing.assert_allclose(result[0], [2.0])


def test_bulyan_matches_a_reference_on_random_models() -> None:
    rng = np.random.default_rng(3)
    points = rng.normal(size=(11, 5))
    points[:2] += 50.0  # two attackers far away
    result = aggregate(BulyanMean(2), [[p] for p in points])
    np.testing.assert_allclose(result[0], reference_bulyan(points, 2))


def test_bulyan_with_no_attackers_is_the_mean() -> None:
    np.testing.assert_allclose(aggregate(BulyanMean(0), scalars(1, 2, 9))[0], [4.0])


def test_bulyan_refuses_n_below_4f_plus_3_with_a_clear_error() -> None:
    expected = r"BulyanMean\(num_malicious_clients=2\) needs at least 11 updates, got 10"
    with pytest.raises(NotEnoughUpdatesError, match=expected):
        aggregate(BulyanMean(2), scalars(*range(10)))


def test_a_strategy_with_too_small_a_cohort_refuses_before_training() -> None:
    strategy = Strategy(aggregator=BulyanMean(1), min_fit_clients=2)
    ids = [str(i) for i in range(10)]
    with pytest.raises(ConfigurationError, match="needs at least 7 updates per round"):
        strategy.configure_fit(1, [np.zeros(1)], ids[:5], np.random.default_rng(0))
    cohort, _ = strategy.configure_fit(1, [np.zeros(1)], ids, np.random.default_rng(0))
    assert len(cohort) == 10


def test_too_few_results_after_failures_leave_the_model_unchanged(caplog) -> None:
    strategy = Strategy(aggregator=BulyanMean(1))
    outcomes = [(str(i), FitRes([np.array([float(i)])], 1)) for i in range(6)]
    outcomes.append(("6", Failure("6", "timed out", "timeout")))
    with caplog.at_level(logging.WARNING):
        new, *_ = strategy.aggregate_fit(1, [np.zeros(1)], outcomes)
    assert new is None
    assert "needs at least 7 updates, got 6" in caplog.text


def test_robust_aggregators_refuse_bad_settings() -> None:
    for bad in (-1, 1.5, True):
        with pytest.raises(ConfigurationError, match="num_malicious_clients"):
            KrumMean(bad)
        with pytest.raises(ConfigurationError, match="num_malicious_clients"):
            BulyanMean(bad)
    with pytest.raises(ConfigurationError, match="num_selected"):
        KrumMean(0, 0)


# -- q-FFL --------------------------------------------------------------------------------------


def test_qffl_by_hand() -> None:
    # w = 0; updates +1 (loss 1) and −1 (loss 4); q = 1, lr = 0.5 so L = 2.
    # Δw = L·(w − w_k): −2 and 2; Δ_k = F^q·Δw: −2 and 8; h_k = q·F^(q−1)·Δw² + L·F^q: 6 and 12.
    # w_next = 0 − (−2 + 8) / (6 + 12) = −1/3.
    result = aggregate(QFFLMean(1.0, 0.5), scalars(1, -1), [1.0, 4.0])
    np.testing.assert_allclose(result[0], [-1 / 3], rtol=1e-8)


def test_qffl_with_q_zero_is_the_uniform_mean() -> None:
    updates = scalars(1, 2, 9)
    result = aggregate(QFFLMean(0.0, 0.01), updates, [0.5, 3.0, 1.0])
    np.testing.assert_allclose(result[0], [4.0])


# -- through Strategy.aggregate_fit: the documented direct call ---------------------------------


def test_aggregate_fit_called_directly_one_client_is_that_client() -> None:
    global_model = [np.array([1.0, 1.0])]
    for aggregator in (WeightedMean(), Mean(), CoordinateMedian(), TrimmedMean(0.2)):
        strategy = Strategy(aggregator=aggregator)
        new, *_ = strategy.aggregate_fit(
            3, global_model, [("a", FitRes([np.array([2.0, 5.0])], 7))]
        )
        np.testing.assert_allclose(new[0], [2.0, 5.0])


def test_zero_example_clients_take_no_part() -> None:
    global_model = [np.zeros(1)]
    results = [("a", FitRes([np.array([100.0])], 0)), ("b", FitRes([np.array([2.0])], 5))]
    for aggregator in (WeightedMean(), CoordinateMedian(), TrimmedMean(0.2)):
        new, *_ = Strategy(aggregator=aggregator).aggregate_fit(1, global_model, results)
        np.testing.assert_allclose(new[0], [2.0])


def test_all_zero_examples_or_all_failures_leave_the_model_unchanged(caplog) -> None:
    global_model = [np.zeros(1)]
    with caplog.at_level(logging.WARNING):
        new, metrics, *_ = FedAvg().aggregate_fit(1, global_model, [("a", FitRes([np.ones(1)], 0))])
    assert new is None and metrics == {}
    assert "no result with positive weight" in caplog.text
    failures = [(c, Failure(c, "boom")) for c in "abc"]
    for aggregator in (WeightedMean(), CoordinateMedian(), KrumMean(0), BulyanMean(0)):
        new, *_ = Strategy(aggregator=aggregator).aggregate_fit(1, global_model, failures)
        assert new is None


def checked(results, template):
    """Results as the round loop hands them to the strategy: validated at its boundary."""
    instruction = FitIns(template, {})
    return [(cid, validate_result(cid, instruction, result, template)) for cid, result in results]


def test_nan_results_are_refused_and_the_rest_aggregated(caplog) -> None:
    global_model = [np.zeros(2)]
    raw = [
        ("bad", FitRes([np.array([np.nan, 1.0])], 10)),
        ("inf", FitRes([np.array([np.inf, 1.0])], 10)),
        ("good", FitRes([np.array([3.0, 4.0])], 10)),
    ]
    results = checked(raw, global_model)
    for aggregator in (WeightedMean(), CoordinateMedian(), TrimmedMean(0.1)):
        new, *_ = Strategy(aggregator=aggregator).aggregate_fit(1, global_model, results)
        np.testing.assert_allclose(new[0], [3.0, 4.0])
    assert "parameter 0 contains NaN or Inf" in str(results[0][1])
    # With accept_failures=False a refused result stops the round like a failure.
    new, *_ = FedAvg(accept_failures=False).aggregate_fit(1, global_model, results)
    assert new is None


def test_mismatched_shapes_are_refused_at_the_boundary() -> None:
    raw = [("odd", FitRes([np.zeros(3)], 1)), ("ok", FitRes([np.ones(2)], 1))]
    results = checked(raw, [np.zeros(2)])
    new, *_ = FedAvg().aggregate_fit(1, [np.zeros(2)], results)
    np.testing.assert_allclose(new[0], [1.0, 1.0])
    assert "parameter 0 has shape (3,)" in str(results[0][1])


def test_package_exports_the_parts() -> None:
    assert roost.strategy.TrimmedMean is TrimmedMean
