"""Data sets and partitioners for simulations."""

from roost.data.partition import iid_partition

__all__ = ["iid_partition"]
