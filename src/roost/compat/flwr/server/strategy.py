"""`flwr.server.strategy` names: roost's named strategies, taking Flower's `Parameters` too.

Each class here is the roost preset of the same name (a subclass of it), so every roost knob also
works. `initial_parameters` may be `ndarrays_to_parameters(...)` or a plain list of arrays, and
Flower's `inplace=` is accepted and ignored (roost's mean is always a running sum).
"""

from __future__ import annotations

from typing import Any

import roost.strategy as _roost_strategy
from roost.compat.flwr.common import as_ndarrays

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


def _compatible(base: type) -> type:
    def __init__(
        self: Any, *, initial_parameters: Any = None, inplace: bool = True, **kwargs: Any
    ) -> None:
        base.__init__(self, initial_parameters=as_ndarrays(initial_parameters), **kwargs)

    return type(
        base.__name__,
        (base,),
        {
            "__init__": __init__,
            "__doc__": base.__doc__,
            "__module__": __name__,
        },
    )


__all__: list[str] = []
for _name in NAMES:
    _base = getattr(_roost_strategy, _name, None)
    if _base is not None:
        globals()[_name] = _compatible(_base)
        __all__.append(_name)
