"""`roost privacy audit`: one-run auditing (Steinke, Nasr, Jagielski 2023) of a real run."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from scipy import stats

from roost.apps.digits import app as digits_app
from roost.cli import build_parser, main
from roost.cli.audit import flat_floats, run_audit
from roost.cli.settings import settings_from_args
from roost.errors import ConfigurationError
from roost.privacy.audit import (
    audit,
    canary_directions,
    epsilon_lower_bound,
    guesses,
    p_value,
    secret_bits,
)
from roost.server.loop import ServerConfig
from roost.simulation import run_simulation

CENTRAL = ["--dp", "central", "--noise-multiplier", "1", "--clip-norm", "1"]


def paper_p_value(m: int, r: int, v: int, eps: float, delta: float) -> float:
    """The theorem's bound written out: f(v) + 2mδ·max over every i in 1..m of (f(v−i) − f(v))/i."""
    q = math.exp(eps) / (1 + math.exp(eps))
    u = v - np.arange(0, m + 1)  # v, v−1, ..., v−m
    f = np.where(u <= 0, 1.0, stats.binom.sf(u - 1, r, q))  # P[Binomial(r, q) >= u]
    steepest = np.max((f[1:] - f[0]) / np.arange(1, m + 1))
    return min(float(f[0] + 2 * m * delta * steepest), 1.0)


def bisected_bound(m: int, r: int, v: int, delta: float, beta: float) -> float:
    """The largest ε whose p-value stays <= β, by plain bisection on the paper's formula."""
    low, high = 0.0, 64.0
    for _ in range(60):
        middle = (low + high) / 2
        if paper_p_value(m, r, v, middle, delta) <= beta:
            low = middle
        else:
            high = middle
    return low


@pytest.mark.parametrize(
    ("m", "r", "v", "delta"),
    [(100, 40, 35, 1e-5), (200, 100, 80, 1e-3), (50, 50, 50, 0.0), (30, 20, 16, 1e-2)],
)
def test_p_value_and_bound_follow_the_paper(m: int, r: int, v: int, delta: float) -> None:
    for eps in (0.0, 0.7, 2.5):
        assert p_value(m, r, v, eps, delta) == pytest.approx(paper_p_value(m, r, v, eps, delta))
    expected = bisected_bound(m, r, v, delta, 0.05)
    assert epsilon_lower_bound(m, r, v, delta, 0.95) == pytest.approx(expected, abs=1e-6)


def test_bound_limits() -> None:
    # All r right and δ = 0: P[all right] = q^r, so the bound is logit(β^(1/r)) exactly.
    for r in (20, 100, 400):
        q = 0.05 ** (1 / r)
        assert epsilon_lower_bound(r, r, r, 0.0) == pytest.approx(math.log(q / (1 - q)))
    assert epsilon_lower_bound(1000, 400, 400, 1e-5) > 4  # many right guesses: a large bound
    assert epsilon_lower_bound(200, 100, 50, 1e-5) == 0.0  # chance: nothing refuted
    assert epsilon_lower_bound(200, 100, 0, 1e-5) == 0.0
    # More right guesses refute more; a larger δ or confidence refutes less.
    bounds = [epsilon_lower_bound(200, 100, v, 1e-5) for v in (60, 70, 80, 90, 100)]
    assert bounds == sorted(bounds) and bounds[0] < bounds[-1]
    assert epsilon_lower_bound(200, 100, 90, 1e-2) < epsilon_lower_bound(200, 100, 90, 0.0)
    assert epsilon_lower_bound(200, 100, 90, 0.0, 0.99) < epsilon_lower_bound(200, 100, 90, 0.0)
    with pytest.raises(ConfigurationError, match="correct <= guesses <= canaries"):
        epsilon_lower_bound(10, 20, 5, 1e-5)


