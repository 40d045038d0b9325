"""One-run privacy auditing: a lower bound on ε from canaries in a single run.

Steinke, Nasr and Jagielski (NeurIPS 2023), "Privacy Auditing with One (1) Training Run". An
auditor makes m canaries and flips a fair secret coin for each: heads, the canary takes part in the
run; tails, it does not. After the run it looks at what was released, guesses "in" or "out" for
r of the canaries (abstaining on the rest) and counts the v correct guesses. If the run is
(ε, δ)-DP, every coin is almost a randomized response with accuracy e^ε/(1 + e^ε), so many more
correct guesses than that are unlikely; the paper's main theorem bounds how unlikely:

    P[v or more correct] <= f(v) + 2·m·δ · max_{1<=i<=v} (f(v−i) − f(v)) / i,
    f(u) = P[Binomial(r, e^ε/(1 + e^ε)) >= u].

`p_value` is that bound; `epsilon_lower_bound` is the largest ε whose p-value is still at most
β = 1 − confidence (found by root finding on the increasing p-value, as the paper's Appendix D
does by bisection): with probability at least `confidence` the run is not (ε', δ)-DP for any
ε' below it. A correct DP mechanism therefore gives a bound at most its accountant's ε (except
with probability β); a mechanism without DP can give a large one.

The guesses come from scores (`guesses`): "in" for the highest `r/2` scores, "out" for the
lowest, none for the middle, with r fixed before the run: choosing r after seeing the scores would
invalidate the test. The secret coins (`secret_bits`) and the canaries' random directions
(`canary_directions`) come from the operating system's CSPRNG (`SecureRandom`).

This module holds the statistics only; `roost privacy audit` (`roost.cli.audit`) inserts canary
clients into a real run and scores them. scipy comes with `dp_accounting`, a dependency of roost.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import optimize, special, stats

from roost.errors import ConfigurationError
from roost.privacy.noise import SecureRandom

DEFAULT_CONFIDENCE = 0.95
"""1 − β: the bound holds with probability at least this."""


def _check_counts(canaries: int, guesses: int, correct: int) -> None:
    if not 0 <= correct <= guesses <= canaries:
        raise ConfigurationError(
            f"an audit needs 0 <= correct <= guesses <= canaries, got correct={correct}, "
            f"guesses={guesses}, canaries={canaries}"
        )


def p_value(canaries: int, guesses: int, correct: int, epsilon: float, delta: float) -> float:
    """How likely `correct` or more of `guesses` right guesses are if the run is (ε, δ)-DP.

    The paper's bound f(v) + 2·m·δ·max_i (f(v−i) − f(v))/i (module docstring), capped at 1.

    Args:
        canaries: m, the canaries, each in the run with probability 1/2.
        guesses: r, the canaries guessed (the others abstained on).
        correct: v, the right guesses.
        epsilon: ε >= 0 of the null hypothesis.
        delta: δ in [0, 1] of the null hypothesis.
    """
    _check_counts(canaries, guesses, correct)
    if not (epsilon >= 0 and 0 <= delta <= 1):
        raise ConfigurationError(f"need ε >= 0 and δ in [0, 1], got ε={epsilon}, δ={delta}")
    q = special.expit(epsilon)  # e^ε/(1 + e^ε), the accuracy of ε-randomized response
    tail = float(stats.binom.sf(correct - 1, guesses, q))  # f(v) = P[Binomial >= v]
    if delta == 0 or correct == 0:
        return min(tail, 1.0)
    # f(v−i) − f(v) = P[v−i <= Binomial < v] = Σ_{j=1..i} pmf(v−j), for i = 1..v; beyond v
    # f(v−i) = 1 and the ratio only falls.
    below = stats.binom.pmf(np.arange(correct - 1, -1, -1), guesses, q)
    steepest = float(np.max(np.cumsum(below) / np.arange(1, correct + 1)))
    return min(tail + 2 * canaries * delta * steepest, 1.0)


def epsilon_lower_bound(
    canaries: int,
    guesses: int,
    correct: int,
    delta: float,
    confidence: float = DEFAULT_CONFIDENCE,
) -> float:
    """The largest ε that `correct` of `guesses` right guesses refute at `confidence`.

    The ε at which `p_value` reaches β = 1 − confidence (0 when even ε = 0 is not refuted).

    Args:
        canaries: m, the canaries, each in the run with probability 1/2.
        guesses: r, the canaries guessed.
        correct: v, the right guesses.
        delta: the δ of the claim tested (the run's).
        confidence: 1 − β, in (0, 1).
    """
    _check_counts(canaries, guesses, correct)
    if not 0 < confidence < 1:
        raise ConfigurationError(f"confidence must be in (0, 1), got {confidence}")
    beta = 1 - confidence

    def excess(epsilon: float) -> float:
        return p_value(canaries, guesses, correct, epsilon, delta) - beta

    if correct == 0 or excess(0.0) >= 0:
        return 0.0
    high = 1.0
    while excess(high) < 0:  # e^ε/(1 + e^ε) rounds to 1 by ε = 40, and the p-value to 1
        high *= 2
    return float(optimize.brentq(excess, high / 2 if high > 1 else 0.0, high, xtol=1e-9))


def secret_bits(count: int, source: SecureRandom | None = None) -> np.ndarray:
    """`count` fair secret coins (booleans: the canary takes part), from the OS CSPRNG."""
    return (source or SecureRandom()).bernoulli(0.5, count)


def canary_directions(count: int, dimension: int, source: SecureRandom | None = None) -> np.ndarray:
    """`count` random unit vectors in R^dimension, one per row, from the OS CSPRNG.

    Orthonormal when `count <= dimension` (Gram–Schmidt of Gaussian vectors, by QR), so one
    canary's update has no component along another's and cannot be mistaken for it; else
    independent uniform directions, nearly orthogonal in high dimension.
    """
    if count < 1 or dimension < 1:
        raise ConfigurationError(f"need count >= 1 and dimension >= 1, got {count}, {dimension}")
    gaussian = (source or SecureRandom()).standard_normal((dimension, count))
    if count <= dimension:
        q, r = np.linalg.qr(gaussian)
        # Signs from R's diagonal make the basis uniformly distributed (Haar), not QR's choice.
        return (q * np.sign(np.diag(r))).T
    return (gaussian / np.linalg.norm(gaussian, axis=0)).T


def guesses(scores: np.ndarray, count: int) -> np.ndarray:
    """The auditor's guesses from canary scores: +1 ("in") for the ⌈count/2⌉ highest scores,
    −1 ("out") for the ⌊count/2⌋ lowest, 0 (abstain) for the rest."""
    scores = np.asarray(scores, dtype=np.float64)
    if not 0 <= count <= len(scores):
        raise ConfigurationError(
            f"cannot guess {count} of {len(scores)} canaries: guess between 0 and {len(scores)}"
        )
    order = np.argsort(scores, kind="stable")
    high, low = (count + 1) // 2, count // 2
    guessed = np.zeros(len(scores), dtype=np.int8)
    if high:
        guessed[order[-high:]] = 1
    guessed[order[:low]] = -1
    return guessed


@dataclass(frozen=True)
class AuditResult:
    """What a one-run audit found.

    Args:
        canaries: m, the canaries (each in the run with probability 1/2).
        included: how many of them took part.
        guesses: r, the canaries guessed.
        correct: v, the right guesses.
        epsilon: the ε lower bound at `delta` and `confidence`.
        delta: the δ of the bound.
        confidence: 1 − β.
    """

    canaries: int
    included: int
    guesses: int
    correct: int
    epsilon: float
    delta: float
    confidence: float


def audit(
    scores: np.ndarray,
    included: np.ndarray,
    count: int,
    delta: float,
    confidence: float = DEFAULT_CONFIDENCE,
) -> AuditResult:
    """Guess `count` canaries from their `scores` (higher: more likely in), compare with the
    secret `included` bits and bound ε at `delta` and `confidence`."""
    included = np.asarray(included, dtype=bool)
    if len(scores) != len(included):
        raise ConfigurationError(f"{len(scores)} scores for {len(included)} canaries")
    guessed = guesses(scores, count)
    truth = np.where(included, 1, -1)
    correct = int(np.sum(guessed * truth == 1))
    bound = epsilon_lower_bound(len(scores), count, correct, delta, confidence)
    return AuditResult(
        canaries=len(scores),
        included=int(included.sum()),
        guesses=count,
        correct=correct,
        epsilon=bound,
        delta=delta,
        confidence=confidence,
    )
