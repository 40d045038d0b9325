"""What a private run releases: under central DP nothing about the cohorts but noised models and ε.

Issue 22, hole 1: a canary client's secret participation must not show in the history, its files,
the summary table, the trackers or the logs; only the DP mechanism's own measurements pass.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

from roost.cli.report import history_table
from roost.client.secure_aggregation import _encode
from roost.core.types import FitRes
from roost.engines.sequential import SequentialEngine
from roost.errors import ConfigurationError
from roost.plotting import history_csv
from roost.privacy import FixedSizeSampler, PoissonSampler
from roost.secagg import WeightedQuantizer
from roost.server.loop import ServerConfig, run_rounds
from roost.simulation import run_simulation
from roost.strategy import AdaptiveClipL2, DPFedAvg, FedAvg, SecureAggregation
from roost.tracking.base import round_values

NUM_CLIENTS = 12
ROUNDS = 3


class CanaryClient:
    """Client 0 is the canary: it says so in its metrics and fails its evaluations."""

    def __init__(self, partition_id: int) -> None:
        self.partition_id = partition_id

    def fit(self, parameters, config):
        if self.partition_id == 1:
            raise RuntimeError("client one always fails")
        update = [p + np.float32(0.1) for p in parameters]
        return update, 7, {"canary": float(self.partition_id == 0)}

    def evaluate(self, parameters, config):
        return float(self.partition_id == 0), 3, {"canary": float(self.partition_id == 0)}


def canary_fn(context):
    return CanaryClient(context.partition_id)


def summed(pairs):
    return {"canary": sum(metrics["canary"] for _, metrics in pairs)}


def private_strategy(**kwargs) -> DPFedAvg:
    options = {
        "noise_multiplier": 1.0,
        "clip_norm": 1.0,
        "expected_clients": 6,
        "num_clients": NUM_CLIENTS,
        "initial_parameters": [np.zeros(3, np.float32)],
        "fit_metrics_aggregation_fn": summed,
        "evaluate_metrics_aggregation_fn": summed,
        # An un-noised clip rate before CentralDP: its measurements are client statistics too.
        "update_transforms": [AdaptiveClipL2(initial_norm=1.0)],
    }
    return DPFedAvg(**{**options, **kwargs})


def test_central_dp_withholds_client_metrics_counts_and_failures(caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="roost")
    transport = SequentialEngine(canary_fn, NUM_CLIENTS)
    # A research seed, so that the cohorts (q = 1/2) surely include the failing client.
    config = ServerConfig(num_rounds=ROUNDS)
    history = run_rounds(private_strategy(seed=3), transport, config, seed=0)

    assert history.metrics_distributed_fit == {} and history.metrics_distributed == {}
    assert history.losses_distributed == []
    assert set(history.measurements) == {"clip_norm", "epsilon", "delta"}  # no unclipped_share
    released = history.to_json()
    assert "canary" not in released and "fit_results" not in released
    assert history.to_dict()["rounds"] == [
        {"server_round": r, "withheld": True} for r in range(1, ROUNDS + 1)
    ]
    header, *rows = history_csv(history).splitlines()
    assert header.startswith("round,fit_results,fit_failures,evaluate_results,evaluate_failures")
    assert all(row.split(",")[1:5] == ["", "", "", ""] for row in rows)
    assert all(set(round_values(history, r)) == {"measured_" + m for m in history.measurements}
               for r in range(1, ROUNDS + 1))  # fmt: skip
    cells = [cell for column in history_table(history).columns for cell in column._cells]
    assert cells.count("withheld") == 2 * ROUNDS
    # Logs at INFO and above say nothing of cohorts, counts or failures (DEBUG keeps them).
    shown = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    leaks = [m for m in shown if "sampled" in m or "received" in m or "always fails" in m]
    assert leaks == []
    assert any("always fails" in r.getMessage() for r in caplog.records)  # at DEBUG


def test_a_plain_run_still_releases_what_it_did() -> None:
    strategy = private_strategy(noise_multiplier=0.0)
    assert strategy.withholds_client_statistics  # σ = 0 is no privacy, but the same releases
    plain = run_rounds(
        FedAvg(  # the same clients without central DP: everything is recorded
            fraction_fit=0.5,
            min_fit_clients=2,
            initial_parameters=[np.zeros(3, np.float32)],
            fit_metrics_aggregation_fn=summed,
        ),
        SequentialEngine(canary_fn, NUM_CLIENTS),
        ServerConfig(num_rounds=2),
        seed=0,
    )
    assert not plain.rounds[0].withheld and plain.rounds[0].fit_results > 0
    assert "canary" in plain.metrics_distributed_fit


def test_central_dp_refuses_what_would_reveal_participation() -> None:
    with pytest.raises(ConfigurationError, match=r"accept_failures=False .* reveals who took part"):
        private_strategy(accept_failures=False)
    with pytest.raises(ConfigurationError, match="drop client_metrics"):
        run_simulation(canary_fn, NUM_CLIENTS, strategy=private_strategy(), client_metrics=True)


# -- hole 4: the accountant's N is the population really sampled from ---------------------------


def test_fixed_size_accounting_refuses_a_population_it_was_not_told() -> None:
    # 10 real clients, num_clients=100: ε would have been reported as 5.89 where 15.57 was spent.
    strategy = private_strategy(
        sampling="fixed", expected_clients=5, num_clients=100, update_transforms=[]
    )
    transport = SequentialEngine(canary_fn, 10)
    with pytest.raises(ConfigurationError, match=r"told num_clients = 100.*to 10, the clients"):
        run_rounds(strategy, transport, ServerConfig(num_rounds=1), seed=0)


def test_samplers_check_the_available_clients_against_the_accounted_population() -> None:
    ids = [str(k) for k in range(10)]
    rng = np.random.default_rng(0)
    fixed = FixedSizeSampler(3, population=10)
    assert len(fixed.sample(ids, 3, rng, fixed.init())[0]) == 3
    for wrong in (9, 11):  # fewer: a higher rate than accounted; more: N is not what it was told
        with pytest.raises(ConfigurationError, match=f"told num_clients = {wrong}"):
            FixedSizeSampler(3, population=wrong).sample(ids, 3, rng, {"draws": 0})
    # Poisson's ε depends on q alone: absent clients are fine, unaccounted extra ones are not.
    PoissonSampler(0.5, population=12).sample(ids, 5, rng, {"draws": 0})
    with pytest.raises(ConfigurationError, match="told num_clients = 9"):
        PoissonSampler(0.5, population=9).sample(ids, 5, rng, {"draws": 0})
    with pytest.raises(ConfigurationError, match="population must be an int"):
        PoissonSampler(0.5, population=0)
    strategy = private_strategy(sampling="fixed", expected_clients=5, update_transforms=[])
    assert strategy.sampler.population == NUM_CLIENTS


# -- hole 5: quantization under SecAgg+ keeps central DP's sensitivity ----------------------------


def test_a_quantized_contribution_stays_within_the_clip_norm() -> None:
    # Coarse on purpose (16 bits, 10 clients): rounding could add up to √d·step = 0.043 to the
    # norm of an update clipped to C = 1, and at C exactly it does so in most draws.
    quant = {"clip": 1.0, "max_weight": 1.0, "max_clients": 10, "bits": 16, "uniform": True}
    quantizer = WeightedQuantizer(1.0, 1.0, 10, 16)
    size, rng = 20_000, np.random.default_rng(0)
    for _ in range(5):
        update = rng.normal(size=size)
        result = FitRes([update], 5, {})
        encoded = _encode(result, [np.zeros(size)], {**quant, "clip_norm": 1.0})
        contribution = quantizer.values.dequantize_sum(encoded[:-1], 1)
        assert np.linalg.norm(contribution) <= 1.0


def test_uniform_weights_size_the_quantizer_for_weight_one() -> None:
    secure, dp = SecureAggregation(), private_strategy(update_transforms=[])
    assert secure.quantizer(dp, 1000).max_weight == 1.0
    assert secure.quantizer(FedAvg(), 1000).max_weight == 10_000
    # The formal worst case of d = 1e6 values, 1000 clients, 32 bits: what rounding can add to
    # an update's norm, weight 1 against max_weight 1e4 (which took ε from 1.34 to 163).
    assert secure.quantizer(dp, 1000).rounding_norm(10**6) == pytest.approx(4.66e-4, rel=1e-3)
    assert secure.quantizer(FedAvg(), 1000).rounding_norm(10**6) == pytest.approx(4.66, rel=1e-3)
    coarse = private_strategy(
        sampling="fixed",
        clip_norm=0.05,
        update_transforms=[],
        secure_aggregation=SecureAggregation(bits=8),
    )
    with pytest.raises(ConfigurationError, match=r"not less than the clip norm 0\.05; raise"):
        run_rounds(coarse, SequentialEngine(canary_fn, NUM_CLIENTS), ServerConfig(1), seed=0)
