"""Exceptions a user can cause, each with a message that says what to do."""


class RoostError(Exception):
    """Base class of every error roost raises on purpose."""


class ConfigurationError(RoostError, ValueError):
    """A setting is missing, contradictory or out of range."""


class InvalidMessageError(RoostError, ValueError):
    """Something received from a client (or server) failed validation and was rejected."""


class NotEnoughClientsError(RoostError):
    """Fewer clients are available than the strategy requires."""


class ClientRefusedError(RoostError):
    """The server refused this client: wrong credentials, protocol version or node id."""


class ServerUnreachableError(RoostError):
    """A client could not reach its server within its reconnection time limit."""


class RunFinished(RoostError):
    """A part ended the run early on purpose (e.g. its privacy budget would be exceeded).

    Raised before a round's cohort is chosen; the round loop stops there, keeps every completed
    round, and logs the message.
    """


class TlsMismatchError(ServerUnreachableError):
    """The client's TLS settings do not fit the server's (TLS on one end only, or a certificate
    the other end does not trust). Raised at the first failed connection: retrying cannot help."""


def other_engines(*names: str) -> str:
    """How a message names the engines to use instead, for the command line and Python alike:
    `other_engines("sequential", "process")` -> "the sequential or process engine
    (--engine sequential; engine='sequential' in Python)"."""
    listed = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
    return f"the {listed} engine (--engine {names[0]}; engine='{names[0]}' in Python)"
