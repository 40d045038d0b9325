"""What the gRPC server keeps in memory: one serialized model per cohort, no frame a reader has
finished with, and a bounded number of sends being written."""

from __future__ import annotations

import asyncio
import gc
import queue
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from grpc_support import RawClient, serving, start_round

from roost.core.types import FitIns, FitRes
from roost.transport.grpc import frames, wire
from roost.transport.grpc import roost_pb2 as pb
from roost.transport.grpc.listener import server_options
from roost.transport.grpc.registry import Registry
from roost.transport.grpc.session import Session, SessionSettings, StreamHandler
from roost.transport.grpc.uploads import UploadSlots


@pytest.fixture
def pool():
    executor = ThreadPoolExecutor(2)
    yield executor
    executor.shutdown(wait=False, cancel_futures=True)


def test_a_cohort_shares_one_serialization_of_the_model(monkeypatch, pool):
    """Each client gets its own instruction object (its own config) around the same model: the
    model's chunk frames are built once for the cohort, not once per client."""
    built: list[int] = []
    chunk_frame = wire.chunk_frame

    def counted(data):
        built.append(len(data))
        return chunk_frame(data)

    monkeypatch.setattr(wire, "chunk_frame", counted)
    model = [np.arange(40, dtype=np.float64), np.ones((3, 4), dtype=np.float32)]
    node_ids = [f"n{i}" for i in range(4)]
    with serving(chunk_bytes=64) as transport:
        raws = [RawClient(transport.address, node_id=node_id) for node_id in node_ids]
        try:
            transport.wait_for_clients(len(raws), timeout=10)
            cohort = [(node_id, FitIns(model, {"seed": i})) for i, node_id in enumerate(node_ids)]
            future = start_round(pool, transport, cohort, timeout=10)
            received = [raw.instruction() for raw in raws]
            # 320 bytes in 5 chunks, then 48 bytes in 1: six frames for four clients.
            assert len(built) == 6
            for i, (header, arrays) in enumerate(received):
                assert wire.decode_values(header.values, "config") == {"seed": i}
                for got, sent in zip(arrays, model, strict=True):
                    np.testing.assert_array_equal(got, sent)
            for raw, (header, arrays) in zip(raws, received, strict=True):
                raw.send_result(header.message_id, arrays)
            outcomes = dict(future.result(20))
            assert sorted(outcomes) == node_ids
            assert all(isinstance(outcome, FitRes) for outcome in outcomes.values())
        finally:
            for raw in raws:
                raw.close()


class _TrackedFrame(bytes):
    """A received frame that counts its own release."""

    released = 0

    def __del__(self) -> None:
        type(self).released += 1


class _FakeContext:
    """Hands a stream's frames to the server's reader; then the client goes quiet."""

    def __init__(self, received: list[bytes], *, write_gate: asyncio.Event | None = None) -> None:
        self._received: asyncio.Queue[bytes] = asyncio.Queue()
        for frame in received:
            self._received.put_nowait(frame)
        self.quiet = asyncio.Event()
        self._write_gate = write_gate
        self.writing = 0
        self.most_writing = 0
        self.written: list[bytes] = []

    def peer(self) -> str:
        return "ipv4:127.0.0.1:1"

    def invocation_metadata(self) -> None:
        return None

    def auth_context(self) -> dict:
        return {}

    def feed(self, frame: bytes) -> None:
        """The client sends one more frame."""
        self.quiet.clear()
        self._received.put_nowait(frame)

    async def read(self) -> bytes:
        if self._received.empty():
            self.quiet.set()  # the reader waits for a frame the client has not sent
        return await self._received.get()

    async def write(self, frame: bytes) -> None:
        self.writing += 1
        self.most_writing = max(self.most_writing, self.writing)
        try:
            if self._write_gate is not None:
                await self._write_gate.wait()
            self.written.append(frame)
        finally:
            self.writing -= 1


def _hello(node_id: str) -> bytes:
    hello = pb.Greeting(protocol_version=wire.PROTOCOL_VERSION, node_id=node_id)
    return frames.frame_bytes(hello=hello)


