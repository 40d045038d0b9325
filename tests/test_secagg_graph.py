"""The SecAgg+ graph: k-regular, symmetric, random ring order; defaults that grow like log n."""

from __future__ import annotations

import random

import pytest

from roost.secagg import SecAggConfigError, SecAggParameters, default_parameters
from roost.secagg.graph import harary_graph, is_connected, random_graph, smallest_secure_threshold


@pytest.mark.parametrize(
    ("n", "k"), [(5, 2), (10, 4), (10, 3), (11, 6), (20, 19), (21, 20), (7, 6)]
)
def test_harary_graphs_are_k_regular_and_symmetric(n: int, k: int) -> None:
    graph = harary_graph(list(range(1, n + 1)), k)
    assert set(graph) == set(range(1, n + 1))
    for node, neighbours in graph.items():
        assert len(neighbours) == k
        assert node not in neighbours
        assert all(node in graph[other] for other in neighbours)
    assert is_connected(graph, graph.keys())


def test_degree_n_minus_1_is_the_complete_graph_of_plain_secagg() -> None:
    for n in (5, 6):
        graph = random_graph(range(1, n + 1), n - 1)
        assert all(
            neighbours == set(range(1, n + 1)) - {node} for node, neighbours in graph.items()
        )


def test_the_ring_order_is_a_random_permutation() -> None:
    graphs = {tuple(sorted(random_graph(range(1, 41), 4)[1])) for _ in range(10)}
    assert len(graphs) > 1  # node 1's neighbours change from one draw to the next
    seeded = [random_graph(range(1, 41), 4, random.Random(3).shuffle) for _ in range(2)]
    assert seeded[0] == seeded[1]


@pytest.mark.parametrize(
    ("n", "params", "message"),
    [
        (1, SecAggParameters(1, 2), "at least 2 clients"),
        (10, SecAggParameters(10, 6), r"degree 10 must be in \[1, 9\]"),
        (11, SecAggParameters(3, 3), "both odd"),
        (10, SecAggParameters(4, 2), r"threshold 2 must be in \[3, 5\]"),
        (10, SecAggParameters(4, 6), r"threshold 6 must be in \[3, 5\]"),
    ],
)
def test_impossible_or_insecure_parameters_are_refused(n, params, message) -> None:
    with pytest.raises(SecAggConfigError, match=message):
        params.check(n)


def test_default_threshold_is_the_smallest_majority_of_holders() -> None:
    for degree in (1, 2, 3, 4, 28, 49):
        threshold = smallest_secure_threshold(degree)
        assert threshold > (degree + 1) / 2 >= threshold - 1
        assert threshold >= 2


def test_default_degree_is_complete_for_small_cohorts_and_logarithmic_for_large() -> None:
    assert default_parameters(5) == SecAggParameters(4, 3)
    assert default_parameters(20).degree == 19
    degrees = {n: default_parameters(n).degree for n in (100, 1000, 100_000)}
    assert degrees[100] < 99
    assert degrees[100] <= degrees[1000] <= degrees[100_000] < 60
    for n, degree in degrees.items():
        assert default_parameters(n).threshold == smallest_secure_threshold(degree)
        default_parameters(n).check(n)
    # More dropouts call for more neighbours.
    assert default_parameters(1000, dropout_rate=0.3).degree > degrees[1000]


def test_connectivity_of_induced_subgraphs() -> None:
    ring = harary_graph([1, 2, 3, 4, 5, 6], 2)
    assert is_connected(ring, {1, 2, 3})
    assert not is_connected(ring, {1, 2, 4, 5})
    assert not is_connected(ring, set())
