"""State trees as JSON plus arrays: how a strategy's state and the nodes' `Context.state` are
recorded without pickle (`encode_tree` / `decode_tree`)."""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from roost.errors import ConfigurationError

__all__ = ["decode_tree", "encode_tree"]


def encode_tree(
    value: Any, arrays: list[np.ndarray], where: str = "state", *, exact: bool = False
) -> Any:
    """JSON-ready form of nested dicts/lists/tuples of arrays and scalars; arrays go to `arrays`.

    With `exact`, what comes back is of the very types saved: NumPy bool and number scalars stay
    NumPy scalars of their dtype (saved as 0-d arrays), and only plain dicts, lists and tuples are
    accepted as containers (a subclass would come back as its base class). Without it, NumPy
    scalars come back as Python scalars, as a strategy's state always has.
    """
    if exact and isinstance(value, np.generic) and value.dtype.kind in "biuf":
        arrays.append(np.asarray(value))
        return {"$scalar": len(arrays) - 1}
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        number = float(value)
        return number if math.isfinite(number) else {"$float": repr(number)}
    if isinstance(value, bytes):
        return {"$bytes": base64.b64encode(value).decode("ascii")}
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biuf":
            raise ConfigurationError(
                f"{where} is an array of dtype {value.dtype}; only bool, integer and float "
                "arrays can be saved"
            )
        arrays.append(value)
        return {"$array": len(arrays) - 1}
    if exact and type(value) not in (tuple, list, dict):
        raise _unsavable(where, value)
    if isinstance(value, tuple):
        items = [encode_tree(v, arrays, f"{where}[{i}]", exact=exact) for i, v in enumerate(value)]
        return {"$tuple": items}
    if isinstance(value, list):
        return [encode_tree(v, arrays, f"{where}[{i}]", exact=exact) for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        encoded = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ConfigurationError(f"{where} has a key {key!r}; state dict keys must be str")
            encoded[key] = encode_tree(item, arrays, f"{where}[{key!r}]", exact=exact)
        # A user key that looks like one of our markers is wrapped, so decoding stays unambiguous.
        return {"$dict": encoded} if any(k.startswith("$") for k in encoded) else encoded
    raise _unsavable(where, value)


def _unsavable(where: str, value: Any) -> ConfigurationError:
    return ConfigurationError(
        f"{where} is a {type(value).__name__}; saved state may hold only arrays, scalars, None, "
        "and lists, tuples or dicts of them"
    )


def decode_tree(value: Any, arrays: list[np.ndarray]) -> Any:
    """Inverse of `encode_tree`."""
    if isinstance(value, list):
        return [decode_tree(v, arrays) for v in value]
    if isinstance(value, dict):
        if len(value) == 1:
            ((key, item),) = value.items()
            if key == "$array":
                return arrays[item]
            if key == "$scalar":
                return arrays[item][()]
            if key == "$float":
                return float(item)
            if key == "$bytes":
                return base64.b64decode(item)
            if key == "$tuple":
                return tuple(decode_tree(v, arrays) for v in item)
            if key == "$dict":
                return {k: decode_tree(v, arrays) for k, v in item.items()}
        return {k: decode_tree(v, arrays) for k, v in value.items()}
    return value
