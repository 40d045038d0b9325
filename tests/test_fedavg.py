"""FedAvg against hand-computed numbers, and the metric aggregation hooks."""

from __future__ import annotations

import numpy as np
import pytest

import roost
from roost.core.types import Failure, FitRes


def test_fedavg_is_the_example_weighted_mean_computed_by_hand() -> None:
    global_model = [np.array([0.0, 0.0]), np.array([[1.0]])]
    results = [
        ("a", FitRes([np.array([1.0, 2.0]), np.array([[3.0]])], 1, {})),
        ("b", FitRes([np.array([4.0, 8.0]), np.array([[6.0]])], 2, {})),
    ]
    new, *_ = roost.FedAvg().aggregate_fit(1, global_model, results)
    # (1*[1,2] + 2*[4,8]) / 3 = [3, 6];  (1*3 + 2*6) / 3 = 5
    np.testing.assert_allclose(new[0], [3.0, 6.0])
    np.testing.assert_allclose(new[1], [[5.0]])


def test_fedavg_keeps_float32_dtype_and_is_precise() -> None:
    global_model = [np.zeros(3, np.float32)]
    results = [(str(i), FitRes([np.full(3, i, np.float32)], i + 1, {})) for i in range(100)]
    new, *_ = roost.FedAvg().aggregate_fit(1, global_model, results)
    expected = sum(i * (i + 1) for i in range(100)) / sum(i + 1 for i in range(100))
    assert new[0].dtype == np.float32
    np.testing.assert_allclose(new[0], expected, rtol=1e-6)


def test_zero_example_clients_do_not_count_and_all_zero_keeps_model() -> None:
    global_model = [np.array([1.0])]
    results = [("a", FitRes([np.array([5.0])], 0, {})), ("b", FitRes([np.array([3.0])], 4, {}))]
    new, *_ = roost.FedAvg().aggregate_fit(1, global_model, results)
    np.testing.assert_allclose(new[0], [3.0])
    new, *_ = roost.FedAvg().aggregate_fit(1, global_model, results[:1])
    assert new is None


def test_failures_follow_accept_failures() -> None:
    global_model = [np.array([0.0])]
    outcomes = [("a", FitRes([np.array([2.0])], 1, {})), ("b", Failure("b", "boom"))]
    new, *_ = roost.FedAvg(accept_failures=True).aggregate_fit(1, global_model, outcomes)
    np.testing.assert_allclose(new[0], [2.0])
    new, *_ = roost.FedAvg(accept_failures=False).aggregate_fit(1, global_model, outcomes)
    assert new is None


def test_fit_metrics_aggregation_fn_receives_num_examples_and_metrics() -> None:
    seen = []

    def aggregate(pairs):
        seen.extend(pairs)
        return {"mean_score": sum(n * m["score"] for n, m in pairs) / sum(n for n, _ in pairs)}

    strategy = roost.FedAvg(fit_metrics_aggregation_fn=aggregate)
    results = [
        ("a", FitRes([np.array([0.0])], 1, {"score": 1.0})),
        ("b", FitRes([np.array([0.0])], 3, {"score": 5.0})),
    ]
    _, metrics, *_ = strategy.aggregate_fit(1, [np.array([0.0])], results)
    assert seen == [(1, {"score": 1.0}), (3, {"score": 5.0})]
    assert metrics == {"mean_score": pytest.approx(4.0)}


def test_distributed_loss_is_example_weighted() -> None:
    from roost.core.types import EvaluateRes

    outcomes = [("a", EvaluateRes(1.0, 1, {})), ("b", EvaluateRes(4.0, 3, {}))]
    loss, _ = roost.FedAvg().aggregate_evaluate(1, outcomes)
    assert loss == pytest.approx((1.0 * 1 + 4.0 * 3) / 4)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fraction_fit": 1.5}, "fraction_fit"),
        ({"fraction_evaluate": -0.1}, "fraction_evaluate"),
        ({"min_fit_clients": 0}, "min_fit_clients"),
        ({"fraction_fit": 0.0}, "fraction_fit"),
    ],
)
def test_bad_strategy_settings_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(roost.ConfigurationError, match=message):
        roost.FedAvg(**kwargs)
