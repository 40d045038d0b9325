"""One-line errors for the Flower names roost does not provide.

Each public module of the layer ends with `__getattr__ = missing_names("flwr.app", __all__)`, so
`from flwr.app import Something` fails at import time with a line naming `flwr.app.Something` and
what the module does provide, rather than an AttributeError deep inside the app.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NoReturn


class UnsupportedFlowerName(ImportError):
    """A Flower name that roost's compatibility layer does not provide."""


def missing_names(module: str, provided: Sequence[str]) -> Callable[[str], NoReturn]:
    """A module `__getattr__` that refuses unknown public names with one clear line."""
    listing = ", ".join(sorted(provided))

    def __getattr__(name: str) -> NoReturn:
        if name.startswith("_"):  # Python's own probes (__path__, __wrapped__, …) stay quiet
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        raise UnsupportedFlowerName(
            f"{module}.{name} is not supported by roost's Flower layer; {module} provides: "
            f"{listing}",
            name=name,
        )

    return __getattr__
