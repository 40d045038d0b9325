"""`flwr.server.strategy`: Flower's classic `Strategy` interface and its named strategies.

`Strategy` is Flower's abstract class (`roost.compat.flwr.server.classic`): write one from scratch,
or subclass a named one and override its steps (`configure_fit`, `aggregate_fit`, …) with
`super()` calls, as on Flower. Each named class is a classic strategy whose steps are the roost
preset of the same name (`roost.compat.flwr.server.builtin`); it is a subclass of that preset
too, so every roost knob also works. Its signature and docstring are the preset's own
declaration (`Option` records, `roost.strategy.options`) with Flower's `inplace` added.
`initial_parameters` may be `ndarrays_to_parameters(...)` or a plain list of arrays; `inplace=`
is accepted and ignored (roost's mean is always a running sum). FedAdagrad, FedAdam and FedYogi
follow Flower's arithmetic (`convention="flower"`, see `roost.strategy.optimizers`).
"""

from __future__ import annotations

import inspect
from typing import Any

import roost.strategy.presets as _presets
from roost.compat.flwr.clientapp.mod import CLIPPING_NORM_KEY
from roost.compat.flwr.common import as_ndarrays
from roost.compat.flwr.dp import FixedClippingDP
from roost.compat.flwr.server.builtin import BuiltIn
from roost.compat.flwr.server.classic import ClientFailure, Strategy
from roost.errors import ConfigurationError
from roost.strategy.options import NamedStrategy

NAMES = (
    "FedAvg",
    "FedAvgM",
    "FedAdagrad",
    "FedAdam",
    "FedYogi",
    "FedProx",
    "FedMedian",
    "FedTrimmedAvg",
    "Krum",
    "Bulyan",
    "QFedAvg",
)
"""The strategies Flower and roost both name (Flower's spelling)."""

_INPLACE = inspect.Parameter(
    "inplace", inspect.Parameter.KEYWORD_ONLY, default=True, annotation="bool"
)


def _compatible(base: type[NamedStrategy]) -> type[NamedStrategy]:
    flower_defaults = {"convention": "flower"} if "convention" in _option_names(base) else {}

    def __init__(
        self: Any, *, initial_parameters: Any = None, inplace: bool = True, **kwargs: Any
    ) -> None:
        arguments = {
            "initial_parameters": as_ndarrays(initial_parameters),
            **flower_defaults,
            **kwargs,
        }
        base.__init__(self, **arguments)
        self.flower_arguments = arguments  # to rebuild it with parts added (the DP wrapper)

    cls = type(
        base.__name__,
        (BuiltIn, base),
        {
            "__init__": __init__,
            "__doc__": base.__doc__,
            "__module__": __name__,
            "preset": base,
        },
    )
    signature = inspect.signature(base)
    parameters = [
        p.replace(default="flower") if p.name in flower_defaults else p
        for p in signature.parameters.values()
    ]
    cls.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[*parameters, _INPLACE]
    )
    return cls


def _option_names(base: type[NamedStrategy]) -> set[str]:
    return {option.name for option in base.options}


__all__: list[str] = ["ClientFailure", "Strategy"]
for _name in NAMES:
    globals()[_name] = _compatible(_presets.PRESETS[_name.lower()])
    __all__.append(_name)


def DifferentialPrivacyServerSideFixedClipping(  # Flower's class name, kept
    strategy: NamedStrategy,
    noise_multiplier: float,
    clipping_norm: float,
    num_sampled_clients: int,
) -> NamedStrategy:
    """`strategy` with central DP, fixed clipping on the server: Flower's wrapper of this name.

    Returns the same named strategy rebuilt with two update transforms added: every update
    clipped to L2 norm C, Gaussian noise of std σ·C/m on the aggregated update (the arithmetic
    and its differences from Flower's are in `roost.compat.flwr.dp`). No ε is reported.

    Args:
        strategy: one of this module's strategies (FedAvg, FedAdam, …).
        noise_multiplier: σ.
        clipping_norm: C, the L2 bound of every client's update.
        num_sampled_clients: m, the clients expected each round.
    """
    return _with_dp(
        "DifferentialPrivacyServerSideFixedClipping",
        strategy,
        FixedClippingDP(noise_multiplier, clipping_norm, num_sampled_clients),
        clip_on_clients=False,
    )


def DifferentialPrivacyClientSideFixedClipping(  # Flower's class name, kept
    strategy: NamedStrategy,
    noise_multiplier: float,
    clipping_norm: float,
    num_sampled_clients: int,
) -> NamedStrategy:
    """`strategy` with central DP, fixed clipping on the clients: Flower's wrapper of this name.

    As `DifferentialPrivacyServerSideFixedClipping`, and every fit config also carries
    `"clipping_norm": C`, which the clients' `fixedclipping_mod` clips their update to. The
    server clips as well, so a client without the mod cannot send a larger update (a no-op for
    one with it). Arguments as `DifferentialPrivacyServerSideFixedClipping`'s.
    """
    return _with_dp(
        "DifferentialPrivacyClientSideFixedClipping",
        strategy,
        FixedClippingDP(noise_multiplier, clipping_norm, num_sampled_clients),
        clip_on_clients=True,
    )


def _with_dp(
    wrapper: str, strategy: NamedStrategy, dp: FixedClippingDP, *, clip_on_clients: bool
) -> NamedStrategy:
    """`strategy` rebuilt from its own arguments with `dp`'s clipping and noise added."""
    arguments = getattr(strategy, "flower_arguments", None)
    if arguments is None:
        raise ConfigurationError(
            f"{wrapper} wraps one of flwr.server.strategy's named strategies "
            f"(FedAvg, FedAdam, …); got {type(strategy).__name__}"
        )
    rebuilt = {
        **arguments,
        "update_transforms": (*arguments.get("update_transforms", ()), *dp.transforms(wrapper)),
    }
    if clip_on_clients:
        rebuilt["fit_config_defaults"] = {
            **(arguments.get("fit_config_defaults") or {}),
            CLIPPING_NORM_KEY: float(dp.clipping_norm),
        }
    return type(strategy)(**rebuilt)


__all__ += [
    "DifferentialPrivacyClientSideFixedClipping",
    "DifferentialPrivacyServerSideFixedClipping",
]
