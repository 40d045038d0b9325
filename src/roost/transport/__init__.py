"""Transports: the cohort-level contract between the round loop and wherever clients run.

`Transport` is implemented by every simulation engine (`roost.engines`) and by the gRPC server
(`roost.transport.grpc`).
"""

from roost.transport.base import Transport

__all__ = ["Transport"]
