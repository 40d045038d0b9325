"""Graph parameters for a stated threat: dropouts, colluding clients and a failure probability.

`default_parameters` (in `graph`) assumes clients drop independently and none collude with the
server. `ThreatModel` follows Bell et al. (CCS 2020, "Secure Single-Server Aggregation with
(Poly)Logarithmic Overhead") instead: of the n clients of a round at most a fraction δ_d drop out
and at most a fraction γ collude with the server, and every guarantee below must hold except with
probability 2^-σ. As in the paper, the neighbourhood size k and the threshold t are the least that
pass tail bounds on random neighbourhoods, summed over all clients (a union bound).

Why the neighbourhoods are random. The server draws the ring order of the Harary graph from the
OS CSPRNG, so each client's k neighbours are a uniformly random k-subset of the other n − 1.
Who colludes and who drops is fixed before that draw; then the number X of colluders and Y of
dropouts among a client's neighbours are hypergeometric (n − 1 clients, γn or δ_d·n marked, k
drawn). The server must draw the ring honestly: one that hands a client only colluding neighbours
defeats any threshold, and no client can see the whole graph to tell.

What must hold, for every client (and the arithmetic that keeps it true):
- Privacy against a server that lies about who dropped: it asks each of a client's k + 1 holders
  for one share, the colluders for both, so it rebuilds both secrets of that client only if
  X + (k + 1) >= 2t. Needed: X <= 2t − k − 2.
- Completion: a dropped client's masking key needs t live holders among its k neighbours, and a
  survivor's seed t among its k + 1 holders. Needed: k − Y >= t (Y counting the other dropouts),
  and k + 1 − Y >= t for a survivor.
- No partial sums: the honest survivors' graph stays connected once the δ_d·n + γn dropped or
  colluding clients are removed (else the server, with the colluders' masks, could learn the sum
  of a part). In the ring Harary graph with k/2 neighbours on each side, that needs two disjoint
  runs of k/2 removed clients around the ring; at most n²/2 pairs of runs, each removed with
  probability C(n − k, R − k)/C(n, R) for R removed clients.
The three failure probabilities, each summed over the n clients, must add up to at most 2^-σ.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from roost.secagg.errors import SecAggConfigError
from roost.secagg.graph import SecAggParameters


@dataclass(frozen=True)
class ThreatModel:
    """Who may misbehave in a round, and how rarely the guarantees may fail.

    Args:
        dropout_fraction: δ_d: at most this share of a round's clients drop out (colluders that
            refuse to answer count here too).
        corrupt_fraction: γ: at most this share of a round's clients collude with the server.
            Both shares are rounded up to whole clients: 10 % of 5 clients allows one.
        failure_log2: σ: privacy, completion and connectivity all hold except with probability
            2^-σ per round (Bell et al. use 40).
    """

    dropout_fraction: float = 0.1
    corrupt_fraction: float = 0.05
    failure_log2: int = 40

    def __post_init__(self) -> None:
        for name in ("dropout_fraction", "corrupt_fraction"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
                raise SecAggConfigError(f"{name} must be a number in [0, 1), got {value!r}")
        sigma = self.failure_log2
        if isinstance(sigma, bool) or not isinstance(sigma, int) or not 1 <= sigma <= 128:
            raise SecAggConfigError(f"failure_log2 must be an int in [1, 128], got {sigma!r}")

    def parameters(self, num_clients: int) -> SecAggParameters:
        """An even k (with its least t) that meets every guarantee for `num_clients`.

        k is found by doubling, then bisection: never a k that fails, and where the bounds
        shrink with k (as they do, up to rounding) the least that passes. Falls back to the
        complete graph (plain SecAgg) when no sparser graph passes; raises SecAggConfigError
        when not even that does (too many dropouts or colluders).
        """
        if isinstance(num_clients, bool) or not isinstance(num_clients, int) or num_clients < 2:
            raise SecAggConfigError("secure aggregation needs at least 2 clients in the cohort")
        return _parameters(self, num_clients)

    def _search(self, num_clients: int) -> SecAggParameters:
        budget = 2.0**-self.failure_log2
        degrees = range(2, num_clients - 1, 2)

        def passes(index: int) -> bool:
            return self._threshold(num_clients, degrees[index], budget) is not None

        # Probe indices 0, 1, 3, 7, … until one passes, then bisect below it.
        low, high, probe = 0, None, 0
        while probe < len(degrees) and high is None:
            if passes(probe):
                high = probe
            else:
                low, probe = probe + 1, 2 * probe + 1
        if high is None and low < len(degrees) and passes(len(degrees) - 1):
            high = len(degrees) - 1
        while high is not None and low < high:
            middle = (low + high) // 2
            low, high = (low, middle) if passes(middle) else (middle + 1, high)
        degree = num_clients - 1 if high is None else degrees[high]
        if (threshold := self._threshold(num_clients, degree, budget)) is not None:
            return SecAggParameters(degree, threshold)
        raise SecAggConfigError(
            f"no threshold protects {num_clients} clients against {self.corrupt_fraction:.0%} "
            f"colluding and {self.dropout_fraction:.0%} dropping clients (it needs "
            "2 × dropouts + colluders < clients); lower dropout_fraction or corrupt_fraction"
        )

    def failure_probability(self, num_clients: int, parameters: SecAggParameters) -> float:
        """The union bound on a round's failure with `parameters`, as `parameters` minimises."""
        n, k, t = num_clients, parameters.degree, parameters.threshold
        return self._connectivity(n, k) + self._privacy(n, k, t) + self._completion(n, k, t)

    def describe(self, num_clients: int, parameters: SecAggParameters) -> str:
        """What the setting guarantees, in words (part of the run's secure-aggregation line)."""
        corrupt, dropped = self._counts(num_clients)
        bound = self.failure_probability(num_clients, parameters)
        odds = (
            "always"
            if bound == 0
            else f"except with probability 2^-{math.floor(-math.log2(bound))} (asked: "
            f"2^-{self.failure_log2})"
        )
        return (
            f"Bell et al. 2020 for up to {self.dropout_fraction:.0%} dropouts ({dropped}) and "
            f"{self.corrupt_fraction:.0%} clients colluding with the server ({corrupt}): no "
            f"honest input is revealed, no partial sum, and the round completes, {odds}"
        )

    def _threshold(self, n: int, k: int, budget: float) -> int | None:
        connectivity = self._connectivity(n, k)
        if connectivity > budget:
            return None
        for t in range(max(2, (k + 1) // 2 + 1), k + 1):
            if connectivity + self._privacy(n, k, t) + self._completion(n, k, t) <= budget:
                return t
        return None

    def _counts(self, n: int) -> tuple[int, int]:
        # Rounded up: 10 % of 5 clients still allows one to drop.
        return math.ceil(self.corrupt_fraction * n), math.ceil(self.dropout_fraction * n)

    def _privacy(self, n: int, k: int, t: int) -> float:
        corrupt, _ = self._counts(n)
        return n * _hypergeometric_tail(n - 1, corrupt, k, 2 * t - k - 1)

    def _completion(self, n: int, k: int, t: int) -> float:
        _, dropped = self._counts(n)
        if dropped == 0:
            return 0.0
        # A dropped client's key needs t of its k neighbours alive, the others dropped being
        # D − 1; a survivor's seed needs t of its k + 1 holders (itself alive) among D dropped.
        gone = _hypergeometric_tail(n - 1, dropped - 1, k, k - t + 1)
        alive = _hypergeometric_tail(n - 1, dropped, k, k - t + 2)
        return n * max(gone, alive)

    def _connectivity(self, n: int, k: int) -> float:
        if k >= n - 1:
            return 0.0  # the complete graph stays connected whoever is removed
        removed = min(n, sum(self._counts(n)))
        if removed < k:  # two runs of k/2 need k removed clients
            return 0.0
        log_both = _log_comb(n - k, removed - k) - _log_comb(n, removed)
        return n * n / 2 * math.exp(log_both)


@functools.lru_cache(maxsize=64)
def _parameters(threat: ThreatModel, num_clients: int) -> SecAggParameters:
    """Cached: a run asks once per round, and large cohorts take a fraction of a second."""
    return threat._search(num_clients)


def _hypergeometric_tail(population: int, marked: int, draws: int, at_least: int) -> float:
    """P[X >= at_least] for X the marked among `draws` of `population`, without replacement."""
    tails = _hypergeometric_tails(population, marked, draws)
    return tails[max(at_least, 0)] if at_least < len(tails) else 0.0


@functools.lru_cache(maxsize=512)
def _hypergeometric_tails(population: int, marked: int, draws: int) -> tuple[float, ...]:
    """P[X >= a] for a = 0 … min(marked, draws), from log-gamma (relative error about 1e-9,
    far inside the factor-of-2 steps between candidate settings)."""
    log_total = _log_comb(population, draws)
    terms = [
        math.exp(_log_comb(marked, j) + _log_comb(population - marked, draws - j) - log_total)
        if draws - j <= population - marked
        else 0.0
        for j in range(min(marked, draws) + 1)
    ]
    tails, suffix = [], 0.0
    for term in reversed(terms):
        suffix += term
        tails.append(min(suffix, 1.0))
    return tuple(reversed(tails))


def _log_comb(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
