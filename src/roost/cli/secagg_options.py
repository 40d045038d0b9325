"""`--secagg` and its options: secure aggregation (SecAgg+) for `roost simulate | server`.

Clients need no flag: a deployed client answers the server's secure-aggregation phases by itself.
"""

from __future__ import annotations

import argparse

from roost.cli.options import positive_float, positive_int
from roost.errors import ConfigurationError
from roost.settings import RunSettings
from roost.strategy.secure import SecureAggregation
from roost.strategy.strategy import Strategy

_OPTIONS = {
    "secagg_threshold": "--secagg-threshold",
    "secagg_bits": "--secagg-bits",
    "secagg_clip": "--secagg-clip",
}


def add_secagg_arguments(parser: argparse.ArgumentParser) -> None:
    """Add `--secagg`, `--secagg-threshold`, `--secagg-bits` and `--secagg-clip`."""
    group = parser.add_argument_group(
        "secure aggregation", "the server learns only the sum of each round's updates (SecAgg+)"
    )
    group.add_argument(
        "--secagg", action="store_true", help="run every fit round with secure aggregation"
    )
    group.add_argument(
        "--secagg-threshold",
        type=positive_int,
        default=None,
        metavar="T",
        help="shares needed to rebuild a client's secret (default: the smallest secure value "
        "for the cohort, a strict majority of each client's share holders)",
    )
    group.add_argument(
        "--secagg-bits",
        type=positive_int,
        default=None,
        metavar="K",
        help="arithmetic modulo 2^K (default: 32; more bits, finer quantization)",
    )
    group.add_argument(
        "--secagg-clip",
        type=positive_float,
        default=None,
        metavar="R",
        help="clip every coordinate of an update to [-R, R] before quantizing (default: 1, or "
        "--clip-norm when larger)",
    )


def secure_aggregation(args: argparse.Namespace) -> SecureAggregation | None:
    """The `SecureAggregation` `args` ask for (None without `--secagg`)."""
    if not getattr(args, "secagg", False):
        if given := [flag for dest, flag in _OPTIONS.items() if getattr(args, dest, None)]:
            raise ConfigurationError(f"{given[0]} needs --secagg")
        return None
    clip_norm = getattr(args, "clip_norm", None) or 0.0
    return SecureAggregation(
        clip_range=args.secagg_clip if args.secagg_clip is not None else max(1.0, clip_norm),
        bits=args.secagg_bits if args.secagg_bits is not None else 32,
        threshold=args.secagg_threshold,
    )


def secure_aggregation_line(settings: RunSettings, strategy: Strategy) -> str | None:
    """The line saying how a run's rounds are secured (None without `--secagg`)."""
    if settings.secure_aggregation is None:
        return None
    cohort = min(strategy.num_fit_clients(settings.num_clients), settings.num_clients)
    return describe(settings.secure_aggregation, cohort)


def describe(settings: SecureAggregation, cohort_size: int) -> str:
    """One line: the graph, threshold and quantization a cohort of `cohort_size` gets, and what
    they guarantee (`SecureAggregation.describe`)."""
    return settings.describe(cohort_size)
