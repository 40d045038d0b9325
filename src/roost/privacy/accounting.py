"""How much privacy a run spends: ε of the sampled Gaussian mechanism, composed over rounds.

Every number here comes from Google's `dp_accounting` library, never from a hand formula: roost
only describes what happened as a `dp_accounting` event and asks an accountant.

One round of central DP (DP-FedAvg) adds Gaussian noise of standard deviation σ·C to the sum of
the cohort's updates, each clipped to L2 norm C; σ is the *noise multiplier*. Two ways of choosing
the cohort are analysed:

- ``"poisson"``: every client takes part independently with probability q
  (`PoissonSampledDpEvent`). Neighbouring federations differ by adding or removing one client,
  under which the clipped sum moves by at most C, so the accountant sees noise multiplier σ.
- ``"fixed"``: a cohort of exactly m of the N clients, uniformly without replacement
  (`SampledWithoutReplacementDpEvent`). This analysis needs N public and fixed, so neighbouring
  federations differ by *replacing* one client's data, under which the clipped sum moves by up to
  2C: the accountant sees noise multiplier σ/2.

Accountants: ``"rdp"`` (Rényi DP; supports both samplings) and ``"pld"`` (privacy loss
distributions; tighter, Poisson sampling only). `dp_accounting` is imported on first use, so
`import roost` stays fast.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from roost.errors import ConfigurationError

SAMPLINGS = ("poisson", "fixed")
"""Cohort sampling models the accountant can analyse."""

ACCOUNTANTS = ("rdp", "pld")
"""Privacy accountants: Rényi DP and privacy loss distributions."""

RELATIONS = ("replace", "add_remove")
"""Neighbouring relations for a single client's local release (see `local_epsilon`)."""


DEFAULT_DELTA_RULE = "min(1e-5, 1/N²)"
"""How `default_delta` chooses δ for N clients, as runs and help texts print it."""


def default_delta(num_clients: int) -> float:
    """δ = min(1e-5, 1/N²) for N clients.

    δ is the chance that the guarantee fails outright, for someone: a mechanism that publishes
    one client's whole data with probability δ is (0, δ)-DP. With δ near 1/N that is about one
    client of the N; with δ = 1/N² it is about 1/N clients, so the chance that anyone is exposed
    stays below 1/N, and the cap 1e-5 keeps small federations at the customary level (a
    rule like 1/N^1.1 still gives 0.079 for 10 clients). A smaller δ costs little ε: it enters
    the Gaussian mechanism's bound through sqrt(log(1/δ)).
    """
    _check_num_clients(num_clients)
    return min(1e-5, 1.0 / num_clients**2)


def check_delta(delta: float, num_clients: int) -> float:
    """Return `delta` if it is in (0, 1/N) for N = `num_clients`; else ConfigurationError.

    A δ of 1/N or more allows a mechanism that publishes one random client's data outright.
    """
    _check_delta(delta)
    _check_num_clients(num_clients)
    if delta >= 1.0 / num_clients:
        raise ConfigurationError(
            f"delta {delta:.3g} is not below 1/N = {1 / num_clients:.3g} for N = {num_clients} "
            f"clients: such a δ lets one client's data out whole; use a δ well below 1/N, e.g. "
            f"the default {DEFAULT_DELTA_RULE} = {default_delta(num_clients):.3g}"
        )
    return delta


def resolve_delta(delta: float | None, num_clients: int) -> float:
    """`default_delta(num_clients)` for None, else `delta` checked by `check_delta`."""
    return default_delta(num_clients) if delta is None else check_delta(delta, num_clients)


def _check_num_clients(num_clients: int) -> None:
    if isinstance(num_clients, bool) or not isinstance(num_clients, int) or num_clients < 1:
        raise ConfigurationError(f"num_clients must be an int >= 1, got {num_clients!r}")


