"""`flwr.server.strategy` names: roost's named strategies, taking Flower's `Parameters` too.

Each class here is the roost preset of the same name (a subclass of it), so every roost knob also
works; its options, signature and docstring are the preset's own declaration (`Option` records,
`roost.strategy.options`), to which Flower's `inplace` is added. `initial_parameters` may be
`ndarrays_to_parameters(...)` or a plain list of arrays, and `inplace=` is accepted and ignored
(roost's mean is always a running sum).
"""

from __future__ import annotations

import inspect
from typing import Any

import roost.strategy.presets as _presets
from roost.compat.flwr.common import as_ndarrays
from roost.compat.flwr.dp import FixedClippingDP
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
    def __init__(
        self: Any, *, initial_parameters: Any = None, inplace: bool = True, **kwargs: Any
    ) -> None:
        arguments = {"initial_parameters": as_ndarrays(initial_parameters), **kwargs}
        base.__init__(self, **arguments)
        self.flower_arguments = arguments  # to rebuild it with parts added (the DP wrapper)

    cls = type(
        base.__name__,
        (base,),
        {"__init__": __init__, "__doc__": base.__doc__, "__module__": __name__},
    )
    signature = inspect.signature(base)
    cls.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[*signature.parameters.values(), _INPLACE]
    )
    return cls


__all__: list[str] = []
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
    arguments = getattr(strategy, "flower_arguments", None)
    if arguments is None:
        raise ConfigurationError(
            "DifferentialPrivacyServerSideFixedClipping wraps one of flwr.server.strategy's "
            f"named strategies (FedAvg, FedAdam, …); got {type(strategy).__name__}"
        )
    dp = FixedClippingDP(noise_multiplier, clipping_norm, num_sampled_clients)
    transforms = (*arguments.get("update_transforms", ()), *dp.transforms(_WRAPPER))
    return type(strategy)(**{**arguments, "update_transforms": transforms})


_WRAPPER = "DifferentialPrivacyServerSideFixedClipping"
__all__.append(_WRAPPER)
