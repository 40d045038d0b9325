"""The server's gRPC listener: options, TLS, token authentication and the bound port."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import grpc

from roost.errors import ConfigurationError
from roost.transport.grpc import wire
from roost.transport.grpc.security import (
    PemSource,
    TokenAuthInterceptor,
    TokenStore,
    server_credentials,
)
from roost.transport.grpc.stream import stream_options

log = logging.getLogger(__name__)

_LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def server_options(receive_window_bytes: int, keepalive_s: float) -> list[tuple[str, int]]:
    """gRPC channel options of the server (see `GrpcServerTransport` for what they bound)."""
    return [
        *stream_options(keepalive_s),
        ("grpc.http2.bdp_probe", 0),
        ("grpc.http2.lookahead_bytes", receive_window_bytes),
        # Clients ping as often as every second while they train; that is not abuse.
        ("grpc.http2.min_recv_ping_interval_without_data_ms", 1000),
        ("grpc.http2.max_ping_strikes", 0),
        # Without this, a second server could silently share the port with a first one.
        ("grpc.so_reuseport", 0),
    ]


class Listener:
    """A started gRPC server with roost's one `Join` method, listening on `address`.

    Args:
        address: `host:port`; port 0 picks a free port (see `port`).
        join: the handler of the `Join` stream (frames in, frames out, as bytes).
        certificates: `(chain, key)` or `(ca, chain, key)` PEM to serve TLS; None: no TLS.
        store: the admitted tokens; None admits calls without a token.
        max_clients: most simultaneous streams.
        options: gRPC server options (`server_options`).
    """

    def __init__(
        self,
        address: str,
        join: grpc.RpcMethodHandler,
        *,
        certificates: Sequence[PemSource] | None,
        store: TokenStore | None,
        max_clients: int,
        options: list[tuple[str, int]],
    ) -> None:
        handler = grpc.method_handlers_generic_handler(wire.SERVICE, {"Join": join})
        self._server = grpc.server(
            ThreadPoolExecutor(max_workers=max_clients + 4, thread_name_prefix="roost-grpc"),
            handlers=[handler],
            interceptors=[TokenAuthInterceptor(store)] if store else [],
            options=options,
            maximum_concurrent_rpcs=max_clients,
        )
        self.tls = certificates is not None
        self.port = self._bind(address, certificates)
        self.address = f"{address.rsplit(':', 1)[0]}:{self.port}"
        self._server.start()
        log.info(
            "roost server listening on %s (%s%s)",
            self.address,
            "TLS" if self.tls else "no TLS",
            ", token authentication" if store else "",
        )
        _warn_if_exposed(address, self.address, tls=self.tls, authenticated=store is not None)

    def _bind(self, address: str, certificates: Sequence[PemSource] | None) -> int:
        try:
            if certificates is not None:
                port = self._server.add_secure_port(address, server_credentials(certificates))
            else:
                port = self._server.add_insecure_port(address)
        except RuntimeError as error:
            port, reason = 0, str(error)
        else:
            reason = "the address is invalid or in use"
        if port == 0:
            raise ConfigurationError(
                f"cannot listen on {address}: {reason}; choose another port or stop the "
                "process using it"
            )
        return port

    def stop(self, grace: float) -> None:
        """Stop serving; calls still running get `grace` seconds."""
        self._server.stop(grace=grace).wait()


def _warn_if_exposed(address: str, bound: str, *, tls: bool, authenticated: bool) -> None:
    if authenticated and not tls:
        log.warning("tokens travel in clear text without TLS; pass certificates outside tests")
    host = address.rsplit(":", 1)[0].strip("[]")
    if not (authenticated or tls) and host not in _LOCAL_HOSTS:
        log.warning(
            "serving on %s without TLS or client authentication: anyone who can reach it can "
            "join the run; pass certificates and auth tokens, or listen on 127.0.0.1",
            bound,
        )
