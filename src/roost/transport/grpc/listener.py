"""The server's gRPC listener: options, TLS, token authentication and the bound port."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

import grpc
import grpc.aio

from roost.errors import ConfigurationError
from roost.transport.grpc import wire
from roost.transport.grpc.conduct import Summary
from roost.transport.grpc.security import (
    PemSource,
    TokenAuthInterceptor,
    TokenStore,
    server_credentials,
)
from roost.transport.grpc.stream import stream_options

log = logging.getLogger(__name__)
T = TypeVar("T")

_LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")

# What each connection's socket reader may keep allocated between reads. gRPC otherwise sizes it
# to the largest burst it has read and keeps it while the connection idles: after a round of
# uploads, about a stream window per connected client. Versions of gRPC that do not know this
# option ignore it.
READ_BUFFER_BYTES = 16 << 10


def server_options(receive_window_bytes: int, keepalive_s: float) -> list[tuple[str, int]]:
    """gRPC channel options of the server (see `GrpcServerTransport` for what they bound)."""
    return [
        *stream_options(keepalive_s),
        ("grpc.http2.bdp_probe", 0),
        ("grpc.http2.lookahead_bytes", receive_window_bytes),
        ("grpc.experimental.tcp_max_read_buffer_size", READ_BUFFER_BYTES),
        # Clients ping as often as every second while they train; that is not abuse.
        ("grpc.http2.min_recv_ping_interval_without_data_ms", 1000),
        ("grpc.http2.max_ping_strikes", 0),
        # Without this, a second server could silently share the port with a first one.
        ("grpc.so_reuseport", 0),
    ]


class Listener:
    """A started gRPC server with roost's one `Join` method, listening on `address`.

    The server is gRPC's asyncio server, run by one event loop on its own thread: however many
    clients connect, the server's threads stay few (this one and gRPC's own).

    Args:
        address: `host:port`; port 0 picks a free port (see `port`).
        join: the handler of the `Join` stream (frames in, frames out, as bytes).
        certificates: `(chain, key)` or `(ca, chain, key)` PEM to serve TLS; None: no TLS.
        client_ca: with TLS, require client certificates this CA signed (mutual TLS).
        store: the admitted tokens; None admits calls without a token.
        refusals: where calls without an admitted token are counted and logged.
        max_clients: most simultaneous streams.
        options: gRPC server options (`server_options`).
    """

    def __init__(
        self,
        address: str,
        join: grpc.RpcMethodHandler,
        *,
        certificates: Sequence[PemSource] | None,
        client_ca: PemSource | None = None,
        store: TokenStore | None,
        refusals: Summary,
        max_clients: int,
        options: list[tuple[str, int]],
    ) -> None:
        if client_ca is not None and certificates is None:
            raise ConfigurationError(
                "client certificates (client_ca, --client-ca) need TLS: pass the server's "
                "certificates too"
            )
        credentials = None if certificates is None else server_credentials(certificates, client_ca)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="roost-grpc-loop", daemon=True
        )
        self._thread.start()
        handler = grpc.method_handlers_generic_handler(wire.SERVICE, {"Join": join})
        interceptors = [TokenAuthInterceptor(store, refusals)] if store else []
        try:
            self.port = self.call(
                self._start(address, handler, interceptors, credentials, max_clients, options)
            )
        except BaseException:
            self._stop_loop()
            raise
        self.tls = certificates is not None
        self.address = f"{address.rsplit(':', 1)[0]}:{self.port}"
        log.info(
            "roost server listening on %s (%s%s%s)",
            self.address,
            "TLS" if self.tls else "no TLS",
            ", client certificates" if client_ca is not None else "",
            ", token authentication" if store else "",
        )
        _warn_if_exposed(
            address,
            self.address,
            tls=self.tls,
            authenticated=store is not None or client_ca is not None,
            tokens=store is not None,
        )

    def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run `coroutine` on the server's loop and wait for its result (from another thread)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    async def _start(
        self,
        address: str,
        handler: grpc.GenericRpcHandler,
        interceptors: list[grpc.aio.ServerInterceptor],
        credentials: grpc.ServerCredentials | None,
        max_clients: int,
        options: list[tuple[str, int]],
    ) -> int:
        # Created on the loop that serves it: gRPC's asyncio objects belong to one loop.
        self._server = grpc.aio.server(
            handlers=[handler],
            interceptors=interceptors,
            options=options,
            maximum_concurrent_rpcs=max_clients,
        )
        try:
            if credentials is not None:
                port = self._server.add_secure_port(address, credentials)
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
        await self._server.start()
        return port

    def stop(self, grace: float) -> None:
        """Stop serving; calls still running get `grace` seconds. Then end the loop's thread."""
        if self.loop.is_closed():
            return
        try:
            self.call(self._server.stop(grace))
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


def _warn_if_exposed(
    address: str, bound: str, *, tls: bool, authenticated: bool, tokens: bool
) -> None:
    if tokens and not tls:
        log.warning("tokens travel in clear text without TLS; pass certificates outside tests")
    host = address.rsplit(":", 1)[0].strip("[]")
    if not (authenticated or tls) and host not in _LOCAL_HOSTS:
        log.warning(
            "serving on %s without TLS or client authentication: anyone who can reach it can "
            "join the run; pass certificates and auth tokens, or listen on 127.0.0.1",
            bound,
        )
