"""`flwr.serverapp.Grid` over roost's cohort-level transport.

A ServerApp's `main(grid, context)` sends messages to nodes and receives their replies. Here the
grid turns a batch of messages into one cohort of "flwr" instructions (`roost.compat.flwr.codec`)
and hands it to the run's `Transport` — a simulation engine or the gRPC server — through
`roost.server.phases.PhaseOutcomes`, so every reply is validated at the same boundary as roost's
own results and failures are counted and logged the same way. Messages that share their content
share one instruction, so a round's model is encoded once, not once per node.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from roost.compat.flwr import codec
from roost.compat.flwr.message import Message, new_message_id
from roost.compat.flwr.records import RecordDict
from roost.core.types import ClientId, Failure, PhaseIns, PhaseRes
from roost.engines.node_states import NodeStates
from roost.errors import ConfigurationError, InvalidMessageError
from roost.server.history import History
from roost.server.loop import RoundCallback, ServerState
from roost.server.phases import PhaseOutcomes
from roost.server.state import StateStore
from roost.transport.base import Transport

log = logging.getLogger("roost")

Exchanged = tuple[ClientId, Message, Message | Failure]
"""One node's outcome: its client id, the message it was sent, and its reply or failure."""


@dataclass
class Run:
    """What the grid knows of its run."""

    run_id: int
    fab_id: str = ""
    fab_version: str = ""
    fab_hash: str = ""
    override_config: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunSettings:
    """roost's settings for the strategy runs a ServerApp starts through its grid.

    `seed` seeds node sampling; `store` records every completed round (and `resume_from` is the
    recorded state the first strategy run continues from); `node_states` are the simulated
    nodes' states, recorded with each round and restored on resume; `on_round_end` is called
    after every round. Each strategy run's History is appended to `histories`.
    """

    seed: int | None = None
    store: StateStore | None = None
    resume_from: ServerState | None = None
    node_states: NodeStates | None = None
    on_round_end: RoundCallback | None = None
    histories: list[History] = field(default_factory=list)
    message_nodes: bool = True
    """False when the nodes run a `ClientApp(client_fn=...)`: they answer a classic strategy's
    rounds (`flwr.server.workflow`), not messages."""

    def take_resume_state(self) -> ServerState | None:
        """The state to resume from, handed out once (to the run's first strategy run)."""
        state, self.resume_from = self.resume_from, None
        return state

    def round_end(self, state: ServerState) -> None:
        if self.store is not None:
            self.store.save(state)
        if self.on_round_end is not None:
            self.on_round_end(state)