def test_guesses_directions_and_counting() -> None:
    scores = np.array([0.3, -2.0, 5.0, 0.1, -1.0, 4.0])
    assert guesses(scores, 4).tolist() == [0, -1, 1, 0, -1, 1]
    assert guesses(scores, 3).tolist() == [0, -1, 1, 0, 0, 1]
    found = audit(scores, np.array([0, 0, 1, 1, 1, 1], bool), 4, 1e-5)
    assert (found.guesses, found.correct, found.included) == (4, 3, 4)
    orthonormal = canary_directions(30, 50)
    np.testing.assert_allclose(orthonormal @ orthonormal.T, np.eye(30), atol=1e-10)
    crowded = canary_directions(80, 50)
    np.testing.assert_allclose(np.linalg.norm(crowded, axis=1), 1.0)


def audit_settings(*flags: str, clients: int = 10, canaries: int = 60):
    args = build_parser().parse_args(
        ["privacy", "audit", "--clients", str(clients), "--canaries", str(canaries), *flags]
    )
    args.round_timeout, args.fraction_evaluate = None, 0.0
    return settings_from_args(args, num_clients=clients + canaries)


def test_absent_canaries_leave_the_run_as_it_was() -> None:
    """A canary whose coin says out changes nothing: the model is the run without canaries."""
    settings = audit_settings("--rounds", "2")
    found = run_audit(digits_app, settings, canaries=60, guesses=30, secret_bits=np.zeros(60, bool))
    assert found.result.included == 0
    plain = digits_app.simulation(replace(settings, num_clients=10))
    history = run_simulation(
        plain.client_fn,
        10,
        strategy=plain.strategy,
        config=ServerConfig(num_rounds=2),
        seed=0,
        engine="sequential",
    )
    np.testing.assert_allclose(flat_floats(found.model), flat_floats(history.parameters))


def test_dp_run_bound_is_within_the_accountants_epsilon() -> None:
    found = run_audit(
        digits_app, audit_settings(*CENTRAL, "--rounds", "3"), canaries=60, guesses=30
    )
    assert found.epsilon is not None and found.epsilon > 1
    assert 0 <= found.result.epsilon <= found.epsilon
    assert found.canary_norm == 1.0  # the clip norm: the longest update DP lets through


def test_run_without_dp_gives_a_large_bound() -> None:
    found = run_audit(
        digits_app, audit_settings("--rounds", "3", canaries=100), canaries=100, guesses=50
    )
    assert found.epsilon is None
    # All 50 guesses right gives 2.78; the clients' own updates sometimes hide a canary or two
    # (one run in ten here), so the test allows up to 4 wrong (1.56), not the 2 that one run
    # in fifty reaches (1.99): large either way, next to a DP run's bound of at most ~0.1-2.
    assert found.result.epsilon > 1.5


def test_audit_command(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        ["privacy", "audit", *CENTRAL, "--clients", "5", "--canaries", "30", "--rounds", "2"]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "each of 35 clients joins a round" in out  # the canaries are in the population
    assert "canaries     30," in out and "guesses      15" in out
    bound = float(out.split("ε >=")[1].split()[0])
    spent = float(out.split("  ε            ")[1].split()[0])
    assert bound <= spent


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--dp", "local", "--noise-multiplier", "1", "--clip-norm", "1"], "audit --dp central"),
        (["--canaries", "10", "--guesses", "11"], "exceeds --canaries 10"),
        (["--strategy", "fedsgd"], "asks clients for gradients"),
    ],
)
def test_audit_command_refuses(
    flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["privacy", "audit", "--rounds", "1", *flags]) == 2
    assert message in capsys.readouterr().err


def test_the_vectorized_engine_is_refused() -> None:
    settings = replace(audit_settings("--rounds", "1"), engine="vectorized")
    with pytest.raises(ConfigurationError, match="sequential or process engine"):
        run_audit(digits_app, settings, canaries=60, guesses=30)


def test_coins_and_directions_come_from_the_os_csprng(monkeypatch: pytest.MonkeyPatch) -> None:
    import roost.privacy.noise as noise

    monkeypatch.setattr(noise.os, "urandom", lambda n: b"\x07" * n)
    fixed = noise.SecureRandom(b"\x07" * 32)
    assert secret_bits(64).tolist() == fixed.bernoulli(0.5, 64).tolist()
    np.testing.assert_array_equal(
        canary_directions(3, 5), canary_directions(3, 5, noise.SecureRandom(b"\x07" * 32))
    )
