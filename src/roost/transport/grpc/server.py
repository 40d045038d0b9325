"""The server side of deployment: a `Transport` over gRPC that the round loop drives unchanged.

Clients connect to the server and keep one bidirectional `Join` stream open for the whole run. The
transport waits for enough connected clients (`wait_for_clients`), sends a cohort's instructions
down their streams and yields results as they arrive (`run`), as often per round as the loop has
phases. Its parts: the `Listener` (gRPC, TLS, the port), the `Registry` (who is connected and what
they owe), a `Session` per stream (the frames in and out) and the `UploadSlots` that bound how
many results are received at once.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import queue
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future

import grpc

from roost.core.types import ClientId, Failure, Instruction, Outcome
from roost.errors import ConfigurationError, InvalidMessageError
from roost.transport.grpc.listener import Listener, server_options
from roost.transport.grpc.options import ServerOptions
from roost.transport.grpc.outgoing import CohortFrames
from roost.transport.grpc.registry import Awaited, Connection, Registry, Sink
from roost.transport.grpc.security import TokenStore
from roost.transport.grpc.session import (
    RUN_END,
    SERVER_STOPPED,
    SessionSettings,
    StreamHandler,
)
from roost.transport.grpc.uploads import UploadSlots

log = logging.getLogger(__name__)


class GrpcServerTransport:
    """Serve a federation over gRPC: the `Transport` that `roost.start_server` hands the loop.

    Args:
        address: `host:port` to listen on; port 0 picks a free port (see `port`).
        options: who may connect and the limits served with (`ServerOptions`; default: its
            defaults, no TLS and no authentication).
    """

    def __init__(self, address: str, options: ServerOptions | None = None) -> None:
        options = options if options is not None else ServerOptions()
        self.options = options
        self._slots = UploadSlots(options.max_concurrent_uploads)
        auth_tokens = options.auth_tokens
        store = TokenStore.from_source(auth_tokens) if auth_tokens is not None else None
        self._registry = Registry(store)
        settings = SessionSettings(
            options.max_message_bytes,
            options.hello_timeout,
            options.violation_allowance,
            send_timeout=options.upload_idle_timeout,
        )
        join = StreamHandler(self._registry, self._slots, settings)
        # No deserializer: frames arrive as bytes and are parsed by roost, after the
        # interceptor has authenticated the call, with roost's own checks and errors.
        self._listener = Listener(
            address,
            grpc.stream_stream_rpc_method_handler(join.serve),
            certificates=options.certificates,
            client_ca=options.client_ca,
            store=store,
            refusals=self._registry.token_refusals,
            max_clients=options.max_clients,
            options=server_options(options.receive_window_bytes, options.keepalive_s),
        )
        self._watcher: Future[None] | None = None
        if options.upload_idle_timeout is not None:
            self._watcher = asyncio.run_coroutine_threadsafe(
                self._watch_uploads(options.upload_idle_timeout), self._listener.loop
            )

    # -- Transport ----------------------------------------------------------------------------

    def wait_for_clients(self, count: int, timeout: float | None = None) -> list[ClientId]:
        """Block until `count` clients are connected; return all connected ids, sorted."""
        return self._registry.wait_for(
            count, self.options.client_wait_timeout if timeout is None else timeout
        )

    def run(
        self, cohort: Sequence[tuple[ClientId, Instruction]], timeout: float | None
    ) -> Iterator[Outcome]:
        """Send each instruction; yield outcomes as they arrive, timeouts and disconnects too.

        Any number of runs may follow one another on the same connections, with any kind of
        instruction: a round's phases (fit, then evaluate, ...) are separate runs.
        """
        sink: Sink = queue.Queue()
        try:
            absent, expected = self._send(cohort, sink)
            yield from absent
            yield from self._collect(sink, expected, timeout)
        finally:
            self._registry.forget(sink)
            # Readers waiting for a slot to upload an answer nobody awaits any more stop waiting.
            self._slots.wake()
            _take_all(sink)  # a consumer that stopped early leaves results behind: free their slots
            _give_back_freed_memory()

    def close(self, grace: float = 5.0, *, run_over: bool = True) -> None:
        """End every connection, give clients `grace` seconds to hang up, then stop serving.

        With `run_over` (the run finished) clients are told the run is over and exit. Without
        it (the server failed or was stopped early) they are told the server stopped: they keep
        reconnecting, so a server resumed from its state directory finds them again.
        """
        connections = self._registry.begin_close()
        if connections is None:
            return
        if self._watcher is not None:
            self._watcher.cancel()
        for connection in connections:
            if run_over:
                connection.end([RUN_END])
            else:
                connection.end([], SERVER_STOPPED)
        self._registry.wait_until_empty(grace)
        self._listener.stop(grace=1.0)
        self._registry.token_refusals.flush()
        self._registry.hello_refusals.flush()
        log.info("roost server stopped")

    def __enter__(self) -> GrpcServerTransport:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def address(self) -> str:
        """`host:port` the server listens on, with the port it got for port 0."""
        return self._listener.address

    @property
    def port(self) -> int:
        return self._listener.port

    @property
    def tls(self) -> bool:
        """Whether clients must connect with TLS."""
        return self._listener.tls

    def connected(self) -> list[ClientId]:
        """Ids of the clients connected now, sorted."""
        return self._registry.connected()

    @property
    def free_upload_slots(self) -> int:
        """Upload slots not held by a result being received or waiting for the round."""
        return self._slots.free

    # -- one run ------------------------------------------------------------------------------

    def _send(
        self, cohort: Sequence[tuple[ClientId, Instruction]], sink: Sink
    ) -> tuple[list[Outcome], int]:
        """Send the cohort its instructions; the outcomes of absent clients, and how many sent."""
        try:
            # Every instruction is encoded before any is sent, and the model once for all.
            outgoing = CohortFrames(cohort, self.options.chunk_bytes)
        except InvalidMessageError as error:
            raise ConfigurationError(f"cannot send the instruction: {error}") from None
        absent: list[Outcome] = []
        for client_id, instruction in cohort:
            awaited = self._registry.expect(client_id, instruction, sink)
            if awaited is None:
                absent.append((client_id, Failure(client_id, "not connected", "disconnected")))
                continue
            awaited.connection.send(outgoing.frames(instruction, awaited.message_id))
        return absent, len(cohort) - len(absent)

    def _collect(self, sink: Sink, expected: int, timeout: float | None) -> Iterator[Outcome]:
        """Yield `expected` outcomes from `sink`, then a timeout failure for each one missing."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while expected:
            wait = None if deadline is None else deadline - time.monotonic()
            try:
                if wait is not None and wait <= 0:
                    raise queue.Empty
                client_id, outcome, slot = sink.get(timeout=wait)
            except queue.Empty:
                break
            expected -= 1
            if slot is not None:
                slot.release()
            yield client_id, outcome
        if not expected:
            return
        late = self._registry.forget(sink)
        self._slots.wake()
        # Results completed just before the deadline are in the sink already: use them.
        yield from _take_all(sink)
        for awaited in late:
            self._stop_late_upload(awaited)
            reason = f"no result within the round timeout of {timeout:g} s"
            yield awaited.client_id, Failure(awaited.client_id, reason, "timeout")

    def _stop_late_upload(self, awaited: Awaited) -> None:
        """Close a timed-out client still sending its result: it holds an upload slot."""
        upload = awaited.connection.upload
        if upload is not None and upload.message_id == awaited.message_id:
            self._cut(awaited.connection, "still sending its result when the round timed out")

    async def _watch_uploads(self, idle_timeout: float) -> None:
        """Cut uploads that went `idle_timeout` seconds without a chunk (on the server's loop)."""
        while True:
            await asyncio.sleep(min(max(idle_timeout / 4, 0.01), 1.0))
            now = time.monotonic()
            for connection in self._registry.uploading():
                upload = connection.upload
                if upload is not None and upload.idle_for(now) > idle_timeout:
                    reason = f"sent no chunk of its result for {idle_timeout:g} s"
                    self._cut(connection, reason, "timeout")

    def _cut(self, connection: Connection, reason: str, kind: str = "timeout") -> None:
        """End a connection for taking too long; what it owed fails with `reason`."""
        log.warning("closing the connection of %s: %s", connection.name, reason)
        connection.end([], (grpc.StatusCode.DEADLINE_EXCEEDED, reason))
        self._registry.drop(connection, reason, kind)


def _find_malloc_trim() -> Callable[[int], int] | None:
    """glibc's `malloc_trim`, or None where the C library is another one."""
    try:
        if not (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc"):
            return None
        return ctypes.CDLL(None).malloc_trim
    except (ValueError, OSError, AttributeError):  # no such name, library or symbol
        return None


_MALLOC_TRIM = _find_malloc_trim()


def _give_back_freed_memory() -> None:
    """Hand the pages a phase freed back to the system (glibc only; elsewhere nothing).

    A phase frees about what it allocated (gRPC's buffers of thousands of streams, received
    results), but glibc keeps freed pages that lie between live blocks: without this, resident
    memory creeps up to the rounds' high-water mark and stays there.
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def _take_all(sink: Sink) -> list[Outcome]:
    """Empty `sink`, giving back the slots its results hold."""
    outcomes: list[Outcome] = []
    while True:
        try:
            client_id, outcome, slot = sink.get_nowait()
        except queue.Empty:
            return outcomes
        if slot is not None:
            slot.release()
        outcomes.append((client_id, outcome))
