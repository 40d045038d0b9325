"""`--dp central|local` and its options: DP for `roost simulate | server | client`.

- `--dp central`: DP-FedAvg on the server (`roost.privacy.with_central_dp`): a secret sampler
  (`--sampling poisson|fixed`, the rate from `--fraction-fit`), updates clipped to `--clip-norm`
  (adaptive with `--clip-quantile`), Gaussian noise `--noise-multiplier` × C on their sum, a
  uniform mean. It composes with every `--strategy` that averages updates (FedAvg, FedAvgM,
  FedAdam, FedProx, ...) and is refused for robust aggregators (median, Krum, ...).
- `--dp local`: every client clips and noises its own update (`roost.privacy.LocalDPClientFn`);
  with `roost server`, the clients must do it themselves (`roost client --dp local ...`). The
  server records what that costs each client (`roost.privacy.LocalDPAccountant`).

`--delta` defaults to min(1e-5, 1/N²) for N clients (and the run says so) and refuses 1/N or
more; `--target-epsilon` stops the run before the round that would exceed it. Without `--dp`,
`--clip-norm` / `--clip-quantile` keep their plain meaning: clipping, no privacy.
"""

from __future__ import annotations

import argparse

from roost.cli.options import non_negative_float, positive_float, probability
from roost.client.client import ClientFn
from roost.errors import ConfigurationError
from roost.privacy.accounting import (
    DEFAULT_DELTA_RULE,
    SAMPLINGS,
    default_delta,
    local_epsilon,
    resolve_delta,
)
from roost.privacy.central import CentralDPParams
from roost.privacy.local import LocalDPClientFn
from roost.settings import PrivacySettings

MODES = ("central", "local")
"""What `--dp` accepts."""

_CENTRAL_ONLY = {"sampling": "--sampling", "clip_quantile": "--clip-quantile"}
_DP_ONLY = {
    "noise_multiplier": "--noise-multiplier",
    "delta": "--delta",
    "target_epsilon": "--target-epsilon",
    "sampling": "--sampling",
}


def add_privacy_arguments(parser: argparse.ArgumentParser, *, client: bool = False) -> None:
    """Add `--dp` and its options; a `client` (`roost client`) takes local DP's only."""
    group = parser.add_argument_group(
        "differential privacy",
        "client-level DP: see docs/how-to/privacy.md (`roost privacy` plans it)",
    )
    group.add_argument(
        "--dp",
        choices=("local",) if client else MODES,
        default=None,
        help="local: this client clips and noises its updates before sending them"
        if client
        else "central: DP-FedAvg on the server; local: every client noises its own update",
    )
    group.add_argument(
        "--noise-multiplier",
        type=non_negative_float,
        default=None,
        metavar="S",
        help="σ: Gaussian noise of std σ·C (on the sum of updates, or on each update with local)",
    )
    if client:
        group.add_argument(
            "--clip-norm", type=positive_float, default=None, metavar="C", help="L2 bound C"
        )
        return
    group.add_argument(
        "--delta",
        type=probability,
        default=None,
        metavar="D",
        help=f"δ of the reported ε (default: {DEFAULT_DELTA_RULE} for N clients)",
    )
    group.add_argument(
        "--target-epsilon",
        type=positive_float,
        default=None,
        metavar="E",
        help="stop before the round that would spend more than ε = E",
    )
    group.add_argument(
        "--sampling",
        choices=SAMPLINGS,
        default=None,
        help="central: each client with probability --fraction-fit (poisson, the default), or "
        "exactly that share of the clients (fixed), drawn in secret",
    )


def privacy_settings(
    args: argparse.Namespace, *, num_clients: int, fraction_fit: float
) -> PrivacySettings | None:
    """The `--dp` settings `args` give for `num_clients` clients of which a `fraction_fit` share
    trains each round (None without `--dp`).

    Refuses, with a line saying what to do, options that need `--dp` without it, and options
    that do not fit the chosen mode.
    """
    mode = args.dp
    if args.strategy == "dpfedavg":
        if mode == "local":
            raise ConfigurationError("--strategy dpfedavg is central DP; drop --dp local")
        mode = "central"
    if mode is None:
        if given := [flag for dest, flag in _DP_ONLY.items() if getattr(args, dest) is not None]:
            raise ConfigurationError(f"{given[0]} needs --dp central or --dp local")
        return None
    if args.noise_multiplier is None or args.clip_norm is None:
        needs = "--strategy dpfedavg" if args.dp is None else f"--dp {mode}"
        raise ConfigurationError(
            f"{needs} needs --noise-multiplier and --clip-norm (`roost privacy noise` finds the "
            "noise multiplier for a target ε)"
        )
    if mode == "local" and (
        given := [flag for dest, flag in _CENTRAL_ONLY.items() if getattr(args, dest) is not None]
    ):
        raise ConfigurationError(
            f"{given[0]} is for --dp central: with --dp local every client clips to a fixed "
            "--clip-norm, and the server does not choose who is private"
        )
    expected = min(num_clients, max(1, round(fraction_fit * num_clients)))
    # σ_b of adaptive clipping's noisy count: the paper's m/20, but at least σ, so that small
    # cohorts keep most of the budget for the updates (it must exceed σ/2).
    count_noise = None if args.clip_quantile is None else max(expected / 20, args.noise_multiplier)
    params = CentralDPParams(
        args.noise_multiplier,
        args.clip_norm,
        expected,
        num_clients=num_clients,
        sampling=args.sampling or "poisson",
        delta=resolve_delta(args.delta, num_clients),
        target_epsilon=args.target_epsilon,
        clip_quantile=args.clip_quantile,
        count_noise_stddev=count_noise,
    )
    return PrivacySettings(params, mode=mode, delta_is_default=args.delta is None)


def privacy_flags_given(args: argparse.Namespace) -> bool:
    """Whether any `--dp` option is set in `args`."""
    return any(getattr(args, dest, None) is not None for dest in ("dp", *_DP_ONLY))


def client_privacy(args: argparse.Namespace, client_fn: ClientFn, num_partitions: int) -> ClientFn:
    """`roost client`'s `client_fn`, wrapped in local DP with `--dp local` (and a line saying
    what each round costs); unchanged without it."""
    if args.dp is None:
        if args.noise_multiplier is not None or args.clip_norm is not None:
            raise ConfigurationError("--noise-multiplier and --clip-norm need --dp local")
        return client_fn
    if args.noise_multiplier is None or args.clip_norm is None:
        raise ConfigurationError("--dp local needs --noise-multiplier and --clip-norm")
    delta = default_delta(num_partitions)
    spent = local_epsilon(args.noise_multiplier, delta, discretization=1e-2)
    print(
        f"local DP: this client clips its updates to C = {args.clip_norm:g} and adds noise "
        f"σ = {args.noise_multiplier:g} before sending; each round it takes part in costs "
        f"ε = {spent:.4g} at δ = {delta:.3g} ({DEFAULT_DELTA_RULE} for N = {num_partitions})"
    )
    return LocalDPClientFn(client_fn, args.clip_norm, args.noise_multiplier)
