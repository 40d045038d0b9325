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
        base.__init__(self, initial_parameters=as_ndarrays(initial_parameters), **kwargs)

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
