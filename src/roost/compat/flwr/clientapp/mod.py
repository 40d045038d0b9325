"""`flwr.clientapp.mod`: the built-in mod for central DP with clipping on the nodes.

    app = ClientApp(mods=[fixedclipping_mod])

`fixedclipping_mod` goes with `DifferentialPrivacyClientSideFixedClipping` on the server, which
puts `"clipping_norm"` in every train message's config: the mod lets the app train, then clips
the reply's update (reply arrays − received arrays) to that L2 norm before it leaves the node.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from roost.compat.flwr.clientapp import Handler
from roost.compat.flwr.message import Context, Error, ErrorCode, Message, MessageType
from roost.compat.flwr.records import ArrayRecord, ConfigRecord, array_values, wrap_arrays
from roost.compat.flwr.unsupported import missing_names
from roost.strategy.transforms import clip_to_norm

log = logging.getLogger("roost")

CLIPPING_NORM_KEY = "clipping_norm"
"""The train config entry the server-side wrapper sets (Flower's name for it)."""


def fixedclipping_mod(msg: Message, context: Context, call_next: Handler) -> Message:
    """Clip this node's update to the server's `clipping_norm` before it is sent.

    Acts on train messages only. The message must hold exactly one `ArrayRecord` and one
    `ConfigRecord` with `"clipping_norm"`, and the reply exactly one `ArrayRecord` with the same
    array names; otherwise the node answers with an error saying which condition failed.
    """
    if msg.metadata.message_type != MessageType.TRAIN:
        return call_next(msg, context)
    sent_arrays = _single(msg, ArrayRecord)
    config = _single(msg, ConfigRecord)
    if isinstance(sent_arrays, str) or isinstance(config, str):
        return _failed(msg, sent_arrays if isinstance(sent_arrays, str) else str(config))
    if CLIPPING_NORM_KEY not in config:
        return _failed(
            msg,
            f"fixedclipping_mod needs '{CLIPPING_NORM_KEY}' in the train config: wrap the "
            "server's strategy in DifferentialPrivacyClientSideFixedClipping",
        )
    clipping_norm = config[CLIPPING_NORM_KEY]
    if isinstance(clipping_norm, bool) or not isinstance(clipping_norm, int | float):
        clipping_norm = math.nan  # refused just below, with the value the server sent
    if not (clipping_norm > 0 and math.isfinite(clipping_norm)):
        return _failed(
            msg,
            f"fixedclipping_mod: '{CLIPPING_NORM_KEY}' must be a finite number > 0, got "
            f"{config[CLIPPING_NORM_KEY]!r}",
        )
    reply = call_next(msg, context)
    if reply.has_error():
        return reply
    returned = _single(reply, ArrayRecord)
    if isinstance(returned, str):
        return _failed(msg, returned)
    if list(returned.keys()) != list(sent_arrays.keys()):
        return _failed(
            msg,
            "fixedclipping_mod: the reply's ArrayRecord must hold the arrays the node received, "
            f"under the same names; got {list(returned.keys())}, sent {list(sent_arrays.keys())}",
        )
    received = array_values(sent_arrays)
    update = [
        np.subtract(new, old) for new, old in zip(array_values(returned), received, strict=True)
    ]
    clipped, norm = clip_to_norm(update, clipping_norm)
    if norm > clipping_norm:
        log.debug("fixedclipping_mod: update norm %.4g clipped to %.4g", norm, clipping_norm)
    arrays = [
        np.add(old, step).astype(old.dtype, copy=False)
        for old, step in zip(received, clipped, strict=True)
    ]
    key = next(name for name, value in reply.content.items() if value is returned)
    reply.content[key] = wrap_arrays(list(returned.keys()), arrays)
    return reply


def _single(msg: Message, kind: type) -> ArrayRecord | ConfigRecord | str:
    """The message's one record of `kind`, or why there is not exactly one."""
    records = [value for value in msg.content.values() if isinstance(value, kind)]
    if len(records) != 1:
        return f"fixedclipping_mod expects exactly one {kind.__name__}, found {len(records)}"
    return records[0]


def _failed(msg: Message, reason: str) -> Message:
    log.error("%s", reason)
    return Message(Error(ErrorCode.MOD_FAILED_PRECONDITION, reason), reply_to=msg)


__all__ = ["fixedclipping_mod"]

__getattr__ = missing_names("flwr.clientapp.mod", __all__)
