"""Checks of the numbers a user sets (rates, norms, budgets): one rule and one wording for all."""

from __future__ import annotations

import math
import numbers

from roost.errors import ConfigurationError


def is_finite_number(value: object) -> bool:
    """Whether `value` is a real, finite number (NumPy's too; a bool is not one)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def check_number(name: str, value: object, *, allow_zero: bool = False) -> None:
    """Refuse, naming `name`, a `value` that is not a finite number > 0 (>= 0 with `allow_zero`).

    Raises:
        ConfigurationError: "{name} must be a finite number > 0, got {value!r}".
    """
    if not is_finite_number(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigurationError(f"{name} must be a finite number {bound}, got {value!r}")


def check_fraction(name: str, value: float) -> None:
    """Refuse, naming `name`, a share that is not in [0, 1]."""
    if not 0.0 <= value <= 1.0:
        raise ConfigurationError(f"{name} must be in [0, 1], got {value}")


def check_count(name: str, value: int, minimum: int) -> None:
    """Refuse, naming `name`, a count that is not an int >= `minimum`."""
    if not isinstance(value, int) or value < minimum:
        raise ConfigurationError(f"{name} must be an int >= {minimum}, got {value!r}")
