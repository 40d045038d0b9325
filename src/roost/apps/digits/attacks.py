"""`roost simulate --attack KIND --attackers N`: some of the demo's clients attack.

The attacks themselves are generic (`roost.client.attacks`); this wires them to the command line
and to the demo's data (label flipping over its ten classes).
"""

from __future__ import annotations

import argparse

from roost.apps.digits.settings import NUM_CLASSES
from roost.cli.options import non_negative_float, non_negative_int
from roost.client.attacks import (
    Attack,
    GaussianNoise,
    LabelFlip,
    Scale,
    SignFlip,
    choose_malicious,
    with_attackers,
)
from roost.client.client import ClientFn
from roost.errors import ConfigurationError

ATTACKS = ("signflip", "scale", "noise", "labelflip")


def add_attack_arguments(parser: argparse.ArgumentParser) -> None:
    """Add `--attack`, `--attackers`, `--attack-scale` and `--attack-std` to `parser`."""
    group = parser.add_argument_group("attack", "simulate malicious clients")
    group.add_argument(
        "--attack", choices=ATTACKS, default=None, help="what the attackers do (default: no attack)"
    )
    group.add_argument(
        "--attackers",
        type=non_negative_int,
        default=None,
        help="number of malicious clients, chosen with --seed (default: 0)",
    )
    group.add_argument(
        "--attack-scale",
        type=float,
        default=None,
        help="k for signflip (send −k·update, default 1) and scale (send k·update, default 10)",
    )
    group.add_argument(
        "--attack-std",
        type=non_negative_float,
        default=None,
        help="noise standard deviation (noise, default 1)",
    )


def chosen_attack(args: argparse.Namespace) -> Attack:
    """The attack `--attack` names, with `--attack-scale` / `--attack-std` or their defaults."""
    scale = args.attack_scale
    if args.attack == "signflip":
        return SignFlip(scale if scale is not None else 1.0)
    if args.attack == "scale":
        return Scale(scale if scale is not None else 10.0)
    if args.attack == "noise":
        return GaussianNoise(args.attack_std if args.attack_std is not None else 1.0)
    return LabelFlip(num_classes=NUM_CLASSES)


def attacked_client_fn(args: argparse.Namespace, client_fn: ClientFn, num_clients: int) -> ClientFn:
    """`client_fn` with `--attackers` of the clients running `--attack` (unchanged without)."""
    if args.attack is None:
        if args.attackers or args.attack_scale is not None or args.attack_std is not None:
            raise ConfigurationError("--attackers/--attack-scale/--attack-std need --attack")
        return client_fn
    count = args.attackers
    if not count:
        raise ConfigurationError("--attack needs --attackers N (N >= 1)")
    if count > num_clients:
        raise ConfigurationError(f"--attackers {count} exceeds the {num_clients} clients")
    malicious = choose_malicious(num_clients, count, seed=args.seed)
    return with_attackers(client_fn, chosen_attack(args), malicious, seed=args.seed)
