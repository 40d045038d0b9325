"""Compatibility layers: other frameworks' names on top of roost (see `roost.compat.flwr`)."""
