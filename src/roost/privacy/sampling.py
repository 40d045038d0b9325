"""Cohort samplers for differentially private runs: secret randomness, as the accountant assumes.

Privacy amplification by sampling (the small ε of DP-FedAvg) holds only if nobody can predict who
takes part in a round. These samplers therefore draw from `SecureRandom` (an `os.urandom`-keyed
cryptographic stream), never from the round loop's NumPy generator, and ignore the strategy's
fraction rule: the cohort is what the accountant analyses.

- `PoissonSampler(q)`: each available client takes part independently with probability q
  (accounted as ``sampling="poisson"``). A round may get an empty cohort; it then passes without
  a model change (use an aggregator with ``min_updates = 0``, as `DPFedAvg` does).
- `FixedSizeSampler(m)`: exactly m of the available clients, uniformly without replacement
  (accounted as ``sampling="fixed"``).

A strategy uses its sampler for evaluation cohorts too; those do not touch the model.

`population` is the N the accountant was told (`DPFedAvg` sets it to `num_clients`). The sampler
sees the clients really available each round and refuses a mismatch that would make the reported
ε too small: with `FixedSizeSampler`, any other number of clients (m of fewer than N is a higher
sampling rate than accounted); with `PoissonSampler`, more than N (its ε depends on q alone, and a
client that is absent takes part with probability 0 <= q, but δ's 1/N rule and m = qN assume N).

State: ``{"draws": n}``, the number of cohorts drawn so far. With a research `seed` each draw's key
comes from (seed, n, a number drawn from the loop's generator), so a run — and a resumed run, whose
loop generator is restored — picks the same cohorts; such a run is not private.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass

import numpy as np

from roost.core.types import ClientId
from roost.errors import ConfigurationError
from roost.privacy.noise import SecureRandom, noise_source, warn_not_private
from roost.strategy.base import Sampler, State


class _SecureSampler(Sampler):
    """Draws each cohort from a fresh `SecureRandom`; counts draws in its state.

    Subclasses are frozen dataclasses with a `seed` field and a `_choose` step.
    """

    seed: int | None
    population: int | None

    def _warn_if_seeded(self) -> None:
        if self.seed is not None:
            warn_not_private(type(self).__name__, self.seed)

    def init(self) -> State:
        return {"draws": 0}

    def _source(self, rng: np.random.Generator, state: State) -> SecureRandom:
        if self.seed is None:
            return noise_source(None)
        # The loop's generator separates draws whose state was not kept (evaluation cohorts).
        salt = int(rng.integers(2**62))
        return noise_source(self.seed, type(self).__name__, state["draws"], salt)

    def sample(
        self,
        client_ids: Sequence[ClientId],
        count: int,
        rng: np.random.Generator,
        state: State,
    ) -> tuple[list[ClientId], State]:
        """The cohort (in the order of `client_ids`); `count` is not used, see the module doc."""
        self._check_population(len(client_ids))
        chosen = self._choose(len(client_ids), self._source(rng, state))
        return [client_ids[index] for index in chosen], {"draws": state["draws"] + 1}

    def _choose(self, available: int, source: SecureRandom) -> np.ndarray:
        raise NotImplementedError

    def _population_differs(self, available: int) -> bool:
        """Whether `available` clients break the accountant's assumption about N."""
        return self.population is not None and available > self.population

    def _check_population(self, available: int) -> None:
        if self._population_differs(available):
            raise ConfigurationError(
                f"{type(self).__name__} samples from {available} available clients but the "
                f"privacy accountant was told num_clients = {self.population}, so the reported "
                f"ε would be wrong; set num_clients (roost server: --min-clients) to {available}, "
                "the clients that can be sampled"
            )


def _check_population_setting(population: int | None) -> None:
    if population is not None and (
        isinstance(population, bool) or not isinstance(population, int) or population < 1
    ):
        raise ConfigurationError(f"population must be an int >= 1 or None, got {population!r}")


@dataclass(frozen=True)
class PoissonSampler(_SecureSampler):
    """Each available client takes part independently with probability `q`.

    Args:
        q: the participation probability, in (0, 1].
        seed: research only: makes cohorts reproducible and the run NOT private.
        population: N of the accountant; more available clients are refused (module doc).
    """

    q: float
    _: KW_ONLY
    seed: int | None = None
    population: int | None = None

    def __post_init__(self) -> None:
        if not 0.0 < self.q <= 1.0:
            raise ConfigurationError(f"PoissonSampler q must be in (0, 1], got {self.q}")
        _check_population_setting(self.population)
        self._warn_if_seeded()

    def _choose(self, available: int, source: SecureRandom) -> np.ndarray:
        return np.flatnonzero(source.bernoulli(self.q, available))


@dataclass(frozen=True)
class FixedSizeSampler(_SecureSampler):
    """Exactly `cohort_size` of the available clients, uniformly at random without replacement.

    Args:
        cohort_size: m, clients per round; fewer available clients is an error.
        seed: research only: makes cohorts reproducible and the run NOT private.
        population: N of the accountant; any other number of available clients is refused.
    """

    cohort_size: int
    _: KW_ONLY
    seed: int | None = None
    population: int | None = None

    def __post_init__(self) -> None:
        size = self.cohort_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ConfigurationError(f"cohort_size must be an int >= 1, got {size!r}")
        _check_population_setting(self.population)
        self._warn_if_seeded()

    def _population_differs(self, available: int) -> bool:
        return self.population is not None and available != self.population

    def _choose(self, available: int, source: SecureRandom) -> np.ndarray:
        if available < self.cohort_size:
            raise ConfigurationError(
                f"FixedSizeSampler needs {self.cohort_size} clients per round but only "
                f"{available} are available; add clients or lower the cohort size"
            )
        return source.sample_without_replacement(available, self.cohort_size)
