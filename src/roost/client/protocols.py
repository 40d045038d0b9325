"""What a node runs for an instruction: the client's own methods, or a client-side protocol.

Fit, evaluate and get_parameters go to the client object. A `PhaseIns` goes to the handler of its
protocol, named in `PROTOCOLS`; handlers keep what must survive between phases in the node's
`Context.state`. Every engine and the gRPC client call `execute`, so a protocol works the same
everywhere.
"""

from __future__ import annotations

from collections.abc import Callable

from roost.client.client import ClientLike, Context, call_client
from roost.client.secure_aggregation import answer_secure_aggregation
from roost.core.types import Instruction, PhaseIns, PhaseRes, Result
from roost.errors import InvalidMessageError

PhaseHandler = Callable[[ClientLike, PhaseIns, Context], PhaseRes]

PROTOCOLS: dict[str, PhaseHandler] = {
    "secagg": answer_secure_aggregation,
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