@dataclass(frozen=True)
class Cohort:
    """How each round's clients are chosen, as the accountant analyses it.

    Build it with `Cohort.of`, which checks the values. `rate` is the share of clients in a
    round (q for Poisson sampling, m/N for a fixed cohort).
    """

    sampling: str
    rate: float
    size: int | None = None
    population: int | None = None

    @classmethod
    def of(
        cls,
        sampling: str = "poisson",
        *,
        q: float | None = None,
        cohort: int | None = None,
        population: int | None = None,
    ) -> Cohort:
        """ "poisson" with q (or cohort = expected clients and population), or "fixed" m of N."""
        _check_choice("sampling", sampling, SAMPLINGS)
        if sampling == "fixed" and q is not None:
            raise ConfigurationError(
                'sampling="fixed" takes cohort and population, not q; use sampling="poisson" '
                "for a participation probability"
            )
        if sampling == "poisson" and q is not None:
            if not 0.0 < q <= 1.0:
                raise ConfigurationError(f"q must be in (0, 1], got {q}")
            return cls("poisson", float(q), None, population)
        if sampling == "poisson" and (cohort is None or population is None):
            raise ConfigurationError(
                'sampling="poisson" needs q (each client\'s participation probability), or '
                "cohort (expected clients per round) and population (all clients)"
            )
        cohort, population = _cohort_and_population(cohort, population)
        return cls(sampling, cohort / population, cohort, population)

    def event(self, noise_multiplier: float, rounds: int) -> Any:
        """The `dp_accounting` event of `rounds` rounds of the sampled Gaussian mechanism."""
        import dp_accounting

        _check_noise_multiplier(noise_multiplier)
        _check_rounds(rounds)
        if rounds == 0:
            return dp_accounting.NoOpDpEvent()
        if noise_multiplier == 0:
            # No noise, no privacy: the library's own name for it makes every accountant say ∞.
            one_round = dp_accounting.NonPrivateDpEvent()
        elif self.sampling == "fixed":
            # Replace-one neighbours: sensitivity 2C, so σ·C noise is σ/2 sensitivities.
            one_round = dp_accounting.SampledWithoutReplacementDpEvent(
                self.population, self.size, dp_accounting.GaussianDpEvent(noise_multiplier / 2)
            )
        else:
            one_round = dp_accounting.PoissonSampledDpEvent(
                self.rate, dp_accounting.GaussianDpEvent(noise_multiplier)
            )
        return dp_accounting.SelfComposedDpEvent(one_round, rounds)

    def accountant(self, name: str) -> Any:
        """A fresh `dp_accounting` accountant `name`, in the neighbouring relation this needs.

        Raises ConfigurationError, naming one that works, if `name` cannot analyse this sampling.
        """
        fresh = _make_accountant(name, self.sampling)
        probe = self.event(1.0, 1)
        if fresh.supports(probe):
            return fresh
        others = [
            other
            for other in ACCOUNTANTS
            if other != name and _make_accountant(other, self.sampling).supports(probe)
        ]
        hint = f'use accountant="{others[0]}"' if others else "choose another sampling"
        raise ConfigurationError(
            f'the {name.upper()} accountant cannot analyse sampling="{self.sampling}"; {hint}'
        )


def epsilon(
    noise_multiplier: float,
    rounds: int,
    delta: float,
    *,
    sampling: str = "poisson",
    q: float | None = None,
    cohort: int | None = None,
    population: int | None = None,
    accountant: str = "rdp",
) -> float:
    """ε after `rounds` rounds of DP-FedAvg with noise multiplier σ, at δ.

    Args:
        noise_multiplier: σ, the noise standard deviation over the clip norm (0: no privacy, ε=∞).
        rounds: rounds run (0 gives ε = 0).
        delta: the δ of (ε, δ)-DP, in (0, 1); `default_delta(N)` is a reasonable choice. With
            `population` N given, a δ of 1/N or more is refused (`check_delta`).
        sampling: "poisson" (give q, or cohort and population) or "fixed" (cohort and
            population).
        accountant: "rdp" or "pld" (Poisson sampling only).
    """
    _check_delta(delta)
    _check_noise_multiplier(noise_multiplier)
    _check_rounds(rounds)
    plan = Cohort.of(sampling, q=q, cohort=cohort, population=population)
    if plan.population is not None:
        check_delta(delta, plan.population)
    return _epsilon(float(noise_multiplier), rounds, float(delta), plan, accountant)


@functools.lru_cache(maxsize=1024)
def _epsilon(
    noise_multiplier: float, rounds: int, delta: float, plan: Cohort, accountant: str
) -> float:
    """Cached: a run asks for the same ε once per round, and PLD accounting is not free."""
    fresh = plan.accountant(accountant)
    with _quiet_orders():
        return float(fresh.compose(plan.event(noise_multiplier, rounds)).get_epsilon(delta))


@contextlib.contextmanager
def _quiet_orders() -> Iterator[None]:
    """Hide the RDP accountant's warnings that it left out Rényi orders it could not compute for
    a large sampling rate: ε is still a valid bound from the others, and a run would print one
    per order and round."""
    library_log = logging.getLogger("absl")
    level = library_log.level
    library_log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        library_log.setLevel(level)


def noise_multiplier_for(
    target_epsilon: float,
    rounds: int,
    delta: float,
    *,
    accountant: str = "rdp",
    **sampling: Any,
) -> float:
    """The smallest σ (to within 1e-6) whose ε after `rounds` rounds is at most `target_epsilon`.

    `sampling`, `q`, `cohort` and `population` are as for `epsilon`. Found by
    `dp_accounting.calibrate_dp_mechanism`, which guarantees the returned σ meets the target.
    """
    _check_target(target_epsilon)
    _check_delta(delta)
    _check_rounds(rounds)
    plan = Cohort.of(**sampling)
    if plan.population is not None:
        check_delta(delta, plan.population)
    plan.accountant(accountant)  # refuses an accountant that cannot analyse this sampling
    if rounds == 0:
        return 0.0
    return _calibrate(
        lambda: plan.accountant(accountant),
        lambda sigma: plan.event(sigma, rounds),
        target_epsilon,
        delta,
    )


