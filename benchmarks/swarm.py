"""Many light roost clients in one process, on one asyncio event loop.

Each client holds its own connection (its own TCP connection and `Join` stream) and speaks the
wire protocol directly: it answers `fit` by sending back the model it received, in chunks of a
roost client's default size (the frames as they came where they are no larger, so answering
mostly costs no copy), and `evaluate` with a fixed loss. Like a roost client, it sends a result's
header, and its chunks only once the server grants the upload. That makes a thousand clients cost
one process and a few hundred MB, so a server can be loaded with the connections of a
cross-device federation on one machine.

A client can also misbehave (`Behaviour`), which the server's tests use: never finish an upload,
report NaN metrics or an overflowing loss, flood stale results, or disconnect mid-round.

Used by `grpc_load.py` (the load table) and by the server's churn and hostile-client tests.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import grpc
import grpc.aio

from roost.transport.grpc import frames, wire
from roost.transport.grpc import roost_pb2 as pb
from roost.transport.grpc.security import token_metadata


class Behaviour(enum.Enum):
    ECHO = "echo"  # honest: return the model received, 1 example
    LEAVE_ON_INSTRUCTION = "leave-on-instruction"  # disconnect when the first fit arrives
    LEAVE_MID_UPLOAD = "leave-mid-upload"  # send half of the first fit result, then disconnect
    NEVER_FINISH = "never-finish"  # declare a fit result, send no chunk once granted, stay
    NAN_METRICS = "nan-metrics"  # fit results with a NaN metric
    HUGE_LOSS = "huge-loss"  # evaluate: loss 1e300 over 10^9 examples; fit: a client error
    FLOOD = "flood"  # answer every instruction with hundreds of results for old instructions


@dataclass
class _Answer:
    """A message to send: its first frames, and for a result with chunks, the chunks to send
    once the server grants the upload."""

    frames: list[bytes]
    message_id: int = 0
    chunks: list[bytes] = field(default_factory=list)


def _options(window_bytes: int) -> list[tuple[str, int]]:
    return [
        # Its own connection per client: by default gRPC shares one between equal channels.
        ("grpc.use_local_subchannel_pool", 1),
        ("grpc.max_receive_message_length", wire.FRAME_LIMIT_BYTES),
        ("grpc.max_send_message_length", wire.FRAME_LIMIT_BYTES),
        ("grpc.http2.lookahead_bytes", window_bytes),
        ("grpc.http2.bdp_probe", 0),
    ]


class LightClient:
    """One connection to the server, served by a coroutine."""

    def __init__(
        self,
        address: str,
        node_id: str,
        behaviour: Behaviour = Behaviour.ECHO,
        token: str | None = None,
        window_bytes: int = 256 << 10,
        reconnect: bool = False,
    ) -> None:
        self.address = address
        self.reconnect = reconnect
        self._leaving = False
        self.node_id = node_id
        self.behaviour = behaviour
        self.token = token
        self.window_bytes = window_bytes
        self.welcomed = asyncio.Event()
        self.answered = 0
        self.run_over = False
        self.ended: str | None = None  # why the stream ended, once it has
        self._channel: grpc.aio.Channel | None = None
        self._outbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        # Answers not sent yet, and the result whose header waits for the server's grant.
        self._answers: collections.deque[_Answer] = collections.deque()
        self._awaiting: _Answer | None = None

    async def run(self) -> None:
        """Serve until the server ends the run, or this client leaves (or, without `reconnect`,
        until the first connection ends)."""
        while True:
            await self._serve_once()
            if self.run_over or self._leaving or not self.reconnect:
                return
            await asyncio.sleep(0.2)

    async def _serve_once(self) -> None:
        self._outbox = asyncio.Queue()
        self._answers, self._awaiting = collections.deque(), None
        self._channel = grpc.aio.insecure_channel(self.address, options=_options(self.window_bytes))
        metadata = token_metadata(self.token) if self.token else None
        # wait_for_ready: thousands connecting at once may overflow the listen backlog; the
        # channel then retries instead of failing the call.
        call = self._channel.stream_stream(wire.JOIN_METHOD)(
            self._requests(), metadata=metadata, wait_for_ready=True
        )
        hello = pb.Greeting(protocol_version=wire.PROTOCOL_VERSION, node_id=self.node_id)
        self._outbox.put_nowait(frames.frame_bytes(hello=hello))
        try:
            await self._receive(call)
            self.ended = "the stream ended"
        except grpc.aio.AioRpcError as error:
            self.ended = f"{error.code().name}: {error.details()}"
        except asyncio.CancelledError:
            self._leaving = True
            self.ended = "left"
        finally:
            await self._close()

    async def leave(self) -> None:
        """Disconnect at once (the stream is cancelled), for good."""
        self._leaving = True
        await self._close()

    async def _close(self) -> None:
        self._outbox.put_nowait(None)
        if self._channel is not None:
            channel, self._channel = self._channel, None
            await channel.close(grace=None)

    async def _requests(self):  # type: ignore[no-untyped-def]
        while (frame := await self._outbox.get()) is not None:
            yield frame

    def _send(self, frames: Iterable[bytes]) -> None:
        for frame in frames:
            self._outbox.put_nowait(frame)

    def _submit(self, answer: _Answer) -> None:
        """Queue a message; messages go out in order, each result's chunks once granted."""
        self._answers.append(answer)
        self._send_next()

    def _send_next(self) -> None:
        while self._awaiting is None and self._answers:
            answer = self._answers.popleft()
            self._send(answer.frames)
            if answer.chunks:
                self._awaiting = answer

    async def _on_grant(self, message_id: int) -> None:
        answer = self._awaiting
        if answer is None or answer.message_id != message_id:
            return
        if self.behaviour is Behaviour.NEVER_FINISH:
            return  # holds its upload slot, sends nothing, answers nothing more
        if self.behaviour is Behaviour.LEAVE_MID_UPLOAD:
            self._send(answer.chunks[: len(answer.chunks) // 2])
            await asyncio.sleep(0.05)
            await self.leave()
            return
        self._send(answer.chunks)
        self.answered += 1
        self._awaiting = None
        self._send_next()

    def _on_rejection(self, message_id: int) -> None:
        if self._awaiting is not None and self._awaiting.message_id == message_id:
            self._awaiting = None  # the result ends with its header
            self._send_next()

    async def _receive(self, call: grpc.aio.StreamStreamCall) -> None:
        header: pb.Header | None = None
        chunks: list[bytes] = []
        async for raw in call:
            if header is not None:  # a chunk of the instruction being received
                chunks.append(raw)
                if len(chunks) == header.num_chunks:
                    await self._answer(header, chunks)
                    header, chunks = None, []
                continue
            frame = frames.parse_frame(raw)
            body = frame.WhichOneof("body")
            if body == "welcome":
                self.welcomed.set()
            elif body == "run_end":
                self.run_over = True
                return
            elif body == "grant":
                await self._on_grant(frame.grant.message_id)
            elif body == "rejection":
                self._on_rejection(frame.rejection.message_id)
            elif body == "instruction":
                header = frame.instruction
                if header.num_chunks == 0:
                    await self._answer(header, [])
                    header = None

    async def _answer(self, ins: pb.Header, chunks: list[bytes]) -> None:
        behaviour = self.behaviour
        if ins.kind == pb.EVALUATE:
            loss, examples = (1e300, 10**9) if behaviour is Behaviour.HUGE_LOSS else (1.0, 1)
            header = pb.Header(kind=pb.EVALUATE, loss=loss, num_examples=examples)
            self._submit(_Answer([frames.frame_bytes(result=_with_id(header, ins.message_id))]))
            self.answered += 1
            return
        if behaviour is Behaviour.LEAVE_ON_INSTRUCTION:
            await self.leave()
            return
        if behaviour is Behaviour.HUGE_LOSS:
            error = pb.MessageFailure(message_id=ins.message_id, reason="nothing to train on")
            self._submit(_Answer([frames.frame_bytes(client_error=error)]))
            return
        chunks = _result_chunks(chunks, wire.DEFAULT_CHUNK_BYTES)
        result = pb.Header(kind=ins.kind, arrays=ins.arrays, num_chunks=len(chunks))
        result.message_id, result.num_examples = ins.message_id, 1
        if behaviour is Behaviour.NAN_METRICS:
            result.values.extend(wire.encode_values({"accuracy": float("nan")}, "metrics"))
        if behaviour is Behaviour.FLOOD:
            # Headers of results for instructions never sent: each is rejected at once.
            stale = [_with_id(result, ins.message_id + 10**6 + i) for i in range(300)]
            self._submit(_Answer([frames.frame_bytes(result=header) for header in stale]))
        header = frames.frame_bytes(result=result)
        self._submit(_Answer([header], ins.message_id, chunks) if chunks else _Answer([header]))


def _result_chunks(chunks: list[bytes], chunk_bytes: int) -> list[bytes]:
    """Received chunk frames re-cut into frames of at most `chunk_bytes` of data, as a client
    sends its result (its chunk size need not be the server's)."""
    cut: list[bytes] = []
    for raw in chunks:
        data = frames.chunk_data(raw)
        if data is None:
            data = memoryview(frames.parse_frame(raw).chunk.data)
        if len(data) <= chunk_bytes:
            cut.append(raw)
            continue
        cut.extend(
            frames.chunk_frame(data[start : start + chunk_bytes])
            for start in range(0, len(data), chunk_bytes)
        )
    return cut


def _with_id(header: pb.Header, message_id: int) -> pb.Header:
    copy = pb.Header()
    copy.CopyFrom(header)
    copy.message_id = message_id
    return copy


class Swarm:
    """`LightClient`s on one event loop, on a thread of their own (`start` / `stop`).

    Args:
        address: the server's `host:port`.
        behaviours: `{node_id: Behaviour}`.
        tokens: `{node_id: token}` when the server authenticates clients.
        window_bytes: each client's HTTP/2 receive window.
        reconnect: clients whose connection ends reconnect, as real clients do.
    """

    def __init__(
        self,
        address: str,
        behaviours: Mapping[str, Behaviour],
        tokens: Mapping[str, str] | None = None,
        window_bytes: int = 256 << 10,
        reconnect: bool = False,
    ) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.clients = {
            node_id: LightClient(
                address, node_id, behaviour, (tokens or {}).get(node_id), window_bytes, reconnect
            )
            for node_id, behaviour in behaviours.items()
        }
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> Swarm:
        self._thread.start()
        self.call(self._start)
        return self

    async def _start(self) -> None:
        self._tasks = [asyncio.create_task(client.run()) for client in self.clients.values()]

    def call(self, function: Callable[[], object]) -> object:
        """Run `function` (a coroutine function) on the swarm's loop; its result."""
        return asyncio.run_coroutine_threadsafe(function(), self.loop).result(60)  # type: ignore[arg-type]

    def stop(self) -> None:
        async def cancel() -> None:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

        self.call(cancel)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    def __enter__(self) -> Swarm:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
