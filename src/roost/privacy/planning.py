"""Planning a private run before it starts: `roost privacy epsilon | noise`.

Two questions, answered by `roost.privacy.accounting` (hence by `dp_accounting`):

- ``epsilon``: what ε does a run spend after R rounds with noise multiplier σ, sampling rate q
  (or m of N clients) and δ?
- ``noise``: what σ keeps ε at or below a target after R rounds?

`epsilon_report` and `noise_report` return the answer as a short text; `add_arguments(parser)`
and `run(args)` make them a command-line subcommand:

    roost privacy epsilon --noise-multiplier 1.0 --rounds 200 --cohort 100 --population 10000
    roost privacy noise --target-epsilon 3 --rounds 200 --q 0.01 --delta 1e-5
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from roost.errors import ConfigurationError
from roost.privacy import accounting


def _cohort_lines(cohort: accounting.Cohort) -> list[str]:
    if cohort.sampling == "fixed":
        return [
            f"  sampling     fixed: {cohort.size} of {cohort.population} clients per round "
            f"(q = {cohort.rate:.4g})"
        ]
    expected = (
        f", about {cohort.rate * cohort.population:.4g} of {cohort.population} clients"
        if cohort.population
        else ""
    )
    return [f"  sampling     poisson: each client with probability q = {cohort.rate:.4g}{expected}"]


def _delta(delta: float | None, cohort: accounting.Cohort) -> tuple[float, str]:
    if delta is not None:
        return delta, ""
    if cohort.population is None:
        raise ConfigurationError(
            f"give --delta, or --population to use δ = {accounting.DEFAULT_DELTA_RULE}"
        )
    return accounting.default_delta(cohort.population), f" ({accounting.DEFAULT_DELTA_RULE})"


def epsilon_report(
    noise_multiplier: float,
    rounds: int,
    delta: float | None = None,
    *,
    accountant: str = "rdp",
    **sampling: Any,
) -> str:
    """ε after `rounds` rounds, as text.

    `sampling`, `q`, `cohort`, `population` and `accountant` are as for
    `roost.privacy.accounting.epsilon`; δ defaults to min(1e-5, 1/N²) when `population` is given.
    """
    cohort = accounting.Cohort.of(**sampling)
    delta, delta_note = _delta(delta, cohort)
    value = accounting.epsilon(noise_multiplier, rounds, delta, accountant=accountant, **sampling)
    return "\n".join(
        [
            "DP-FedAvg privacy after a run",
            *_cohort_lines(cohort),
            f"  noise σ      {noise_multiplier:g} (std σ·C on the sum of updates clipped to C)",
            f"  rounds       {rounds}",
            f"  δ            {delta:.3g}{delta_note}",
            f"  ε            {value:.4g} ({accountant.upper()} accountant, dp_accounting)",
        ]
    )


def noise_report(
    target_epsilon: float,
    rounds: int,
    delta: float | None = None,
    *,
    accountant: str = "rdp",
    **sampling: Any,
) -> str:
    """The σ that keeps ε within `target_epsilon` after `rounds` rounds, as text.

    Arguments as for `epsilon_report`.
    """
    cohort = accounting.Cohort.of(**sampling)
    delta, delta_note = _delta(delta, cohort)
    sigma = accounting.noise_multiplier_for(
        target_epsilon, rounds, delta, accountant=accountant, **sampling
    )
    reached = accounting.epsilon(sigma, rounds, delta, accountant=accountant, **sampling)
    lines = [
        "DP-FedAvg noise for a privacy target",
        *_cohort_lines(cohort),
        f"  target       ε <= {target_epsilon:g} after {rounds} rounds",
        f"  δ            {delta:.3g}{delta_note}",
        f"  noise σ      {sigma:.4g} (gives ε = {reached:.4g}, {accountant.upper()} accountant)",
    ]
    if cohort.population:
        expected = cohort.rate * cohort.population
        lines.append(
            f"  on the mean  noise std {sigma / expected:.3g}·C per coordinate "
            f"({expected:.4g} clients per round)"
        )
    return "\n".join(lines)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an int >= 1, got {value}")
    return value


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rounds", type=_positive_int, required=True, help="federated rounds")
    parser.add_argument(
        "--sampling",
        choices=accounting.SAMPLINGS,
        default="poisson",
        help="poisson: each client with probability q; fixed: exactly --cohort of --population "
        "(default: %(default)s)",
    )
    parser.add_argument("--q", type=float, default=None, help="participation probability")
    parser.add_argument("--cohort", type=_positive_int, default=None, help="clients per round, m")
    parser.add_argument("--population", type=_positive_int, default=None, help="all clients, N")
    parser.add_argument(
        "--delta", type=float, default=None, help=f"δ (default: {accounting.DEFAULT_DELTA_RULE})"
    )
    parser.add_argument(
        "--accountant",
        choices=accounting.ACCOUNTANTS,
        default="rdp",
        help="rdp (both samplings) or pld (poisson only) (default: %(default)s)",
    )


def add_arguments(parser: argparse.ArgumentParser) -> Any:
    """Add the `epsilon` and `noise` subcommands and their options to `parser`; return the
    subcommands' action, to which a command may add more (`roost privacy audit`)."""
    commands = parser.add_subparsers(dest="privacy_command", required=True, metavar="QUESTION")
    epsilon = commands.add_parser("epsilon", help="ε after R rounds of DP-FedAvg")
    epsilon.add_argument(
        "--noise-multiplier", type=float, required=True, help="σ: noise std over the clip norm"
    )
    _add_common(epsilon)
    noise = commands.add_parser("noise", help="the noise multiplier σ for a target ε")
    noise.add_argument("--target-epsilon", type=float, required=True, help="the ε not to exceed")
    _add_common(noise)
    return commands


def run(args: argparse.Namespace) -> int:
    """Print the answer to the chosen question; 0 on success, 2 (with a message) on bad input."""
    common = {
        "sampling": args.sampling,
        "q": args.q,
        "cohort": args.cohort,
        "population": args.population,
        "accountant": args.accountant,
    }
    try:
        if args.privacy_command == "epsilon":
            text = epsilon_report(args.noise_multiplier, args.rounds, args.delta, **common)
        else:
            text = noise_report(args.target_epsilon, args.rounds, args.delta, **common)
    except ConfigurationError as error:
        print(f"roost privacy: error: {error}", file=sys.stderr)
        return 2
    print(text)
    return 0
