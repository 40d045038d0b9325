"""Privacy accounting: each ε roost reports is dp_accounting's own number for that mechanism."""

from __future__ import annotations

import argparse
import math

import dp_accounting
import pytest

from roost.errors import ConfigurationError
from roost.privacy import planning
from roost.privacy.accounting import (
    Cohort,
    check_delta,
    default_delta,
    epsilon,
    local_epsilon,
    noise_multiplier_for,
)

ADD_OR_REMOVE = dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE
REPLACE_ONE = dp_accounting.NeighboringRelation.REPLACE_ONE


def poisson_by_hand(accountant, q: float, sigma: float, rounds: int, delta: float) -> float:
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), rounds
    )
    return accountant.compose(event).get_epsilon(delta)


@pytest.mark.parametrize("q", [0.01, 0.1])
@pytest.mark.parametrize("sigma", [0.8, 1.5])
@pytest.mark.parametrize(("rounds", "delta"), [(1, 1e-5), (50, 1e-6)])
def test_poisson_epsilon_is_dp_accountings_rdp(q, sigma, rounds, delta) -> None:
    expected = poisson_by_hand(
        dp_accounting.rdp.RdpAccountant(neighboring_relation=ADD_OR_REMOVE), q, sigma, rounds, delta
    )
    got = epsilon(sigma, rounds, delta, sampling="poisson", q=q, accountant="rdp")
    assert got == pytest.approx(expected, rel=1e-6, abs=1e-6)


@pytest.mark.parametrize(("q", "sigma", "rounds"), [(0.01, 1.0, 20), (0.1, 2.0, 5)])
def test_poisson_epsilon_is_dp_accountings_pld(q, sigma, rounds) -> None:
    expected = poisson_by_hand(
        dp_accounting.pld.PLDAccountant(neighboring_relation=ADD_OR_REMOVE), q, sigma, rounds, 1e-5
    )
    got = epsilon(sigma, rounds, 1e-5, q=q, accountant="pld")
    assert got == pytest.approx(expected, rel=1e-6, abs=1e-6)
    # The two accountants analyse the same mechanism; PLD is the tighter one.
    assert got <= epsilon(sigma, rounds, 1e-5, q=q, accountant="rdp") + 1e-9


@pytest.mark.parametrize(("cohort", "population", "sigma", "rounds"), [(10, 1000, 1.0, 20)])
def test_fixed_cohort_epsilon_is_dp_accountings_sampling_without_replacement(
    cohort, population, sigma, rounds
) -> None:
    # Replace-one neighbours move the clipped sum by up to 2C, so σ·C noise is σ/2 sensitivities.
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.SampledWithoutReplacementDpEvent(
            population, cohort, dp_accounting.GaussianDpEvent(sigma / 2)
        ),
        rounds,
    )
    expected = (
        dp_accounting.rdp.RdpAccountant(neighboring_relation=REPLACE_ONE)
        .compose(event)
        .get_epsilon(1e-5)
    )
    got = epsilon(sigma, rounds, 1e-5, sampling="fixed", cohort=cohort, population=population)
    assert got == pytest.approx(expected, rel=1e-6, abs=1e-6)


def test_the_pld_accountant_refuses_fixed_cohorts_and_names_the_one_that_works() -> None:
    with pytest.raises(ConfigurationError, match='use accountant="rdp"'):
        epsilon(1.0, 10, 1e-5, sampling="fixed", cohort=10, population=100, accountant="pld")


def test_expected_cohort_over_population_is_the_poisson_rate() -> None:
    assert epsilon(1.1, 30, 1e-5, cohort=50, population=5000) == epsilon(1.1, 30, 1e-5, q=0.01)
    assert Cohort.of("fixed", cohort=50, population=5000).rate == 0.01


def test_epsilon_edges_and_monotonicity() -> None:
    assert epsilon(1.0, 0, 1e-5, q=0.1) == 0.0
    assert math.isinf(epsilon(0.0, 3, 1e-5, q=0.1))
    assert math.isinf(epsilon(0.0, 3, 1e-5, sampling="fixed", cohort=5, population=50))
    assert epsilon(1.0, 10, 1e-5, q=0.1) < epsilon(1.0, 20, 1e-5, q=0.1)
    assert epsilon(2.0, 10, 1e-5, q=0.1) < epsilon(1.0, 10, 1e-5, q=0.1)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"q": 1.5}, "q must be in (0, 1]"),
        ({}, 'sampling="poisson" needs q'),
        ({"sampling": "fixed", "cohort": 20, "population": 10}, "cannot exceed population"),
        ({"sampling": "fixed", "q": 0.1}, "not q"),
        ({"sampling": "shuffled", "q": 0.1}, "sampling must be one of"),
        ({"q": 0.1, "accountant": "moments"}, "accountant must be one of"),
    ],
)
def test_bad_sampling_descriptions_are_clear_errors(kwargs, fragment) -> None:
    with pytest.raises(ConfigurationError, match=fragment.replace("(", r"\(").replace("]", r"\]")):
        epsilon(1.0, 10, 1e-5, **kwargs)


