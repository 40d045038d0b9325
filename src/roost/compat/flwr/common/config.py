"""`flwr.common.config`: nested dictionaries to and from dotted keys.

A run config is flat (`{"model.lr": 0.1, "model.depth": 3}`); apps that group their settings
read them back nested with `unflatten_dict` (`{"model": {"lr": 0.1, "depth": 3}}`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from roost.compat.flwr.unsupported import missing_names
from roost.errors import ConfigurationError

SEPARATOR = "."


def unflatten_dict(flat: Mapping[str, Any]) -> dict[str, Any]:
    """`{"a.b": 1, "a.c": 2, "d": 3}` as `{"a": {"b": 1, "c": 2}, "d": 3}`.

    Raises `ConfigurationError` when a key is both a value and a group (`"a"` and `"a.b"`).
    """
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        *groups, last = str(key).split(SEPARATOR)
        level = nested
        for depth, group in enumerate(groups):
            inner = level.setdefault(group, {})
            if not isinstance(inner, dict):
                prefix = SEPARATOR.join(groups[: depth + 1])
                raise ConfigurationError(
                    f"config key {key!r} needs {prefix!r} to be a group, but {prefix!r} is a "
                    "value too; rename one of them"
                )
            level = inner
        if isinstance(level.get(last), dict):
            raise ConfigurationError(
                f"config key {key!r} is a value and a group of other keys; rename one of them"
            )
        level[last] = value
    return nested


def flatten_dict(nested: Mapping[str, Any], parent_key: str = "") -> dict[str, Any]:
    """The reverse of `unflatten_dict`: `{"a": {"b": 1}}` as `{"a.b": 1}`."""
    flat: dict[str, Any] = {}
    for key, value in nested.items():
        full = f"{parent_key}{SEPARATOR}{key}" if parent_key else str(key)
        if isinstance(value, Mapping):
            flat.update(flatten_dict(value, full))
        else:
            flat[full] = value
    return flat


__all__ = ["flatten_dict", "unflatten_dict"]

__getattr__ = missing_names("flwr.common.config", __all__)
