"""`flwr.clientapp.ClientApp`: handlers for `train`, `evaluate` and `query` messages, and mods.

    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        ...
        return Message(RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=msg)

The older `ClientApp(client_fn=...)` form (a `NumPyClient` per node) is the same class. On roost a
Message-API app runs on a node as a `MessageNode`: each message arrives as a phase of the "flwr"
protocol (`roost.client.protocols`), is rebuilt as a `Message` and handed to the handler for its
type, through the app's mods.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import replace
from typing import Any

from roost.client.client import Client, ClientFn, ClientLike
from roost.client.client import Context as NodeContext
from roost.client.protocols import ProtocolClient, register_protocol
from roost.compat.flwr import codec
from roost.compat.flwr.clientapp.modded import Handler, Mod, ModdedClient, chained
from roost.compat.flwr.message import RUN_ID, Context, Message, MessageType
from roost.compat.flwr.records import RecordDict
from roost.compat.flwr.unsupported import missing_names
from roost.core.types import Config, Metrics, Parameters, PhaseIns, PhaseRes
from roost.errors import ConfigurationError

Lifespan = Callable[[Context], Iterator[None]]

# Here, beside MessageNode (the only node object that answers "flwr"): any node running one has
# imported this module, so it knows the protocol; roost's client layer does not know Flower.
register_protocol(codec.PROTOCOL)

DEFAULT_ACTION = "default"
STATE_KEY = "flwr.state"
"""Where a node's Flower `Context.state` lives in roost's per-node state."""


class ClientApp:
    """A Flower client app: message handlers registered with `@app.train()`, `@app.evaluate()`
    and `@app.query()` (optionally named: `@app.train("name")` answers `train.name`), wrapped by
    `mods`; or the older `ClientApp(client_fn=...)` that builds a `NumPyClient` per node (its
    `fit` and `evaluate` then pass through the `mods` as messages: `clientapp.modded`)."""

    def __init__(self, client_fn: ClientFn | None = None, mods: list[Mod] | None = None) -> None:
        self.client_fn = client_fn
        self.mods = list(mods or [])
        self._handlers: dict[str, Handler] = {}
        self._lifespan: Lifespan | None = None

    @property
    def is_message_app(self) -> bool:
        """Whether the app answers messages (handlers) rather than building clients (client_fn)."""
        return self.client_fn is None

    def train(self, action: str = DEFAULT_ACTION, *, mods: list[Mod] | None = None) -> Any:
        """Register the handler of `train` messages (or of `train.<action>`)."""
        return self._register(MessageType.TRAIN, action, mods)

    def evaluate(self, action: str = DEFAULT_ACTION, *, mods: list[Mod] | None = None) -> Any:
        """Register the handler of `evaluate` messages (or of `evaluate.<action>`)."""
        return self._register(MessageType.EVALUATE, action, mods)

    def query(self, action: str = DEFAULT_ACTION, *, mods: list[Mod] | None = None) -> Any:
        """Register the handler of `query` messages (or of `query.<action>`)."""
        return self._register(MessageType.QUERY, action, mods)

    def lifespan(self) -> Callable[[Lifespan], Lifespan]:
        """Register a generator `(context) -> Iterator[None]`: the code before its `yield` runs
        before each message is handled, the code after it once the reply is made."""

        def register(function: Lifespan) -> Lifespan:
            self._lifespan = function
            return function

        return register

    def _register(self, category: str, action: str, mods: list[Mod] | None) -> Any:
        if self.client_fn is not None:
            raise ConfigurationError(
                f"@app.{category}() needs ClientApp() without client_fn=; this app builds "
                "NumPyClients with client_fn"
            )
        message_type = category if action == DEFAULT_ACTION else f"{category}.{action}"

        def register(handler: Handler) -> Handler:
            self._handlers[message_type] = chained(mods or [], handler)
            return handler

        return register

    def __call__(self, message: Message | Any, context: Context | None = None) -> Any:
        """`app(message, context)` answers a message; `app(context)` (older form) builds the
        node's client with `client_fn`."""
        if context is None:
            if self.client_fn is None:
                raise ConfigurationError(
                    "this ClientApp answers messages: call app(message, context)"
                )
            return self.client_fn(message)
        return self.handle(message, context)

    def handle(self, message: Message, context: Context) -> Message:
        """The reply of this app to `message`, through the app's mods and its lifespan."""
        handler = chained(self.mods, self._handler_for(message.metadata.message_type))
        with self._living(context):
            reply = handler(message, context)
        if not isinstance(reply, Message):
            raise TypeError(
                f"the {message.metadata.message_type} handler returned a "
                f"{type(reply).__name__}; return Message(content, reply_to=msg)"
            )
        return reply

    def _handler_for(self, message_type: str) -> Handler:
        if self.client_fn is not None:
            raise ConfigurationError(
                f"the server sent a {message_type!r} message but this ClientApp was built with "
                "client_fn=; give it @app.train() / @app.evaluate() handlers, or pair it with a "
                "ServerApp(server_fn=...)"
            )
        handler = self._handlers.get(message_type)
        if handler is None:
            known = ", ".join(sorted(self._handlers)) or "none"
            raise ConfigurationError(
                f"this ClientApp has no handler for {message_type!r} messages (it has: {known}); "
                f"register one with @app.{message_type.split('.')[0]}()"
            )
        return handler

    def _living(self, context: Context) -> AbstractContextManager[None]:
        if self._lifespan is None:
            return nullcontext()
        return contextmanager(self._lifespan)(context)


