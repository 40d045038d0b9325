"""Transports: the cohort-level contract between the round loop and wherever clients run.

`Transport` is implemented by every simulation engine (`roost.engines`) and by the gRPC server
(`roost.transport.grpc`); `NodeStateStore` by the engines that keep their nodes' `Context.state`.
"""

from roost.transport.base import NodeState, NodeStateStore, Transport

__all__ = ["NodeState", "NodeStateStore", "Transport"]
