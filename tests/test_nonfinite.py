"""Non-finite and overflowing values from clients: rejected, averaged safely, never fatal."""

from __future__ import annotations

import json
import logging
import warnings

import numpy as np
import pytest

import roost
from roost.core.means import RunningMean, weighted_mean
from roost.core.types import EvaluateIns, EvaluateRes, Failure, FitIns, FitRes
from roost.core.validation import validate_result
from roost.metrics import weighted_average

HUGE_LOSS = 1e300  # finite, but times a few examples it leaves the float range
MANY_EXAMPLES = 10**9


class Client(roost.Client):
    """Partition 0 is `behaviour`; the others are honest: they move the model by 1."""

    def __init__(self, partition_id: int, behaviour: str) -> None:
        self.partition_id = partition_id
        self.behaviour = behaviour if partition_id == 0 else "honest"

    def get_parameters(self, config):
        return [np.zeros(3)]

    def fit(self, parameters, config):
        if self.behaviour == "nan-metric":
            return [p + 1 for p in parameters], 10, {"accuracy": float("nan")}
        if self.behaviour == "overflowing-update":
            return [np.full(3, 1e308)], MANY_EXAMPLES, {}
        return [p + 1 for p in parameters], 10, {"accuracy": 0.5}

    def evaluate(self, parameters, config):
        if self.behaviour == "inf-metric":
            return 1.0, 10, {"accuracy": float("inf")}
        if self.behaviour == "overflowing-loss":
            return HUGE_LOSS, MANY_EXAMPLES, {"accuracy": HUGE_LOSS}
        return 1.0, 10, {"accuracy": 0.5}


def run(behaviour: str, tmp_path, num_rounds: int = 2) -> roost.History:
    strategy = roost.FedAvg(
        initial_parameters=[np.zeros(3)],
        min_available_clients=3,
        fit_metrics_aggregation_fn=weighted_average,
        evaluate_metrics_aggregation_fn=weighted_average,
    )
    return roost.run_simulation(
        lambda context: Client(context.partition_id, behaviour),
        num_clients=3,
        strategy=strategy,
        config=roost.ServerConfig(num_rounds=num_rounds),
        seed=0,
        out_dir=tmp_path,
    )


@pytest.mark.parametrize("behaviour", ["nan-metric", "inf-metric"])
def test_a_non_finite_metric_is_that_clients_failure_and_outputs_are_written(behaviour, tmp_path):
    history = run(behaviour, tmp_path)
    record = history.rounds[-1]
    if behaviour == "nan-metric":
        assert (record.fit_results, record.fit_failures, record.failed_clients) == (2, 1, ["0"])
        # The honest clients' update alone: +1 per round.
        np.testing.assert_array_equal(history.parameters[0], np.full(3, 2.0))
    else:
        assert (record.evaluate_results, record.evaluate_failures) == (2, 1)
    saved = json.loads((tmp_path / "history.json").read_text())
    assert saved["rounds"][-1]["fit_results"] == record.fit_results
    assert (tmp_path / "model.npz").exists()


def test_an_overflowing_loss_is_averaged_without_overflow_and_written(tmp_path):
    history = run("overflowing-loss", tmp_path)
    [(_, loss)] = history.losses_distributed[-1:]
    assert np.isfinite(loss) and loss == pytest.approx(HUGE_LOSS, rel=1e-6)
    assert history.metrics_distributed["accuracy"][-1][1] == pytest.approx(HUGE_LOSS, rel=1e-6)
    saved = json.loads((tmp_path / "history.json").read_text())
    assert saved["losses_distributed"][-1][1] == pytest.approx(HUGE_LOSS, rel=1e-6)


def test_an_aggregate_that_overflows_keeps_the_model_for_that_round(tmp_path, caplog):
    """Each update is finite, their example-weighted sum is not: the round keeps the previous
    model with a warning, the run goes on, and the outputs are written."""
    with caplog.at_level(logging.WARNING, logger="roost"), warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # roost's warning, not NumPy's, says it
        history = run("overflowing-update", tmp_path)
    np.testing.assert_array_equal(history.parameters[0], np.zeros(3))
    assert "aggregated model contains NaN or Inf" in caplog.text
    assert len(history.rounds) == 2
    assert (tmp_path / "model.npz").exists() and (tmp_path / "history.json").exists()


def test_validation_refuses_non_finite_metric_values():
    fit = FitIns([np.zeros(2)], {})
    bad = FitRes([np.zeros(2)], 1, {"loss": float("nan")})
    outcome = validate_result("c", fit, bad, fit.parameters)
    assert isinstance(outcome, Failure) and outcome.kind == "invalid"
    assert "metrics['loss'] is nan; it must be finite" in outcome.reason
    evaluate = EvaluateIns([np.zeros(2)], {})
    outcome = validate_result("c", evaluate, EvaluateRes(1.0, 1, {"x": float("-inf")}), None)
    assert isinstance(outcome, Failure) and "must be finite" in outcome.reason
    ok = validate_result("c", evaluate, EvaluateRes(1.0, 1, {"x": 2.5, "name": "a"}), None)
    assert isinstance(ok, EvaluateRes) and ok.metrics == {"x": 2.5, "name": "a"}


def test_running_mean_matches_the_plain_mean_and_cannot_overflow():
    pairs = [(3, 1.0), (1, 5.0), (0, 1e9), (4, -2.0)]
    assert weighted_mean(pairs) == pytest.approx((3 - 8 + 5) / 8)
    assert weighted_mean([]) is None and weighted_mean([(0, 1.0)]) is None
    running = RunningMean()
    for value in (1.7e308, 1.7e308, -1.7e308):
        running.add(value, 10**12)
    assert np.isfinite(running.mean)
    assert weighted_average([(10**12, {"a": 1e308}), (10**12, {"a": 1e308})]) == {"a": 1e308}
