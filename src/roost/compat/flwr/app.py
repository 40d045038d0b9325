"""`flwr.app`: the records, `Message` and `Context` a Message-API app is written with."""

from __future__ import annotations

from roost.compat.flwr.message import Context, Error, Message, MessageType, Metadata
from roost.compat.flwr.records import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from roost.compat.flwr.unsupported import missing_names

__all__ = [
    "Array",
    "ArrayRecord",
    "ConfigRecord",
    "Context",
    "Error",
    "Message",
    "MessageType",
    "Metadata",
    "MetricRecord",
    "RecordDict",
]

__getattr__ = missing_names("flwr.app", __all__)
