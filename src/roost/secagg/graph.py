"""Who masks with whom: the SecAgg+ communication graph and its default parameters.

Plain SecAgg (Bonawitz et al., CCS 2017) pairs every client with every other: O(n) keys, shares
and masks per client. SecAgg+ (Bell et al., CCS 2020) replaces the complete graph with a random
k-regular graph, k = O(log n): each client agrees masks with, and secret-shares its keys among,
only its k neighbours. Here the graph is a Harary graph (clients on a ring, each joined to its k/2
nearest on either side, plus the opposite client when k is odd) whose ring order is a random
permutation drawn by the server from the OS CSPRNG. With k = n − 1 it is the complete graph, so
plain SecAgg is the same code path.

A client's secrets are shared among its *holders*: its neighbours and itself (k + 1 nodes).
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from roost.secagg.errors import SecAggConfigError

Graph = Mapping[int, frozenset[int]]


@dataclass(frozen=True)
class SecAggParameters:
    """Neighbours per client (`degree`, k) and shares needed to rebuild a secret (`threshold`, t).

    Each client has k + 1 holders of its secrets (its neighbours and itself). Security: the server
    asks every holder once, for either the share of a client's self-mask seed (if the client
    survived) or of its masking key (if it dropped), never both; with t > (k + 1)/2 no server can
    collect t shares of both secrets of one client, which is what would reveal its input, even
    by telling different holders different stories about who dropped. Dropout tolerance: a round
    completes while every needed secret still has t live holders, i.e. at most k + 1 − t of any
    client's holders drop. To also withstand c colluding clients among the holders, raise t above
    (k + 1 + c)/2, at the cost of dropout tolerance.
    """

    degree: int
    threshold: int

    def check(self, num_clients: int) -> None:
        """Refuse parameters that cannot work for a cohort of `num_clients`."""
        if num_clients < 2:
            raise SecAggConfigError("secure aggregation needs at least 2 clients in the cohort")
        if not 1 <= self.degree <= num_clients - 1:
            raise SecAggConfigError(
                f"degree {self.degree} must be in [1, {num_clients - 1}] for {num_clients} clients"
            )
        if self.degree % 2 and num_clients % 2 and self.degree != num_clients - 1:
            raise SecAggConfigError(
                f"no {self.degree}-regular graph has {num_clients} nodes (both odd); use an even "
                "degree"
            )
        holders = self.degree + 1
        if not holders // 2 + 1 <= self.threshold <= holders:
            raise SecAggConfigError(
                f"threshold {self.threshold} must be in [{holders // 2 + 1}, {holders}]: more than "
                f"half of the {holders} holders of each secret (see SecAggParameters)"
            )


def smallest_secure_threshold(degree: int) -> int:
    """floor((k + 1)/2) + 1: the smallest t above half of a client's k + 1 holders (at least 2)."""
    return max(2, (degree + 1) // 2 + 1)


def default_parameters(
    num_clients: int, *, dropout_rate: float = 0.1, failure_probability: float = 1e-6
) -> SecAggParameters:
    """The smallest degree k (and its smallest secure threshold) that survives random dropouts.

    Assuming each client drops independently with `dropout_rate`, k is the smallest (even)
    degree for which, by a union bound over the n clients, both
    - some client's k + 1 holders keep fewer than t alive (its secret is lost), and
    - some surviving client has no surviving neighbour (its input would be exposed: the server
      aborts rather than unmask it)
    happen with probability at most `failure_probability`. k grows like log n (e.g. 28 for 50
    clients, 34 for 1000, 44 for 100000 at the defaults). Where no smaller k suffices, the graph
    is complete (k = n − 1), which is plain SecAgg. No client is assumed to collude with the
    server; `roost.secagg.ThreatModel` chooses k and t for colluders too.
    """
    if not isinstance(num_clients, int) or num_clients < 2:
        raise SecAggConfigError("secure aggregation needs at least 2 clients in the cohort")
    if not 0 <= dropout_rate < 1 or not 0 < failure_probability < 1:
        raise SecAggConfigError("dropout_rate must be in [0, 1), failure_probability in (0, 1)")
    for degree in range(2, num_clients - 1, 2):
        threshold = smallest_secure_threshold(degree)
        lost = _binomial_tail_below(degree + 1, threshold, 1 - dropout_rate)
        isolated = dropout_rate**degree
        if num_clients * max(lost, isolated) <= failure_probability:
            return SecAggParameters(degree, threshold)
    degree = num_clients - 1
    return SecAggParameters(degree, smallest_secure_threshold(degree))


def harary_graph(ring_order: Sequence[int], degree: int) -> dict[int, frozenset[int]]:
    """The k-regular Harary graph on nodes placed around a ring in `ring_order`."""
    n = len(ring_order)
    if len(set(ring_order)) != n:
        raise SecAggConfigError("node ids of a graph must be distinct")
    SecAggParameters(degree, smallest_secure_threshold(degree)).check(n)
    offsets = set(range(1, degree // 2 + 1)) | {-o for o in range(1, degree // 2 + 1)}
    if degree % 2:
        offsets.add(n // 2)
    if degree == n - 1:
        offsets = set(range(1, n))
    return {
        node: frozenset(ring_order[(position + o) % n] for o in offsets)
        for position, node in enumerate(ring_order)
    }


def random_graph(
    node_ids: Iterable[int],
    degree: int,
    shuffle: Callable[[list[int]], None] | None = None,
) -> dict[int, frozenset[int]]:
    """A Harary graph over `node_ids` in a random ring order (OS CSPRNG unless `shuffle` given)."""
    order = list(node_ids)
    (shuffle or secrets.SystemRandom().shuffle)(order)
    return harary_graph(order, degree)


def is_connected(graph: Graph, nodes: Collection[int]) -> bool:
    """Whether the subgraph of `graph` induced by `nodes` is connected (empty counts as not)."""
    remaining = set(nodes)
    if not remaining:
        return False
    frontier = [remaining.pop()]
    while frontier:
        node = frontier.pop()
        reached = graph[node] & remaining
        remaining -= reached
        frontier.extend(reached)
    return not remaining


def _binomial_tail_below(trials: int, successes: int, probability: float) -> float:
    """P[Binomial(trials, probability) < successes]."""
    return sum(
        math.comb(trials, s) * probability**s * (1 - probability) ** (trials - s)
        for s in range(successes)
    )