@pytest.mark.parametrize("delta", [0.0, 1.0, -1e-5])
def test_delta_must_be_a_probability(delta) -> None:
    with pytest.raises(ConfigurationError, match="delta must be in"):
        epsilon(1.0, 10, delta, q=0.1)


def test_noise_multiplier_for_a_target_is_the_smallest_that_meets_it() -> None:
    sigma = noise_multiplier_for(2.0, 40, 1e-5, q=0.05)
    assert epsilon(sigma, 40, 1e-5, q=0.05) <= 2.0
    assert epsilon(sigma * 0.99, 40, 1e-5, q=0.05) > 2.0
    assert noise_multiplier_for(2.0, 0, 1e-5, q=0.05) == 0.0
    with pytest.raises(ConfigurationError, match='use accountant="rdp"'):
        noise_multiplier_for(
            2.0, 10, 1e-5, sampling="fixed", cohort=5, population=50, accountant="pld"
        )


def test_default_delta_is_far_below_one_over_n() -> None:
    # Issue 22, hole 3: 1/N^1.1 gave δ = 0.079 for 10 clients and 0.47 for 2.
    assert default_delta(2) == default_delta(10) == default_delta(316) == 1e-5
    assert default_delta(1000) == pytest.approx(1e-6)
    for num_clients in (1, 2, 10, 100, 10**4, 10**6):
        assert default_delta(num_clients) <= 1 / num_clients**2
    with pytest.raises(ConfigurationError, match="num_clients"):
        default_delta(0)


def test_a_delta_of_one_over_n_or_more_is_refused_where_n_is_known() -> None:
    with pytest.raises(ConfigurationError, match=r"delta 0.1 is not below 1/N = 0.1 for N = 10"):
        check_delta(0.1, 10)
    with pytest.raises(ConfigurationError, match=r"min\(1e-5, 1/N²\) = 1e-05"):
        epsilon(1.0, 10, 0.5, cohort=1, population=2)
    with pytest.raises(ConfigurationError, match="not below 1/N"):
        noise_multiplier_for(3.0, 10, 0.02, sampling="fixed", cohort=5, population=50)
    assert check_delta(0.099, 10) == 0.099
    assert epsilon(1.0, 10, 0.5, q=0.5) > 0  # without N there is nothing to compare with


def test_local_epsilon_is_the_gaussian_mechanism_of_dp_accounting() -> None:
    def by_hand(sigma: float, rounds: int) -> float:
        event = dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(sigma), rounds)
        return dp_accounting.pld.PLDAccountant().compose(event).get_epsilon(1e-5)

    # Local DP proper ("replace"): any two clipped updates differ by up to 2C.
    assert local_epsilon(4.0, 1e-5) == pytest.approx(by_hand(2.0, 1), rel=1e-9)
    assert local_epsilon(4.0, 1e-5, relation="add_remove") == pytest.approx(by_hand(4.0, 1))
    assert local_epsilon(4.0, 1e-5, rounds=5) == pytest.approx(by_hand(2.0, 5), rel=1e-9)
    # One release is close to the exact analytic Gaussian mechanism (Balle & Wang, 2018).
    analytic = dp_accounting.get_epsilon_gaussian(2.0, 1e-5)
    assert local_epsilon(4.0, 1e-5) == pytest.approx(analytic, rel=1e-2)
    assert math.isinf(local_epsilon(0.0, 1e-5))


def privacy_command(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="roost privacy")
    planning.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_the_planning_command_reports_epsilon_and_noise(capsys) -> None:
    args = ["--rounds", "30", "--cohort", "20", "--population", "1000"]
    assert planning.run(privacy_command("epsilon", "--noise-multiplier", "1.2", *args)) == 0
    report = capsys.readouterr().out
    expected = epsilon(1.2, 30, default_delta(1000), q=0.02)
    assert f"ε            {expected:.4g}" in report
    assert "δ            1e-06 (min(1e-5, 1/N²))" in report

    assert planning.run(privacy_command("noise", "--target-epsilon", "1.5", *args)) == 0
    report = capsys.readouterr().out
    sigma = noise_multiplier_for(1.5, 30, default_delta(1000), q=0.02)
    assert f"noise σ      {sigma:.4g}" in report


def test_the_planning_command_refuses_what_it_cannot_answer(capsys) -> None:
    assert (
        planning.run(
            privacy_command("epsilon", "--noise-multiplier", "1", "--rounds", "5", "--q", "0.1")
        )
        == 2
    )
    assert "give --delta, or --population" in capsys.readouterr().err
    code = planning.run(
        privacy_command(
            "epsilon",
            "--noise-multiplier",
            "1",
            "--rounds",
            "5",
            "--sampling",
            "fixed",
            "--cohort",
            "5",
            "--population",
            "50",
            "--accountant",
            "pld",
        )
    )
    assert code == 2
    assert 'use accountant="rdp"' in capsys.readouterr().err
