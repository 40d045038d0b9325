"""`flwr.clientapp.mod`: Flower's built-in mods (differential privacy, secure aggregation).

    app = ClientApp(mods=[fixedclipping_mod])            # central DP, clipped on the node
    app = ClientApp(mods=[LocalDpMod(1.0, 2.0, 0.5, 1e-5)])  # local DP

`fixedclipping_mod` goes with `DifferentialPrivacyClientSideFixedClipping` on the server, which
puts `"clipping_norm"` in every train message's config: the mod lets the app train, then clips
the reply's update (reply arrays − received arrays) to that L2 norm before it leaves the node.
`LocalDpMod` clips to its own bound and adds Gaussian noise to what the node sends, drawn from
roost's cryptographic source (`roost.privacy.noise`) rather than NumPy's. `secaggplus_mod` goes
with `flwr.server.workflow.SecAggPlusWorkflow`.
"""

from __future__ import annotations

import logging
import math

from roost.compat.flwr.clientapp import Handler
from roost.compat.flwr.message import Context, Error, ErrorCode, Message, MessageType
from roost.compat.flwr.records import ArrayRecord, ConfigRecord, array_values, wrap_arrays
from roost.compat.flwr.unsupported import missing_names
from roost.core.checks import check_number, is_finite_number
from roost.errors import ConfigurationError
from roost.privacy.local import clipped_and_noised
from roost.privacy.noise import noise_source

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
    config = _single(msg, ConfigRecord, "fixedclipping_mod")
    if isinstance(config, str):
        return _failed(msg, config)
    if CLIPPING_NORM_KEY not in config:
        return _failed(
            msg,
            f"fixedclipping_mod needs '{CLIPPING_NORM_KEY}' in the train config: wrap the "
            "server's strategy in DifferentialPrivacyClientSideFixedClipping",
        )
    clipping_norm = config[CLIPPING_NORM_KEY]
    if not (is_finite_number(clipping_norm) and clipping_norm > 0):
        return _failed(
            msg,
            f"fixedclipping_mod: '{CLIPPING_NORM_KEY}' must be a finite number > 0, got "
            f"{clipping_norm!r}",
        )
    return _clipped_reply("fixedclipping_mod", msg, context, call_next, float(clipping_norm))


def secaggplus_mod(msg: Message, context: Context, call_next: Handler) -> Message:
    """Take part in SecAgg+ rounds (`flwr.server.workflow.SecAggPlusWorkflow`).

    On roost the node answers the protocol's four phases itself (`roost.client.
    secure_aggregation`): its masked input is its train reply as the app's other mods leave it,
    so `fixedclipping_mod` after this mod clips the update before it is masked. Messages reach
    the app unchanged through this mod (it logs each train message at DEBUG).
    """
    if msg.metadata.message_type == MessageType.TRAIN:
        log.debug("secaggplus_mod: node %s trains for a SecAgg+ round", msg.metadata.dst_node_id)
    return call_next(msg, context)


