"""Transports: how a cohort's instructions reach clients and how results come back."""

from roost.transport.base import Transport
from roost.transport.inprocess import InProcessTransport

__all__ = ["InProcessTransport", "Transport"]