def _calibrate(make_accountant: Any, make_event: Any, target_epsilon: float, delta: float) -> float:
    """The least noise multiplier whose event stays within `target_epsilon`, by dp_accounting."""
    import dp_accounting

    with _quiet_orders():
        return float(
            dp_accounting.calibrate_dp_mechanism(
                make_accountant,
                make_event,
                target_epsilon,
                delta,
                bracket_interval=dp_accounting.LowerEndpointAndGuess(0.0, 1.0),
            )
        )


def _check_target(target_epsilon: float) -> None:
    if not target_epsilon > 0 or math.isinf(target_epsilon):
        raise ConfigurationError(
            f"target_epsilon must be a finite number > 0, got {target_epsilon}"
        )


def local_epsilon(
    noise_multiplier: float,
    delta: float,
    *,
    rounds: int = 1,
    relation: str = "replace",
    discretization: float = 1e-4,
) -> float:
    """ε of one client's local-DP releases: a Gaussian of std σ·C on an update clipped to C.

    This bounds what anyone who sees the client's messages, the server included, can learn
    about that client's data, whatever it is, over `rounds` releases (the rounds it took part in).

    Args:
        noise_multiplier: σ.
        delta: the δ of (ε, δ)-DP.
        rounds: how many releases to compose (1: per round).
        relation: "replace" (the default, local DP proper: any two datasets of the client may
            produce any two clipped updates, sensitivity 2C) or "add_remove" (the update is
            compared with not sending one, sensitivity C).
        discretization: the PLD accountant's step on privacy-loss values; a coarser step is
            faster for many rounds and still never under-states ε (rounding is pessimistic).
    """
    _check_noise_multiplier(noise_multiplier)
    _check_local(delta, rounds, relation, discretization)
    accountant = _local_accountant(discretization)
    return float(
        accountant.compose(_local_releases(noise_multiplier, rounds, relation)).get_epsilon(delta)
    )


def local_noise_multiplier_for(
    target_epsilon: float,
    delta: float,
    *,
    rounds: int = 1,
    relation: str = "replace",
    discretization: float = 1e-3,
) -> float:
    """The smallest σ (to within 1e-6) whose `local_epsilon` over `rounds` releases is at most
    `target_epsilon`; found by `dp_accounting.calibrate_dp_mechanism` (arguments as for
    `local_epsilon`)."""
    _check_target(target_epsilon)
    _check_local(delta, rounds, relation, discretization)
    if rounds == 0:
        return 0.0
    return _calibrate(
        lambda: _local_accountant(discretization),
        lambda sigma: _local_releases(sigma, rounds, relation),
        target_epsilon,
        delta,
    )


def _check_local(delta: float, rounds: int, relation: str, discretization: float) -> None:
    _check_delta(delta)
    _check_rounds(rounds)
    _check_choice("relation", relation, RELATIONS)
    if not discretization > 0:
        raise ConfigurationError(f"discretization must be > 0, got {discretization}")


def _local_releases(noise_multiplier: float, rounds: int, relation: str) -> Any:
    """The `dp_accounting` event of `rounds` local releases: Gaussian noise of std σ·C on an
    update clipped to C, in sensitivities (2C under "replace", C under "add_remove")."""
    import dp_accounting

    if rounds == 0:
        return dp_accounting.NoOpDpEvent()
    sensitivities = 2.0 if relation == "replace" else 1.0
    one_release = dp_accounting.GaussianDpEvent(noise_multiplier / sensitivities)
    return dp_accounting.SelfComposedDpEvent(one_release, rounds)


def _local_accountant(discretization: float) -> Any:
    """A PLD accountant in add/remove terms (each release's sensitivity already says which
    neighbours it compares), with privacy-loss step `discretization`."""
    import dp_accounting

    return dp_accounting.pld.PLDAccountant(
        dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE,
        value_discretization_interval=discretization,
    )


def _make_accountant(name: str, sampling: str) -> Any:
    import dp_accounting

    _check_choice("accountant", name, ACCOUNTANTS)
    relation = (
        dp_accounting.NeighboringRelation.REPLACE_ONE
        if sampling == "fixed"
        else dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE
    )
    if name == "rdp":
        return dp_accounting.rdp.RdpAccountant(neighboring_relation=relation)
    return dp_accounting.pld.PLDAccountant(neighboring_relation=relation)


def _cohort_and_population(cohort: int | None, population: int | None) -> tuple[int, int]:
    for name, value in (("cohort", cohort), ("population", population)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigurationError(f"{name} must be an int >= 1, got {value!r}")
    assert cohort is not None and population is not None
    if cohort > population:
        raise ConfigurationError(
            f"cohort ({cohort}) cannot exceed population ({population}), the number of clients"
        )
    return cohort, population


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigurationError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def _check_noise_multiplier(noise_multiplier: float) -> None:
    if not noise_multiplier >= 0 or math.isinf(noise_multiplier):
        raise ConfigurationError(
            f"noise_multiplier must be a finite number >= 0, got {noise_multiplier}"
        )


def _check_rounds(rounds: int) -> None:
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 0:
        raise ConfigurationError(f"rounds must be an int >= 0, got {rounds!r}")


def _check_delta(delta: float) -> None:
    if not 0.0 < delta < 1.0:
        raise ConfigurationError(f"delta must be in (0, 1), got {delta}")