class LocalDpMod:
    """Local differential privacy on the node: Flower's mod of this name.

    Each train reply's update is clipped to L2 norm `clipping_norm`, then Gaussian noise of
    standard deviation `sensitivity · √(2 ln(1.25/δ)) / ε` is added to every float array the node
    sends: the classic Gaussian-mechanism calibration, which gives (ε, δ)-DP per reply only for
    ε < 1 and a `sensitivity` that covers the clipped update (2 × `clipping_norm` for any two
    datasets of the node). A warning says so when either does not hold. For local DP with an
    accountant over the rounds, use roost's own (`roost simulate --dp local`, `roost.privacy`).

    Args:
        clipping_norm: the L2 bound of the update (> 0).
        sensitivity: the sensitivity the noise is calibrated to (>= 0).
        epsilon: ε of one reply (> 0).
        delta: δ of one reply, in (0, 1).
    """

    def __init__(
        self, clipping_norm: float, sensitivity: float, epsilon: float, delta: float
    ) -> None:
        check_number("clipping_norm", clipping_norm)
        check_number("sensitivity", sensitivity, allow_zero=True)
        check_number("epsilon", epsilon)
        if not (is_finite_number(delta) and 0 < delta < 1):
            raise ConfigurationError(f"delta must be a number in (0, 1), got {delta!r}")
        self.clipping_norm = float(clipping_norm)
        self.sensitivity = float(sensitivity)
        self.epsilon = float(epsilon)
        self.delta = float(delta)
        if self.epsilon >= 1 or self.sensitivity < 2 * self.clipping_norm:
            log.warning(
                "LocalDpMod: the Gaussian calibration holds for ε < 1 and a sensitivity of at "
                "least 2 × clipping_norm; got ε = %g, sensitivity %g, clipping_norm %g, so the "
                "per-reply guarantee is not (ε, δ)-DP as stated",
                self.epsilon,
                self.sensitivity,
                self.clipping_norm,
            )

    @property
    def noise_stddev(self) -> float:
        """The standard deviation of the noise added to each entry."""
        return self.sensitivity * math.sqrt(2 * math.log(1.25 / self.delta)) / self.epsilon

    def __repr__(self) -> str:
        return (
            f"LocalDpMod(clipping_norm={self.clipping_norm}, sensitivity={self.sensitivity}, "
            f"epsilon={self.epsilon}, delta={self.delta})"
        )

    def __call__(self, msg: Message, context: Context, call_next: Handler) -> Message:
        """Clip and noise this node's train reply (other messages pass through)."""
        if msg.metadata.message_type != MessageType.TRAIN:
            return call_next(msg, context)
        return _clipped_reply(
            "LocalDpMod", msg, context, call_next, self.clipping_norm, self.noise_stddev
        )


def _clipped_reply(
    name: str,
    msg: Message,
    context: Context,
    call_next: Handler,
    clipping_norm: float,
    noise_stddev: float = 0.0,
) -> Message:
    """The app's reply to `msg`, its update clipped to `clipping_norm` and, when
    `noise_stddev` > 0, Gaussian noise added to its float arrays; or an error reply."""
    sent_arrays = _single(msg, ArrayRecord, name)
    if isinstance(sent_arrays, str):
        return _failed(msg, sent_arrays)
    reply = call_next(msg, context)
    if reply.has_error():
        return reply
    returned = _single(reply, ArrayRecord, name)
    if isinstance(returned, str):
        return _failed(msg, returned)
    if list(returned.keys()) != list(sent_arrays.keys()):
        return _failed(
            msg,
            f"{name}: the reply's ArrayRecord must hold the arrays the node received, under the "
            f"same names; got {list(returned.keys())}, sent {list(sent_arrays.keys())}",
        )
    source = noise_source(None, name)  # drawn from only when noise_stddev > 0
    arrays = clipped_and_noised(
        array_values(returned), array_values(sent_arrays), clipping_norm, noise_stddev, source
    )
    key = next(key for key, value in reply.content.items() if value is returned)
    reply.content[key] = wrap_arrays(list(returned.keys()), arrays)
    return reply


def _single(msg: Message, kind: type, name: str) -> ArrayRecord | ConfigRecord | str:
    """The message's one record of `kind`, or why there is not exactly one."""
    records = [value for value in msg.content.values() if isinstance(value, kind)]
    if len(records) != 1:
        return f"{name} expects exactly one {kind.__name__}, found {len(records)}"
    return records[0]


def _failed(msg: Message, reason: str) -> Message:
    log.error("%s", reason)
    return Message(Error(ErrorCode.MOD_FAILED_PRECONDITION, reason), reply_to=msg)


__all__ = ["LocalDpMod", "fixedclipping_mod", "secaggplus_mod"]

__getattr__ = missing_names("flwr.clientapp.mod", __all__)
