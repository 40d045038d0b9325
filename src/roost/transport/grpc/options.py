"""The options of the gRPC server and of a gRPC client, each one value checked once when made.

`roost.start_server` / `roost.start_client` (and the Flower project runners) take these options
as keyword arguments, build one of these values and hand it to the transport, so that the
transport reads settings already known to be valid.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from roost.core.checks import is_finite_number
from roost.errors import ConfigurationError
from roost.transport.grpc import wire
from roost.transport.grpc.security import PemSource
from roost.transport.grpc.stream import check_chunk_bytes


@dataclass(frozen=True)
class ServerOptions:
    """How a `GrpcServerTransport` serves: who may connect, and the limits on its work.

    Attributes:
        certificates: `(certificate_chain, private_key)` (or Flower's `(ca, chain, key)`), as PEM
            bytes or file paths, to serve TLS; None serves without TLS.
        client_ca: PEM (bytes or path) of a CA: with it (and `certificates`), only clients
            presenting a certificate this CA signed may connect, each under the node id its
            certificate's subject (common name) names (mutual TLS).
        auth_tokens: `{node_id: token}` or a tokens file (`node-id token` per line); when given,
            only clients presenting one of these tokens, under its node id, may join.
        max_message_bytes: largest result accepted, counting its array bytes.
        chunk_bytes: array bytes per frame of an instruction.
        max_clients: most simultaneous connections. Connections are served by one event loop,
            so an idle connected client costs kilobytes and no thread.
        max_concurrent_uploads: upload slots: results received at once; bounds the server's
            buffers of received models to about (this + 1) × model size however many clients
            answer. Other clients send their result's header and wait for the server to grant
            them a slot before they send its chunks, so a waiting client costs the server
            nothing.
        upload_idle_timeout: seconds a granted upload may go without a chunk before it is that
            client's failure (and its connection is closed, freeing the slot), and seconds a frame
            sent to a client may wait for it to read; None never gives up. Time spent waiting
            for a slot does not count.
        receive_window_bytes: HTTP/2 flow-control window of each client's stream: what gRPC may
            buffer per client beyond roost's own buffers. A fixed window (instead of gRPC's
            growing one) bounds what a client can send before the server reads it; honest
            clients send chunks only once granted, and the server reads them as they come.
            Raise it for fast uploads over links with a long round-trip time.
        keepalive_s: seconds between HTTP/2 pings on an idle stream, so that a dead peer is noticed
            while a live client trains for as long as it needs.
        client_wait_timeout: seconds `wait_for_clients` waits by default; None waits forever.
        hello_timeout: seconds a new connection has to introduce itself.
        violation_allowance: results or error reports for instructions not awaited (replays,
            late answers) a client may send beyond one per instruction it was sent; past that
            its connection is closed. They are logged in summary lines, not one line each.

    Raises:
        ConfigurationError: a count or size that is not a positive int, a chunk size out of
            range, or a duration that is not a finite number of seconds > 0 (None only where
            a timeout may be off).
    """

    certificates: Sequence[PemSource] | None = None
    client_ca: PemSource | None = None
    auth_tokens: Mapping[str, str] | str | Path | None = None
    max_message_bytes: int = wire.DEFAULT_MAX_MESSAGE_BYTES
    chunk_bytes: int = wire.INSTRUCTION_CHUNK_BYTES
    max_clients: int = 10_000
    max_concurrent_uploads: int = 8
    upload_idle_timeout: float | None = 60.0
    receive_window_bytes: int = 64 << 10
    keepalive_s: float = 30.0
    client_wait_timeout: float | None = None
    hello_timeout: float = 10.0
    violation_allowance: int = 32

    def __post_init__(self) -> None:
        check_chunk_bytes(self.chunk_bytes)
        for name in (
            "max_message_bytes",
            "max_clients",
            "max_concurrent_uploads",
            "receive_window_bytes",
        ):
            _check_whole(name, getattr(self, name), minimum=1)
        _check_whole("violation_allowance", self.violation_allowance, minimum=0)
        for name in ("keepalive_s", "hello_timeout"):
            _check_seconds(name, getattr(self, name))
        for name in ("upload_idle_timeout", "client_wait_timeout"):
            _check_seconds(name, getattr(self, name), or_none=True)


@dataclass(frozen=True)
class ClientOptions:
    """How a `GrpcClient` connects: its credentials, its limits and how it reconnects.

    Attributes:
        root_certificates: PEM bytes or path of the certificate that signed the server's; enables
            TLS. None connects without TLS.
        certificate: `(certificate_chain, private_key)`, PEM bytes or paths: this client's own
            certificate, for servers that require one (mutual TLS); its subject's common name
            must be the node id. Needs `root_certificates`.
        token: the token the server issued for the node id, if it authenticates clients.
        max_message_bytes: largest instruction accepted, counting its array bytes.
        chunk_bytes: array bytes per frame sent.
        keepalive_s: seconds between HTTP/2 pings while the stream is idle (for example during a
            long `fit`), which keep the connection known to be alive in both directions.
        reconnect_timeout: give up after this many seconds without a connection (None: never).
        initial_backoff / max_backoff: first and longest wait between connection attempts.

    Raises:
        ConfigurationError: a `max_message_bytes` that is not a positive int, a chunk size out
            of range, a `certificate` that is not a pair or comes without `root_certificates`, a
            token that is not a str, or a duration that is not a finite number of seconds > 0
            (`reconnect_timeout` may be None).
    """

    root_certificates: PemSource | None = None
    certificate: tuple[PemSource, PemSource] | None = None
    token: str | None = None
    max_message_bytes: int = wire.DEFAULT_MAX_MESSAGE_BYTES
    chunk_bytes: int = wire.DEFAULT_CHUNK_BYTES
    keepalive_s: float = 30.0
    reconnect_timeout: float | None = 600.0
    initial_backoff: float = 0.5
    max_backoff: float = 10.0

    def __post_init__(self) -> None:
        check_chunk_bytes(self.chunk_bytes)
        _check_whole("max_message_bytes", self.max_message_bytes, minimum=1)
        if self.certificate is not None and self.root_certificates is None:
            raise ConfigurationError(
                "a client certificate needs TLS: pass root_certificates (--root-certificate) too"
            )
        if self.certificate is not None and len(self.certificate) != 2:
            raise ConfigurationError("certificate must be (certificate_chain, private_key)")
        if self.token is not None and not isinstance(self.token, str):
            raise ConfigurationError(f"token must be a str, got {type(self.token).__name__}")
        for name in ("keepalive_s", "initial_backoff", "max_backoff"):
            _check_seconds(name, getattr(self, name))
        _check_seconds("reconnect_timeout", self.reconnect_timeout, or_none=True)
        if self.initial_backoff > self.max_backoff:
            raise ConfigurationError(
                f"initial_backoff ({self.initial_backoff:g} s) must not exceed max_backoff "
                f"({self.max_backoff:g} s)"
            )


def _check_seconds(name: str, value: object, *, or_none: bool = False) -> None:
    """Refuse a duration that is not a finite number of seconds > 0 (or None, where allowed)."""
    if value is None and or_none:
        return
    if not is_finite_number(value) or value <= 0:
        allowed = ", or None" if or_none else ""
        raise ConfigurationError(
            f"{name} must be a finite number of seconds > 0{allowed}, got {value!r}"
        )


def _check_whole(name: str, value: object, *, minimum: int) -> None:
    """Refuse a `value` that is not an int of at least `minimum` (a bool is no count)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigurationError(f"{name} must be an int >= {minimum}, got {value!r}")
