"""A named strategy from a project's run config: `strategy = "fedprox"` plus that preset's options.

    [tool.roost.config]
    strategy = "fedprox"
    proximal-mu = 0.1          # the option's name in kebab case, or its flag: server-lr = 0.05
    learning-rate = 0.1        # fills options that restate it (FedAdam's eta-l, ...)

`strategy_from_run_config(run_config, **knobs)` builds it, with the app's knobs (fractions,
config functions, metric aggregation). Keys naming another preset's options are left alone, so one
run config can hold the options of several strategies and switch between them with `strategy`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from roost.errors import ConfigurationError
from roost.strategy.options import NamedStrategy, Option
from roost.strategy.presets import PRESETS, preset

STRATEGY_KEY = "strategy"
"""The run-config key naming the preset (default: fedavg)."""


def option_keys(option: Option) -> tuple[str, ...]:
    """The run-config keys that set `option`: its name in kebab case, and its flag's name."""
    keys = [option.name.replace("_", "-")]
    if option.flag is not None and option.flag[2:] not in keys:
        keys.append(option.flag[2:])
    return tuple(keys)


def strategy_option_keys() -> frozenset[str]:
    """Every run-config key that sets an option of some preset, and `strategy` itself."""
    keys = {key for cls in PRESETS.values() for o in cls.options for key in option_keys(o)}
    return frozenset({STRATEGY_KEY, *keys})


def strategy_from_run_config(run_config: Mapping[str, Any], **knobs: Any) -> NamedStrategy:
    """The preset `run_config["strategy"]` names (default fedavg), with its options from the run
    config and `knobs` (any `Strategy` argument: fractions, config functions, ...).

    An unknown name, a missing required option or a value of the wrong type is a
    `ConfigurationError` that names the run-config key.
    """
    name = str(run_config.get(STRATEGY_KEY, "fedavg"))
    key = name.lower().replace("-", "").replace("_", "")
    if key not in PRESETS:
        raise ConfigurationError(
            f"run config strategy = {name!r} is not a roost strategy; choose one of: "
            f"{', '.join(sorted(PRESETS))}"
        )
    options: dict[str, Any] = {}
    for option in PRESETS[key].options:
        given = [k for k in option_keys(option) if k in run_config]
        if len(given) > 1:
            raise ConfigurationError(
                f"run config sets {option.name} of {name} twice ({' and '.join(given)}); keep one"
            )
        if given:
            options[option.name] = run_config[given[0]]
        elif option.mirrors is not None and option.mirrors.replace("_", "-") in run_config:
            options[option.name] = run_config[option.mirrors.replace("_", "-")]
        elif option.required:
            raise ConfigurationError(
                f"run config strategy = {name!r} needs {option_keys(option)[0]} "
                f"({option.help}), e.g. --run-config {option_keys(option)[0]}=..."
            )
    return preset(key, **options, **knobs)
