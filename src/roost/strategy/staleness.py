"""Staleness functions: how much an asynchronous update counts, by how old its model was.

An update trained from model version v that arrives when the server is at version t has
staleness s = t − v. FedBuff and FedAsync (Nguyen et al. 2022; Xie et al. 2019) scale such an
update by s(·) ≤ 1 before it enters the buffer:

- constant: 1 (every update counts fully);
- polynomial: (1 + s)^(−a);
- hinge: 1 while s ≤ b, then 1 / (a·(s − b) + 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from roost.errors import ConfigurationError


class Staleness:
    """A staleness function: `weight = function(staleness)`, in (0, 1], with weight(0) = 1."""

    def __call__(self, staleness: int) -> float:
        raise NotImplementedError


@dataclass(frozen=True)
class ConstantStaleness(Staleness):
    """Every update counts fully, however stale."""

    def __call__(self, staleness: int) -> float:
        return 1.0


@dataclass(frozen=True)
class PolynomialStaleness(Staleness):
    """(1 + s)^(−a): FedBuff's default with a = 0.5."""

    a: float = 0.5

    def __post_init__(self) -> None:
        if not (math.isfinite(self.a) and self.a >= 0):
            raise ConfigurationError(f"polynomial staleness a must be >= 0, got {self.a}")

    def __call__(self, staleness: int) -> float:
        return float((1.0 + staleness) ** -self.a)


@dataclass(frozen=True)
class HingeStaleness(Staleness):
    """1 while s ≤ b, then 1 / (a·(s − b) + 1) (FedAsync's hinge; a = 10, b = 4 there)."""

    a: float = 10.0
    b: int = 4

    def __post_init__(self) -> None:
        if not (math.isfinite(self.a) and self.a >= 0):
            raise ConfigurationError(f"hinge staleness a must be >= 0, got {self.a}")
        if not self.b >= 0:
            raise ConfigurationError(f"hinge staleness b must be >= 0, got {self.b}")

    def __call__(self, staleness: int) -> float:
        if staleness <= self.b:
            return 1.0
        return 1.0 / (self.a * (staleness - self.b) + 1.0)


STALENESS_NAMES = ("constant", "polynomial", "hinge")
_PARAMETERS = {"constant": "", "polynomial": "a", "hinge": "ab"}


def staleness_function(name: str, a: float | None = None, b: int | None = None) -> Staleness:
    """The staleness function called `name` (one of `STALENESS_NAMES`), with its a (and b)."""
    # A parameter the chosen function has no use for is a mistake, not something to ignore.
    unused = [
        n for n, v in (("a", a), ("b", b)) if v is not None and n not in _PARAMETERS.get(name, "ab")
    ]
    if unused:
        takes = (
            f"takes only {' and '.join(_PARAMETERS[name])}" if _PARAMETERS[name] else "takes none"
        )
        raise ConfigurationError(
            f"{name} staleness {takes}; drop staleness_{unused[0]} (--staleness-{unused[0]}) "
            "or choose another staleness function"
        )
    if name == "constant":
        return ConstantStaleness()
    if name == "polynomial":
        return PolynomialStaleness(0.5 if a is None else a)
    if name == "hinge":
        return HingeStaleness(10.0 if a is None else a, 4 if b is None else b)
    raise ConfigurationError(
        f"unknown staleness function {name!r}; choose one of {', '.join(STALENESS_NAMES)}"
    )
