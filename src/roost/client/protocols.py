"""What a node runs for an instruction: the client's own methods, or a client-side protocol.

Fit, evaluate and get_parameters go to the client object. A `PhaseIns` goes to the handler of its
protocol, named in `PROTOCOLS`; handlers keep what must survive between phases in the node's
`Context.state`. A layer above adds its own protocol with `register_protocol` (`roost.compat.flwr`
adds "flwr" where its `ClientApp` is defined, so any node running one knows the protocol). Every
engine and the gRPC client call `execute`, so a protocol works the same everywhere.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

from roost.client.client import ClientLike, Context, call_client
from roost.client.compression import answer_compressed_fit
from roost.client.secure_aggregation import answer_secure_aggregation
from roost.core.compression import PROTOCOL as COMPRESSION
from roost.core.types import Instruction, PhaseIns, PhaseRes, Result
from roost.errors import ConfigurationError, InvalidMessageError

PhaseHandler = Callable[[ClientLike, PhaseIns, Context], PhaseRes]


class ProtocolClient(ABC):
    """A node object that answers a protocol's phases itself.

    `roost.compat.flwr`'s Message-API `ClientApp` is one: each Flower message arrives as a
    `PhaseIns` of the "flwr" protocol (registered with `answer_by_client` as its handler) and the
    app's handler answers it. Subclass it (a nominal
    base, so nothing is discovered by probing attributes).
    """

    @abstractmethod
    def answer(self, instruction: PhaseIns, context: Context) -> PhaseRes:
        """Answer one phase of a protocol on the node `context` describes."""


def answer_by_client(client: ClientLike, instruction: PhaseIns, context: Context) -> PhaseRes:
    """The handler of protocols whose node object answers them (`ProtocolClient`)."""
    if not isinstance(client, ProtocolClient):
        raise InvalidMessageError(
            f"the server sent a {instruction.protocol!r} message but this node runs a "
            f"{type(client).__name__}; start the node with the matching app"
        )
    return client.answer(instruction, context)


PROTOCOLS: dict[str, PhaseHandler] = {
    "secagg": answer_secure_aggregation,
    COMPRESSION: answer_compressed_fit,
}
"""Client-side protocols by name; layers above add theirs with `register_protocol`."""


def register_protocol(name: str, handler: PhaseHandler = answer_by_client) -> None:
    """Let nodes answer the protocol `name` with `handler` (default: the node object answers,
    `ProtocolClient`). Registering the same handler again is a no-op."""
    if PROTOCOLS.get(name, handler) is not handler:
        raise ConfigurationError(
            f"the client-side protocol {name!r} is already registered; pick another name"
        )
    PROTOCOLS[name] = handler


def execute(client: ClientLike, instruction: Instruction, context: Context) -> Result:
    """Run `instruction` on the node `context` describes, whose client object is `client`."""
    if not isinstance(instruction, PhaseIns):
        return call_client(client, instruction)
    handler = PROTOCOLS.get(instruction.protocol)
    if handler is None:
        raise InvalidMessageError(
            f"this client does not know the protocol {instruction.protocol!r} (it knows "
            f"{', '.join(sorted(PROTOCOLS))}); start the node with the app that speaks it, or "
            "update roost on the client"
        )
    return handler(client, instruction, context)
