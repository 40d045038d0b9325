"""What a node runs for an instruction: the client's own methods, or a client-side protocol.

Fit, evaluate and get_parameters go to the client object. A `PhaseIns` goes to the handler of its
protocol, named in `PROTOCOLS`; handlers keep what must survive between phases in the node's
`Context.state`. Every engine and the gRPC client call `execute`, so a protocol works the same
everywhere.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

from roost.client.client import ClientLike, Context, call_client
from roost.client.secure_aggregation import answer_secure_aggregation
from roost.core.types import Instruction, PhaseIns, PhaseRes, Result
from roost.errors import InvalidMessageError

PhaseHandler = Callable[[ClientLike, PhaseIns, Context], PhaseRes]


class ProtocolClient(ABC):
    """A node object that answers a protocol's phases itself.

    `roost.compat.flwr`'s Message-API `ClientApp` is one: each Flower message arrives as a
    `PhaseIns` of the "flwr" protocol and the app's handler answers it. Subclass it (a nominal
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
    "flwr": answer_by_client,
}
"""Client-side protocols by name."""


def execute(client: ClientLike, instruction: Instruction, context: Context) -> Result:
    """Run `instruction` on the node `context` describes, whose client object is `client`."""
    if not isinstance(instruction, PhaseIns):
        return call_client(client, instruction)
    handler = PROTOCOLS.get(instruction.protocol)
    if handler is None:
        raise InvalidMessageError(
            f"this client does not know the protocol {instruction.protocol!r} (it knows "
            f"{', '.join(sorted(PROTOCOLS))}); update roost on the client"
        )
    return handler(client, instruction, context)