def test_a_reader_waiting_for_the_next_frame_keeps_none_it_has_read():
    """A connection that sent a chunk and went quiet must not keep the chunk alive: between
    rounds, thousands of idle connections would each hold one (up to a model's size)."""

    async def scenario() -> int:
        registry = Registry(None)
        connection = registry.connect("ipv4:127.0.0.1:1", None)
        assert connection is not None
        session = Session(connection, registry, UploadSlots(1), SessionSettings(1 << 20, 10.0))
        context = _FakeContext([_hello("quiet")])
        reader = asyncio.create_task(session.read(context))
        await asyncio.wait_for(context.quiet.wait(), 10)
        model = [np.zeros(4096, np.uint8)]
        awaited = registry.expect("quiet", FitIns(model, {}), queue.Queue())
        assert awaited is not None
        result = pb.Header(message_id=awaited.message_id, kind=pb.FIT, num_examples=1)
        result.arrays.append(pb.ArraySpec(dtype="|u1", shape=[4096]))
        result.num_chunks = 1
        context.feed(frames.frame_bytes(result=result))
        for _ in range(500):  # the upload is granted at once: the slot is free
            if connection.upload is not None:
                break
            await asyncio.sleep(0.01)
        context.feed(_TrackedFrame(frames.chunk_frame(bytes(4096))))
        await asyncio.wait_for(context.quiet.wait(), 10)
        [(_, outcome, slot)] = [awaited.sink.get_nowait()]
        assert isinstance(outcome, FitRes) and slot is not None
        slot.release()
        gc.collect()
        released = _TrackedFrame.released
        reader.cancel()
        return released

    _TrackedFrame.released = 0
    assert asyncio.run(scenario()) == 1


def test_sends_in_flight_are_bounded_however_many_clients_wait():
    """Nineteen clients are each owed a model; only `concurrent_sends` are written at once. An
    upload grant to the twentieth does not wait behind them."""

    async def scenario() -> tuple[int, int, int]:
        registry = Registry(None)
        settings = SessionSettings(1 << 20, 10.0, concurrent_sends=4)
        handler = StreamHandler(registry, UploadSlots(1), settings)
        gate = asyncio.Event()
        gate.set()  # the welcomes go out
        contexts = [_FakeContext([_hello(f"n{i}")], write_gate=gate) for i in range(20)]
        streams = [asyncio.create_task(handler.serve(None, context)) for context in contexts]
        await asyncio.wait_for(asyncio.gather(*(c.quiet.wait() for c in contexts)), 10)
        gate.clear()  # clients that read nothing more for a while
        instruction = FitIns([np.zeros(10_000, np.uint8)], {})
        awaited = [registry.expect(f"n{i}", instruction, queue.Queue()) for i in range(20)]
        for owed in awaited[:19]:
            owed.connection.send(iter([frames.chunk_frame(bytes(10_000))]))
        await asyncio.sleep(0.05)
        writing_while_blocked = sum(context.writing for context in contexts)
        grant = frames.frame_bytes(grant=pb.UploadGrant(message_id=awaited[19].message_id))
        awaited[19].connection.send([grant])
        await asyncio.sleep(0.05)
        writing_with_the_grant = sum(context.writing for context in contexts)
        gate.set()
        for _ in range(100):
            if all(len(context.written) >= 2 for context in contexts):
                break
            await asyncio.sleep(0.01)
        served = sum(1 for context in contexts if len(context.written) >= 2)
        for stream in streams:
            stream.cancel()
        await asyncio.gather(*streams, return_exceptions=True)
        return writing_while_blocked, writing_with_the_grant, served

    writing_while_blocked, writing_with_the_grant, served = asyncio.run(scenario())
    assert writing_while_blocked == 4
    assert writing_with_the_grant == 5
    assert served == 20


def test_the_server_caps_what_each_connection_keeps_for_reading():
    options = dict(server_options(64 << 10, 30.0))
    assert (
        options["grpc.experimental.tcp_max_read_buffer_size"]
        <= options["grpc.http2.lookahead_bytes"]
    )