class Grid:
    """Send messages to nodes and receive their replies, over a roost `Transport`."""

    def __init__(
        self, transport: Transport, *, run_id: int = 0, settings: RunSettings | None = None
    ) -> None:
        self.transport = transport
        self.settings = settings if settings is not None else RunSettings()
        self._run = Run(run_id)
        self._clients: dict[int, ClientId] = {}
        self._lock = threading.Lock()
        self._replies: dict[str, Message] = {}
        self._replies_lock = threading.Lock()
        self._exchanges = itertools.count(1)
        self._pushes: list[threading.Thread] = []

    @property
    def run(self) -> Run:
        return self._run

    def set_run(self, run_id: int) -> None:
        """Flower's hook to attach to a run; roost's grid serves one run."""
        self._run = Run(int(run_id))

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        """A new message to `dst_node_id`."""
        message = Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)
        self._stamp(message)
        return message

    def get_node_ids(self) -> list[int]:
        """The ids of the nodes connected now (every node, in a simulation)."""
        return [codec.node_number(client_id) for client_id in self._refresh_nodes()]

    def wait_for_nodes(self, count: int, timeout: float | None = None) -> list[int]:
        """roost's addition: block until `count` nodes are connected; return their ids."""
        return [codec.node_number(cid) for cid in self.wait_for_clients(count, timeout)]

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> list[Message]:
        """Send `messages` and return the replies that arrive within `timeout` seconds.

        A node that fails (its app raised, it disconnected, its reply was invalid) answers with an
        error reply (`reply.has_error()`); a node past the timeout is left out, as in Flower.
        """
        replies = (_reply(sent, outcome) for _, sent, outcome in self.exchange(messages, timeout))
        return [reply for reply in replies if reply is not None]

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        """Send `messages` in the background; return their ids for `pull_messages`."""
        messages = list(messages)
        for message in messages:
            self._stamp(message)
        ttl = min((message.metadata.ttl for message in messages), default=None)
        push = threading.Thread(
            target=self._deliver, args=(messages, ttl), name="roost-flwr-push", daemon=True
        )
        push.start()
        self._pushes.append(push)
        return [message.metadata.message_id for message in messages]

    def wait_for_pushes(self, timeout: float | None = None) -> None:
        """roost's addition: wait until the messages of every `push_messages` are answered (or
        failed); the run calls it when `main` returns, so nodes are not stopped mid-message."""
        for push in list(self._pushes):
            push.join(timeout)
        self._pushes = [push for push in self._pushes if push.is_alive()]

    def pull_messages(self, message_ids: Iterable[str]) -> list[Message]:
        """The replies that have arrived to the messages with these ids (each is given once)."""
        with self._replies_lock:
            return [self._replies.pop(key) for key in message_ids if key in self._replies]

    # -- roost's side ------------------------------------------------------------------------

    def wait_for_clients(self, count: int, timeout: float | None = None) -> list[ClientId]:
        """The transport's client ids once `count` are connected (remembered for addressing)."""
        client_ids = self.transport.wait_for_clients(count, timeout)
        self._remember(client_ids)
        return client_ids

    def exchange(self, messages: Iterable[Message], timeout: float | None) -> Iterator[Exchanged]:
        """Send `messages` as one cohort; stream back each node's reply or failure as it comes."""
        if not self.settings.message_nodes:
            raise ConfigurationError(
                "the nodes run ClientApp(client_fn=...), which answers a classic strategy's "
                "rounds, not messages: run one with flwr.server.workflow.DefaultWorkflow, or give "
                "the ClientApp @app.train() / @app.evaluate() handlers"
            )
        cohort: list[tuple[ClientId, PhaseIns]] = []
        sent: dict[ClientId, Message] = {}
        shared: dict[tuple[Any, ...], PhaseIns] = {}
        unknown: list[Exchanged] = []
        for message in messages:
            self._stamp(message)
            client_id = self._client_id(message.metadata.dst_node_id)
            if client_id is None:
                name = str(message.metadata.dst_node_id)
                unknown.append((name, message, Failure(name, "no such node", "disconnected")))
                continue
            if client_id in sent:
                raise ConfigurationError(
                    f"two messages to node {message.metadata.dst_node_id} in one batch; send "
                    "them one batch after another"
                )
            key = _sharing_key(message)
            if key not in shared:
                shared[key] = codec.message_to_instruction(message)
            cohort.append((client_id, shared[key]))
            sent[client_id] = message
        yield from unknown
        if not cohort:
            return
        label = f"flwr {cohort[0][1].phase} #{next(self._exchanges)}"
        with self._lock:
            for client_id, outcome in PhaseOutcomes(self.transport, cohort, timeout, None, label):
                yield client_id, sent[client_id], _decoded(client_id, sent[client_id], outcome)

    def _deliver(self, messages: list[Message], timeout: float | None) -> None:
        for _, sent, outcome in self.exchange(messages, timeout):
            reply = _reply(sent, outcome)
            if reply is not None:
                with self._replies_lock:
                    self._replies[sent.metadata.message_id] = reply

    def _stamp(self, message: Message) -> None:
        metadata = message.metadata
        metadata.run_id = self._run.run_id
        if not metadata.message_id:
            metadata.message_id = new_message_id(self._run.run_id)

    def _refresh_nodes(self) -> list[ClientId]:
        client_ids = self.transport.wait_for_clients(0)
        self._remember(client_ids)
        return client_ids

    def _remember(self, client_ids: Iterable[ClientId]) -> None:
        for client_id in client_ids:
            self._clients[codec.node_number(client_id)] = client_id

    def client_id(self, node_id: int) -> ClientId | None:
        """roost's id of the node `node_id` (None: no such node)."""
        return self._client_id(node_id)

    def _client_id(self, node_id: int) -> ClientId | None:
        if node_id not in self._clients:
            self._refresh_nodes()
        return self._clients.get(node_id)


def _sharing_key(message: Message) -> tuple[Any, ...]:
    metadata = message.metadata
    return (id(message.content), metadata.message_type, metadata.group_id, metadata.ttl)


def _decoded(client_id: ClientId, sent: Message, outcome: object) -> Message | Failure:
    if isinstance(outcome, Failure):
        return outcome
    assert isinstance(outcome, PhaseRes)
    try:
        return codec.result_to_reply(outcome, sent)
    except InvalidMessageError as error:
        log.warning("node %s: %s", client_id, error)
        return Failure(client_id, str(error), kind="invalid")


def _reply(sent: Message, outcome: Message | Failure) -> Message | None:
    if isinstance(outcome, Message):
        return outcome
    if outcome.kind == "timeout":
        return None
    return codec.failure_to_reply(outcome, sent)


__all__ = ["Grid"]
