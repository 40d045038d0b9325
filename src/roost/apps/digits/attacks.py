"""`roost simulate --attack KIND --attackers N`: some of the demo's clients attack.

The attacks themselves are generic (`roost.client.attacks`); this wires them to the command line
and to the demo's data (label flipping over its ten classes).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

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


def chosen_attack(options: Mapping[str, Any]) -> Attack:
    """The attack `--attack` names, with `--attack-scale` / `--attack-std` or their defaults."""
    scale, std = options.get("attack_scale"), options.get("attack_std")
    if options.get("attack") == "signflip":
        return SignFlip(scale if scale is not None else 1.0)
    if options.get("attack") == "scale":
        return Scale(scale if scale is not None else 10.0)
    if options.get("attack") == "noise":
        return GaussianNoise(std if std is not None else 1.0)
    return LabelFlip(num_classes=NUM_CLASSES)


def attacked_client_fn(
    options: Mapping[str, Any], client_fn: ClientFn, num_clients: int, seed: int
) -> ClientFn:
    """`client_fn` with `--attackers` of the clients running `--attack` (unchanged without);
    `options` are the attack options' values by name, `seed` chooses the attackers."""
    count = options.get("attackers")
    if options.get("attack") is None:
        if count or any(options.get(name) is not None for name in ("attack_scale", "attack_std")):
            raise ConfigurationError("--attackers/--attack-scale/--attack-std need --attack")
        return client_fn
    if not count:
        raise ConfigurationError("--attack needs --attackers N (N >= 1)")
    if count > num_clients:
        raise ConfigurationError(f"--attackers {count} exceeds the {num_clients} clients")
    malicious = choose_malicious(num_clients, count, seed=seed)
    return with_attackers(client_fn, chosen_attack(options), malicious, seed=seed)
