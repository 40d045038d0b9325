"""`flwr.client.mod`: the older home of the client-side mods (`flwr.clientapp.mod`'s)."""

from __future__ import annotations

from roost.compat.flwr.clientapp.mod import LocalDpMod, fixedclipping_mod, secaggplus_mod
from roost.compat.flwr.unsupported import missing_names

__all__ = ["LocalDpMod", "fixedclipping_mod", "secaggplus_mod"]

__getattr__ = missing_names("flwr.client.mod", __all__)
