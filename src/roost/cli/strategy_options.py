"""The command line's strategy options: `--strategy NAME`, the presets' parameters, clipping.

The presets' flags are not written here: each preset declares its parameters once, as `Option`
records with a `flag` (`roost.strategy.options`), and this module turns every declared flag into
an option of `roost simulate` / `roost server`. A flag several presets declare (`--server-lr`)
sets each one's own parameter; given with a preset that does not declare it, it is an error.

`add_strategy_arguments(parser)` adds them; `strategy_spec(args, ...)` reads the given ones, once,
into the run's `roost.settings.StrategySpec`, which the app builds with its own knobs
(`RunSettings.build_strategy`).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from roost.cli.compress_options import compression
from roost.cli.dp_options import privacy_flags_given
from roost.cli.options import non_negative_float
from roost.errors import ConfigurationError
from roost.settings import PrivacySettings, StrategySpec
from roost.strategy.base import UpdateTransform
from roost.strategy.options import PRESETS, Option
from roost.strategy.secure import SecureAggregation
from roost.strategy.transforms import AdaptiveClipL2, ClipL2


def _declared_flags() -> dict[str, dict[str, Option]]:
    """Every flag the presets declare -> {preset name: its option}, checked for agreement."""
    flags: dict[str, dict[str, Option]] = {}
    for name, cls in PRESETS.items():
        for option in cls.options:
            if option.flag is not None:
                flags.setdefault(option.flag, {})[name] = option
    for flag, by_preset in flags.items():
        kinds = {(o.type, o.at_least, o.above) for o in by_preset.values()}
        if len(kinds) > 1:
            raise TypeError(f"presets declare {flag} with different types or bounds")
    return flags


PRESET_FLAGS = _declared_flags()
"""`--flag` -> {preset name: the `Option` it sets}, from the presets' declarations."""


def _dest(flag: str) -> str:
    return flag[2:].replace("-", "_")


def _argument_type(option: Option) -> Callable[[str], Any]:
    """`option.parse` as argparse's `type=`, whose error message argparse shows as it is."""

    def parse(text: str) -> Any:
        try:
            return option.parse(text)
        except ConfigurationError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return parse


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
    for flag, by_preset in PRESET_FLAGS.items():
        first = next(iter(by_preset.values()))
        group.add_argument(
            flag,
            type=_argument_type(first),
            default=None,
            help=f"{first.help} ({', '.join(by_preset)})",
        )
    add_clip_arguments(group)


def add_clip_arguments(group: argparse._ActionsContainer) -> None:
    """`--clip-norm` and `--clip-quantile` (plain clipping, or the DP bound with `--dp`)."""
    group.add_argument(
        "--clip-norm",
        type=float,
        default=None,
        help="clip every client update to this L2 norm (any strategy; with --dp, the DP bound C)",
    )
    group.add_argument(
        "--clip-quantile",
        type=non_negative_float,
        default=None,
        help="adapt the clip norm (starting at --clip-norm) so this share of updates stays "
        "unclipped",
    )


def strategy_options(args: argparse.Namespace) -> dict[str, Any]:
    """The chosen preset's own options from `args`; options for other presets are errors."""
    name = args.strategy
    options: dict[str, Any] = {}
    for flag, by_preset in PRESET_FLAGS.items():
        value = getattr(args, _dest(flag), None)
        if value is None:
            continue
        if name not in by_preset:
            presets = ", ".join(sorted(by_preset))
            raise ConfigurationError(
                f"{flag} does not apply to --strategy {name}; it sets {presets}"
            )
        options[by_preset[name].name] = value
    for option in PRESETS[name].options:
        if option.required and option.flag is not None and option.name not in options:
            raise ConfigurationError(f"--strategy {name} needs {option.flag}: {option.help}")
    return options


def clip_transform(args: argparse.Namespace) -> UpdateTransform | None:
    """`--clip-norm` / `--clip-quantile` as a clipping transform, without `--dp` (with it they
    are the DP bound, which `roost.cli.dp_options` reads)."""
    clip_norm, clip_quantile = (
        getattr(args, "clip_norm", None),
        getattr(args, "clip_quantile", None),
    )
    if clip_quantile is not None and clip_norm is None:
        raise ConfigurationError("--clip-quantile needs --clip-norm (the starting bound)")
    if clip_norm is None or getattr(args, "dp", None) is not None or args.strategy == "dpfedavg":
        return None
    if clip_quantile is None:
        return ClipL2(clip_norm)
    return AdaptiveClipL2(initial_norm=clip_norm, target_quantile=clip_quantile)


def strategy_spec(
    args: argparse.Namespace,
    privacy: PrivacySettings | None,
    secure: SecureAggregation | None,
) -> StrategySpec:
    """The strategy `args` ask for: `--strategy`, its options, clipping, `--dp` (`privacy`) and
    `--secagg` (`secure`) and `--compress`, read once; `RunSettings.build_strategy` builds it."""
    options = strategy_options(args)
    clip = clip_transform(args)
    codec = compression(args)
    given = bool(
        args.strategy != "fedavg"
        or options
        or getattr(args, "clip_norm", None) is not None
        or privacy_flags_given(args)
        or secure is not None
        or codec is not None
    )
    return StrategySpec(args.strategy, options, clip, privacy, secure, given, codec)
