"""`roost privacy epsilon | noise | audit`: plan a private run, or audit one.

    roost privacy epsilon --noise-multiplier 1.0 --rounds 200 --q 0.01 --population 10000
    roost privacy noise --target-epsilon 3 --rounds 200 --cohort 100 --population 10000
    roost privacy audit --dp central --noise-multiplier 1 --clip-norm 1 --canaries 200

For DP-FedAvg (central DP): `epsilon` is the ε spent after R rounds with noise multiplier σ,
sampling rate q (or m of N clients) and δ; `noise` is the σ that keeps ε within a target. Every
number comes from the `dp_accounting` library (`roost.privacy.accounting`); the options are
`roost.privacy.planning`'s. `audit` runs the default app with canary clients added and reports a
lower bound on ε measured from the run itself (`roost.cli.audit`, `roost.privacy.audit`), next
to the accountant's ε.
"""

from __future__ import annotations

import argparse
import sys
from functools import partial

from roost.app import App
from roost.cli.dp_options import add_privacy_arguments
from roost.cli.options import (
    CommandParser,
    positive_float,
    positive_fraction,
    positive_int,
    probability,
)
from roost.cli.strategy_options import add_strategy_arguments
from roost.errors import ConfigurationError
from roost.privacy import planning


def add_command(root: CommandParser, default_app: App) -> None:
    """Add `roost privacy` to `root`; `audit` runs `default_app`."""
    parser = root.add_command("privacy", __doc__)
    questions = planning.add_arguments(parser)
    audit = questions.add_parser(
        "audit",
        help="a lower bound on ε measured from one run with canary clients",
        description="Run the default app with canary clients added (each in the run with "
        "probability 1/2, secretly) and bound ε from below by how well the final model reveals "
        "which took part (Steinke, Nasr, Jagielski 2023: one-run auditing).",
    )
    add_audit_arguments(audit)
    parser.set_defaults(handler=partial(run, default_app=default_app))


def add_audit_arguments(parser: argparse.ArgumentParser) -> None:
    """`roost privacy audit`'s options: the run's (as `roost simulate` has them) and the audit's."""
    parser.add_argument(
        "--clients", type=positive_int, default=10, help="real clients, N (default: %(default)s)"
    )
    parser.add_argument(
        "--rounds", type=positive_int, default=5, help="federated rounds (default: %(default)s)"
    )
    parser.add_argument(
        "--fraction-fit",
        type=positive_fraction,
        default=1.0,
        help="share of the N + m clients sampled per round (with --dp central: q; default: "
        "%(default)s)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the data split and sampling (default: %(default)s)",
    )
    group = parser.add_argument_group("audit")
    group.add_argument(
        "--canaries",
        type=positive_int,
        default=200,
        help="canary clients, m (default: %(default)s)",
    )
    group.add_argument(
        "--guesses",
        type=positive_int,
        default=None,
        help="canaries guessed: in for the highest scores, out for the lowest (default: m/2)",
    )
    group.add_argument(
        "--canary-norm",
        type=positive_float,
        default=None,
        metavar="B",
        help="length of a canary's update (default: the clip norm; without one, as long as a "
        "client's first update)",
    )
    group.add_argument(
        "--confidence", type=probability, default=0.95, help="1 − β of the bound (0.95)"
    )
    add_strategy_arguments(parser)
    add_privacy_arguments(parser)


def run(args: argparse.Namespace, default_app: App) -> int:
    """Answer `roost privacy QUESTION`; 0 on success, 2 (with a message) on bad input."""
    if args.privacy_command != "audit":
        return planning.run(args)
    try:
        text = audit_report(args, default_app)
    except ConfigurationError as error:
        print(f"roost privacy audit: error: {error}", file=sys.stderr)
        return 2
    print(text)
    return 0


def audit_report(args: argparse.Namespace, app: App) -> str:
    """Run the audit `args` ask for on `app`; its report as text."""
    from roost.cli.audit import audit_text  # loads scipy and the round loop: only when asked

    return audit_text(args, app)
