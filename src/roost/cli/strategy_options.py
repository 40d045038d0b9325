"""The command line's strategy options: `--strategy NAME`, the presets' parameters, clipping.

`add_strategy_arguments(parser)` adds them; `strategy_options(args)` turns the given ones into the
chosen preset's keyword arguments; `strategy_from_args(args, like=...)` builds that preset with an
app's FedAvg knobs.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from roost.cli.options import non_negative_float, non_negative_int
from roost.errors import ConfigurationError
from roost.strategy.presets import PRESETS, preset
from roost.strategy.strategy import Strategy
from roost.strategy.transforms import AdaptiveClipL2, ClipL2

# CLI option (argparse dest) -> {preset: keyword of that preset}
_PRESET_OPTIONS: dict[str, dict[str, str]] = {
    "server_lr": {
        "fedavgm": "server_learning_rate",
        "fedadagrad": "eta",
        "fedadam": "eta",
        "fedyogi": "eta",
        "fedsgd": "learning_rate",
    },
    "server_momentum": {"fedavgm": "server_momentum"},
    "beta1": {"fedadagrad": "beta_1", "fedadam": "beta_1", "fedyogi": "beta_1"},
    "beta2": {"fedadam": "beta_2", "fedyogi": "beta_2"},
    "tau": {"fedadagrad": "tau", "fedadam": "tau", "fedyogi": "tau"},
    "proximal_mu": {"fedprox": "proximal_mu"},
    "trim_beta": {"fedtrimmedavg": "beta"},
    "num_malicious": {
        "krum": "num_malicious_clients",
        "multikrum": "num_malicious_clients",
        "bulyan": "num_malicious_clients",
    },
    "num_keep": {"krum": "num_clients_to_keep", "multikrum": "num_clients_to_keep"},
    "q": {"qfedavg": "q_param"},
    "weight_metric": {"fedweightedavg": "weight_metric"},
}


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


# --option: (type, help); the preset parameters among them set what _PRESET_OPTIONS says.
_FLAGS: dict[str, tuple[Callable[[str], Any], str]] = {
    "server_lr": (float, "server learning rate (fedavgm, fedadagrad, fedadam, fedyogi, fedsgd)"),
    "server_momentum": (non_negative_float, "server momentum (fedavgm)"),
    "beta1": (non_negative_float, "first-moment decay β₁ (fedadagrad, fedadam, fedyogi)"),
    "beta2": (non_negative_float, "second-moment decay β₂ (fedadam, fedyogi)"),
    "tau": (float, "adaptivity τ (fedadagrad, fedadam, fedyogi)"),
    "proximal_mu": (non_negative_float, "proximal term μ (fedprox; required there)"),
    "trim_beta": (non_negative_float, "share trimmed from each end (fedtrimmedavg)"),
    "num_malicious": (non_negative_int, "attackers to tolerate, f (krum, multikrum, bulyan)"),
    "num_keep": (non_negative_int, "updates averaged after selection (krum, multikrum)"),
    "q": (non_negative_float, "fairness parameter q (qfedavg)"),
    "weight_metric": (str, "weight clients by this fit metric (fedweightedavg)"),
    "clip_norm": (float, "clip every client update to this L2 norm (any strategy)"),
    "clip_quantile": (
        non_negative_float,
        "adapt the clip norm (starting at --clip-norm) so this share of updates stays unclipped",
    ),
}
_METAVARS = {"weight_metric": "NAME"}


def add_strategy_arguments(parser: argparse.ArgumentParser) -> None:
    """Add `--strategy NAME`, the presets' parameters and the clipping options to `parser`."""
    group = parser.add_argument_group(
        "strategy", "the aggregation strategy; unset parameters keep the preset's defaults"
    )
    group.add_argument(
        "--strategy",
        choices=sorted(PRESETS),
        default="fedavg",
        metavar="NAME",
        help=f"one of: {', '.join(sorted(PRESETS))} (default: %(default)s)",
    )
    for dest, (kind, text) in _FLAGS.items():
        group.add_argument(
            _flag(dest), type=kind, default=None, metavar=_METAVARS.get(dest), help=text
        )


def strategy_options(args: argparse.Namespace) -> dict[str, Any]:
    """The chosen preset's keyword arguments from `args`; options for other presets are errors."""
    name = args.strategy
    options: dict[str, Any] = {}
    for dest, by_preset in _PRESET_OPTIONS.items():
        value = getattr(args, dest, None)
        if value is None:
            continue
        if name not in by_preset:
            raise ConfigurationError(
                f"{_flag(dest)} does not apply to --strategy {name}; it sets "
                f"{', '.join(sorted(by_preset))}"
            )
        options[by_preset[name]] = value
    if name == "fedprox" and "proximal_mu" not in options:
        raise ConfigurationError("--strategy fedprox needs --proximal-mu (e.g. 0.1)")
    clip_norm, clip_quantile = (
        getattr(args, "clip_norm", None),
        getattr(args, "clip_quantile", None),
    )
    if clip_quantile is not None and clip_norm is None:
        raise ConfigurationError("--clip-quantile needs --clip-norm (the starting bound)")
    if clip_norm is not None:
        options["update_transforms"] = [
            ClipL2(clip_norm)
            if clip_quantile is None
            else AdaptiveClipL2(initial_norm=clip_norm, target_quantile=clip_quantile)
        ]
    return options


def strategy_from_args(
    args: argparse.Namespace, *, like: Strategy | None = None, **overrides: Any
) -> Strategy:
    """Build `--strategy` with the FedAvg knobs of `like` (an app's strategy) and the options."""
    return preset(args.strategy, like=like, **{**strategy_options(args), **overrides})
