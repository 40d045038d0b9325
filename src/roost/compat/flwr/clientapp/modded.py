"""Mods around an older-form app: `ClientApp(client_fn=..., mods=[...])`.

Flower runs a `client_fn` app's `fit` and `evaluate` as messages, so its mods see them; here the
node's client is wrapped in `ModdedClient`, which turns each call into a train or evaluate
`Message`, passes it through the mods, calls the client at the end of the chain, and turns the
reply back into roost's answer. What a mod changes in the reply (`fixedclipping_mod` clipping the
update, `LocalDpMod` adding noise) is what the node sends, also into secure aggregation, whose
masked input is the node's `fit` answer.

The messages: a train message holds the arrays (`ArrayRecord` "arrays") and the config
(`ConfigRecord` "config"); the reply holds "arrays", the client's metrics as "metrics" and the
example count (and for evaluate the loss) in `MetricRecord` "fitres" / "evaluateres".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from roost.client.client import Client, ClientLike, call_client
from roost.compat.flwr.message import Context, Message, MessageType, new_message_id
from roost.compat.flwr.records import (
    ArrayRecord,
    ConfigRecord,
    MetricRecord,
    RecordDict,
    array_values,
    wrap_arrays,
)
from roost.core.types import Config, EvaluateIns, FitIns, GetParametersIns, Metrics, Parameters
from roost.errors import InvalidMessageError

Handler = Callable[[Message, Context], Message]
Mod = Callable[[Message, Context, Handler], Message]

NUM_EXAMPLES = "num-examples"


def chained(mods: Sequence[Mod], handler: Handler) -> Handler:
    """`handler` wrapped by `mods`, the first mod outermost."""
    for mod in reversed(list(mods)):
        handler = _wrap(mod, handler)
    return handler


def _wrap(mod: Mod, inner: Handler) -> Handler:
    def call(message: Message, context: Context) -> Message:
        return mod(message, context, inner)

    return call


class ModdedClient(Client):
    """`client`'s `fit` and `evaluate` as messages through `mods`, in the node's `context`;
    `after` is called once the mods are done with each message (to keep what they left in
    `context.state`)."""

    def __init__(
        self,
        client: ClientLike,
        mods: Sequence[Mod],
        context: Context,
        after: Callable[[], object] | None = None,
    ) -> None:
        self.client = client
        self.mods = list(mods)
        self.context = context
        self.after = after

    def get_parameters(self, config: Config) -> Parameters:
        """The client's own answer (Flower's mods see no parameter requests either)."""
        return call_client(self.client, GetParametersIns(config)).parameters

    def fit(self, parameters: Parameters, config: Config) -> tuple[Parameters, int, Metrics]:
        """Train through the mods; the arrays, count and metrics of the reply they let out."""

        def train(message: Message, context: Context) -> Message:
            arrays, names = _arrays_of(message)
            result = call_client(self.client, FitIns(arrays, _config_of(message)))
            content = {
                "arrays": wrap_arrays(names, list(result.parameters)),
                "metrics": _metrics_record(result.metrics),
                "fitres": MetricRecord({NUM_EXAMPLES: result.num_examples}),
            }
            return Message(RecordDict(content), reply_to=message)

        reply = self._exchange(MessageType.TRAIN, parameters, config, train)
        arrays, _ = _arrays_of(reply)
        return arrays, _count(reply, "fitres"), dict(reply.content["metrics"])

    def evaluate(self, parameters: Parameters, config: Config) -> tuple[float, int, Metrics]:
        """Evaluate through the mods; the loss, count and metrics of the reply they let out."""

        def evaluate(message: Message, context: Context) -> Message:
            arrays, _ = _arrays_of(message)
            result = call_client(self.client, EvaluateIns(arrays, _config_of(message)))
            content = {
                "metrics": _metrics_record(result.metrics),
                "evaluateres": MetricRecord(
                    {"loss": float(result.loss), NUM_EXAMPLES: result.num_examples}
                ),
            }
            return Message(RecordDict(content), reply_to=message)

        reply = self._exchange(MessageType.EVALUATE, parameters, config, evaluate)
        loss = float(_summary(reply, "evaluateres")["loss"])
        return loss, _count(reply, "evaluateres"), dict(reply.content["metrics"])

    def _exchange(
        self, kind: str, parameters: Parameters, config: Config, handler: Handler
    ) -> Message:
        names = [str(index) for index in range(len(parameters))]
        content = RecordDict(
            {"arrays": wrap_arrays(names, list(parameters)), "config": ConfigRecord(config)}
        )
        message = Message(content, dst_node_id=self.context.node_id, message_type=kind)
        message.metadata.run_id = self.context.run_id
        message.metadata.message_id = new_message_id(self.context.run_id)
        reply = chained(self.mods, handler)(message, self.context)
        if self.after is not None:
            self.after()
        if reply.has_error():
            raise InvalidMessageError(f"a mod refused the {kind} message: {reply.error.reason}")
        return reply


def _arrays_of(message: Message) -> tuple[list[Any], list[str]]:
    records = [r for r in message.content.values() if isinstance(r, ArrayRecord)]
    if len(records) != 1:
        raise InvalidMessageError(
            f"a mod left {len(records)} ArrayRecords in the message; keep one"
        )
    return array_values(records[0]), list(records[0].keys())


def _config_of(message: Message) -> Config:
    record = message.content.get("config")
    return dict(record) if isinstance(record, ConfigRecord) else {}


def _metrics_record(metrics: Metrics) -> MetricRecord | ConfigRecord:
    """A `MetricRecord` (what mods look for), or a `ConfigRecord` for metrics with text."""
    try:
        return MetricRecord(dict(metrics))
    except (TypeError, ValueError):
        return ConfigRecord(dict(metrics))


def _summary(reply: Message, key: str) -> MetricRecord:
    record = reply.content.get(key)
    if not isinstance(record, MetricRecord):
        raise InvalidMessageError(f"a mod removed the reply's {key!r} record; keep it")
    return record


def _count(reply: Message, key: str) -> int:
    return int(_summary(reply, key)[NUM_EXAMPLES])