class MessageNode(Client, ProtocolClient):
    """A node that runs a Message-API `ClientApp`: roost's client object for such an app."""

    def __init__(self, app: ClientApp) -> None:
        self.app = app

    def answer(self, instruction: PhaseIns, context: NodeContext) -> PhaseRes:
        """Rebuild the message, run the app's handler, send its reply back."""
        node_id = codec.node_number(context.node_id)
        message = codec.instruction_to_message(instruction, node_id)
        state = _node_records(context)
        flower_context = codec.flower_context(
            message.metadata.run_id, node_id, context.node_config, context.run_config, state
        )
        reply = self.app.handle(message, flower_context)
        _keep_node_records(context, state)
        return codec.reply_to_result(reply)


def _keep_node_records(context: NodeContext, records: RecordDict) -> None:
    """Keep a node's Flower state in its roost state as plain data (its arrays and their
    layout), the form roost keeps node states in: checkpoints record it, and the process
    engine ships it."""
    arrays, layout = codec.encode_records(records)
    context.state[STATE_KEY] = {"arrays": list(arrays), "layout": layout}


def _node_records(context: NodeContext) -> RecordDict:
    """The node's Flower state that `_keep_node_records` kept (empty on its first call)."""
    kept = context.state.get(STATE_KEY)
    if kept is None:
        return RecordDict()
    return codec.decode_records(kept["arrays"], kept["layout"])


def node_client(app: ClientApp, context: NodeContext) -> ClientLike:
    """roost's client object for `app` on the node `context` describes."""
    if app.is_message_app:
        return MessageNode(app)
    assert app.client_fn is not None
    client = StatefulClientFn(app.client_fn)(context)
    if not app.mods:
        return client
    node_id = codec.node_number(context.node_id)
    flower_context = codec.flower_context(
        RUN_ID, node_id, context.node_config, context.run_config, client.state
    )
    # after each message: what the mods put in the node's state is kept too
    return ModdedClient(client, app.mods, flower_context, after=lambda: client.kept(None))


class StatefulClientFn:
    """An older-form Flower `client_fn(context)`, called as roost calls a `client_fn`, with the
    node's state as Flower keeps it.

    The client is built with a copy of the node's context whose `state` is the node's own
    `RecordDict` (a `NumPyClient` also gets it as `self.context`, as on Flower), and after each
    call that record is kept in roost's per-node state, as a Message-API node's is: so it
    persists across rounds on every engine, even where clients are rebuilt each round, and a
    checkpoint records it.
    """

    def __init__(self, client_fn: ClientFn) -> None:
        self.client_fn = client_fn

    def __call__(self, context: NodeContext) -> _KeepsFlowerState:
        state = _node_records(context)
        flower_context = replace(context, state=state)  # type: ignore[arg-type]
        client = self.client_fn(flower_context)
        if isinstance(client, Client):
            client.context = flower_context  # type: ignore[attr-defined]
        return _KeepsFlowerState(client, state, context)


class _KeepsFlowerState(Client):
    """`client`, whose node's `RecordDict` is written back to the node's state after each call."""

    def __init__(self, client: ClientLike, state: RecordDict, context: NodeContext) -> None:
        self.client = client
        self.state = state
        self.node_context = context

    def get_parameters(self, config: Config) -> Parameters:
        """The client's answer, its node's state kept."""
        return self.kept(self.client.get_parameters(config))

    def fit(self, parameters: Parameters, config: Config) -> tuple[Parameters, int, Metrics]:
        """The client's answer, its node's state kept."""
        return self.kept(self.client.fit(parameters, config))

    def evaluate(self, parameters: Parameters, config: Config) -> tuple[float, int, Metrics]:
        """The client's answer, its node's state kept."""
        return self.kept(self.client.evaluate(parameters, config))

    def kept(self, answer: Any) -> Any:
        """`answer`, once the node's records are kept in its roost state."""
        _keep_node_records(self.node_context, self.state)
        return answer


__all__ = ["ClientApp"]

__getattr__ = missing_names("flwr.clientapp", __all__)
