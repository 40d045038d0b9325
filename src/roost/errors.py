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
