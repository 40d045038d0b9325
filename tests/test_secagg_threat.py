"""Graph parameters for stated dropout and collusion fractions (issue 22, hole 7)."""

from __future__ import annotations

import random

import numpy as np
import pytest
from scipy.stats import hypergeom

from roost.errors import ConfigurationError
from roost.secagg import (
    Phase,
    Quantizer,
    SecAggConfigError,
    SecAggParameters,
    ThreatModel,
    default_parameters,
    run_in_memory,
)
from roost.secagg.graph import harary_graph, is_connected
from roost.secagg.threat import _hypergeometric_tail
from roost.strategy import SecureAggregation

SETTINGS = [(0.1, 0.05), (0.1, 0.0), (0.05, 0.1), (0.2, 0.1)]


@pytest.mark.parametrize(("population", "marked", "draws"), [(999, 50, 106), (99_999, 10_000, 146)])
def test_tails_agree_with_scipys_hypergeometric(population, marked, draws) -> None:
    for at_least in (0, 5, 20, 40, 60):
        expected = hypergeom.sf(at_least - 1, population, marked, draws)
        got = _hypergeometric_tail(population, marked, draws, at_least)
        assert got == pytest.approx(expected, rel=1e-6, abs=1e-300)


@pytest.mark.parametrize(("dropouts", "corrupt"), SETTINGS)
@pytest.mark.parametrize("num_clients", [20, 100, 1000, 100_000])
def test_the_chosen_setting_meets_the_bound_and_the_next_smaller_does_not(
    num_clients, dropouts, corrupt
) -> None:
    threat = ThreatModel(dropouts, corrupt, failure_log2=40)
    chosen = threat.parameters(num_clients)
    k, t = chosen.degree, chosen.threshold
    chosen.check(num_clients)  # a setting the server accepts, so 2t > k + 1 as clients demand
    assert threat.failure_probability(num_clients, chosen) <= 2.0**-40
    # The threshold is the least that passes with this k, and no even k below passes at all.
    if t - 1 > (k + 1) // 2:
        assert threat.failure_probability(num_clients, SecAggParameters(k, t - 1)) > 2.0**-40
    for smaller in range(max(2, k - 6), k, 2):
        assert all(
            threat.failure_probability(num_clients, SecAggParameters(smaller, u)) > 2.0**-40
            for u in range((smaller + 1) // 2 + 1, smaller + 1)
        )


def test_colluders_raise_the_threshold_above_half_the_holders() -> None:
    honest = ThreatModel(0.1, 0.0).parameters(1000)
    colluding = ThreatModel(0.1, 0.05).parameters(1000)
    assert colluding.degree > honest.degree
    # Each client's k + 1 holders must outnumber twice the colluders the bound allows.
    assert 2 * colluding.threshold - colluding.degree - 1 > 1
    # k grows like log n, not like n.
    assert ThreatModel().parameters(1_000_000).degree < 2 * ThreatModel().parameters(1000).degree


@pytest.mark.parametrize(("dropouts", "corrupt"), SETTINGS)
def test_random_rings_with_the_worst_fractions_keep_every_guarantee(dropouts, corrupt) -> None:
    """Draw rings as the server does (test randomness here, not the protocol's): every client
    has fewer than 2t − k − 1 colluding neighbours, t live holders, and the honest survivors
    stay connected."""
    num_clients = 300
    threat = ThreatModel(dropouts, corrupt)
    parameters = threat.parameters(num_clients)
    k, t = parameters.degree, parameters.threshold
    chooser = random.Random(7)
    nodes = list(range(num_clients))
    for _ in range(20):
        order = nodes[:]
        chooser.shuffle(order)
        graph = harary_graph(order, k)
        marked = chooser.sample(nodes, round(num_clients * (dropouts + corrupt)))
        corrupt_set = set(marked[: round(num_clients * corrupt)])
        dropped = set(marked[round(num_clients * corrupt) :])
        for node in nodes:
            assert len(graph[node] & corrupt_set) <= 2 * t - k - 2
            assert len(graph[node] - dropped - {node}) >= t
        assert is_connected(graph, set(nodes) - corrupt_set - dropped)


def test_a_round_with_the_stated_dropouts_sums_exactly() -> None:
    num_clients = 40
    parameters = ThreatModel(0.1, 0.05).parameters(num_clients)
    assert parameters.degree < num_clients - 1  # a sparse graph, not plain SecAgg
    quantizer = Quantizer(clip=1.0, max_clients=num_clients)
    data = np.random.default_rng(0).uniform(-1, 1, size=(num_clients, 30))
    inputs = {f"c{i}": quantizer.quantize(row) for i, row in enumerate(data)}
    gone = random.Random(1).sample(sorted(inputs), 4)
    result = run_in_memory(inputs, parameters=parameters, silent={Phase.MASKED_INPUT: gone}).result
    assert set(result.survivors) == set(inputs) - set(gone)
    expected = sum(inputs[c] for c in result.survivors)
    assert np.array_equal(result.total, expected)


def test_secure_aggregation_takes_a_threat_model_and_says_what_it_guarantees() -> None:
    threat = ThreatModel(0.1, 0.05)
    secure = SecureAggregation(threat=threat)
    assert secure.graph(1000) == threat.parameters(1000)
    line = secure.describe(1000)
    assert (
        "106 neighbours each, threshold 68 (Bell et al. 2020 for up to 10% dropouts (100)" in line
    )
    assert "except with probability 2^-40" in line
    # Today's default stays the default, and says that it assumes no colluders.
    assert SecureAggregation().graph(50) == default_parameters(50)
    assert "no colluding clients assumed" in SecureAggregation().describe(50)
    assert "unless 1 of its 28 neighbours collude" in SecureAggregation().describe(50)
    with pytest.raises(ConfigurationError, match="give threat, or degree and threshold"):
        SecureAggregation(threat=threat, threshold=5)
    with pytest.raises(ConfigurationError, match=r"threat must be a roost\.secagg\.ThreatModel"):
        SecureAggregation(threat=0.1)


@pytest.mark.parametrize(
    ("kwargs", "num_clients", "message"),
    [
        ({"dropout_fraction": 0.3, "corrupt_fraction": 0.2}, 5, "no threshold protects 5"),
        ({"dropout_fraction": 1.0}, 10, "dropout_fraction must be a number in"),
        ({"corrupt_fraction": -0.1}, 10, "corrupt_fraction must be a number in"),
        ({"failure_log2": 0}, 10, "failure_log2 must be an int in"),
        ({}, 1, "at least 2 clients"),
    ],
)
def test_impossible_or_malformed_threats_are_refused(kwargs, num_clients, message) -> None:
    with pytest.raises(SecAggConfigError, match=message):
        ThreatModel(**kwargs).parameters(num_clients)
