"""Upload slots of the gRPC server: bounded, bound to live uploads, and always given back."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import grpc
import numpy as np
import pytest
from grpc_support import (
    NUM_FEATURES,
    LinearClient,
    RawClient,
    clients,
    declare,
    fit_ins,
    honest_update,
    serving,
    start_round,
    wait_for,
)

import roost
from roost.core.types import EvaluateIns, EvaluateRes, Failure, FitRes
from roost.errors import ConfigurationError
from roost.transport.grpc import client as client_module
from roost.transport.grpc import frames
from roost.transport.grpc import roost_pb2 as pb
from roost.transport.grpc.options import ClientOptions, ServerOptions
from roost.transport.grpc.server import GrpcServerTransport

SPEC = [pb.ArraySpec(dtype="<f8", shape=[NUM_FEATURES])]
HONEST = {str(p): (lambda p=p: LinearClient(p)) for p in (0, 1)}


@pytest.fixture
def pool():
    executor = ThreadPoolExecutor(4)
    yield executor
    executor.shutdown(wait=False, cancel_futures=True)


def assert_honest_rounds_complete(pool, transport, rounds=(2, 3, 4)) -> None:
    """Rounds of the two honest clients: each needs the (single) slot twice over."""
    for server_round in rounds:
        ins = fit_ins(float(server_round), server_round)
        cohort = [("0", ins), ("1", ins)]
        outcomes = dict(start_round(pool, transport, cohort, timeout=10).result(30))
        for partition in (0, 1):
            outcome = outcomes[str(partition)]
            assert isinstance(outcome, FitRes), outcomes
            np.testing.assert_array_equal(outcome.parameters[0], honest_update(partition, ins))


def test_a_client_stalling_mid_upload_cannot_block_other_uploads(pool):
    # One upload slot, taken by a client that declares a result and then sends nothing.
    with (
        serving(max_concurrent_uploads=1) as transport,
        clients(transport.address, {"0": lambda: LinearClient(0)}),
    ):
        raw = RawClient(transport.address)
        try:
            transport.wait_for_clients(2, timeout=10)
            future = start_round(pool, transport, [("raw", fit_ins())], timeout=0.5)
            header, _ = raw.instruction()
            declare(raw, header.message_id, SPEC, 1, granted=True)
            [(_, outcome)] = future.result(10)
            assert isinstance(outcome, Failure) and outcome.kind == "timeout"
            assert raw.wait_closed().code() == grpc.StatusCode.DEADLINE_EXCEEDED
            ins = fit_ins(1.0, 2)
            [(_, outcome)] = start_round(pool, transport, [("0", ins)], timeout=10).result(20)
            np.testing.assert_array_equal(outcome.parameters[0], honest_update(0, ins))
        finally:
            raw.close()


def test_slots_come_back_from_clients_that_leave_while_waiting_or_uploading(pool):
    """One slot; one client leaves mid-upload, two leave while waiting for the slot. Every later
    round still gets the results of all remaining clients (a leaked slot would block them)."""
    with serving(max_concurrent_uploads=1) as transport, clients(transport.address, HONEST):
        leaving = [RawClient(transport.address, node_id=f"leaving{i}") for i in range(3)]
        try:
            transport.wait_for_clients(5, timeout=10)
            cohort = [(f"leaving{i}", fit_ins()) for i in range(3)]
            future = start_round(pool, transport, cohort, timeout=30)
            headers = [raw.instruction()[0] for raw in leaving]
            # The first one takes the slot and sends half of its result ...
            declare(leaving[0], headers[0].message_id, SPEC, 2, granted=True)
            leaving[0].send(frames.chunk_frame(b"\0" * 16))
            wait_for(lambda: transport.free_upload_slots == 0, 10, what="the slot to be taken")
            # ... the others declare theirs and wait for the slot.
            for raw, header in zip(leaving[1:], headers[1:], strict=True):
                declare(raw, header.message_id, SPEC, 1)
            time.sleep(0.3)
            for raw in [*leaving[1:], leaving[0]]:  # the waiting ones leave first
                raw.close()
                wait_for(raw.ended.is_set, 10, what="the stream to end")
            outcomes = dict(future.result(20))
            assert {outcome.kind for outcome in outcomes.values()} == {"disconnected"}
        finally:
            for raw in leaving:
                raw.close()
        assert_honest_rounds_complete(pool, transport)
        assert transport.free_upload_slots == 1


def test_an_upload_without_data_for_the_idle_timeout_is_that_clients_failure(pool):
    """The round's own timeout is long; the stalled upload fails after the idle timeout, its
    slot goes to the honest client of the same round, and the next rounds are served."""
    with (
        serving(max_concurrent_uploads=1, upload_idle_timeout=0.5) as transport,
        clients(transport.address, HONEST),
    ):
        stalled = RawClient(transport.address, node_id="stalled")
        try:
            transport.wait_for_clients(3, timeout=10)
            ins = fit_ins(1.0)
            started = time.monotonic()
            future = start_round(pool, transport, [("0", ins), ("stalled", ins)], timeout=60)
            header, _ = stalled.instruction()
            declare(stalled, header.message_id, SPEC, 2, granted=True)
            stalled.send(frames.chunk_frame(b"\0" * 8))
            outcomes = dict(future.result(30))
            assert time.monotonic() - started < 20
            failure = outcomes["stalled"]
            assert isinstance(failure, Failure) and failure.kind == "timeout", failure
            assert "no chunk of its result for 0.5 s" in failure.reason
            np.testing.assert_array_equal(outcomes["0"].parameters[0], honest_update(0, ins))
            assert stalled.wait_closed().code() == grpc.StatusCode.DEADLINE_EXCEEDED
        finally:
            stalled.close()
        assert_honest_rounds_complete(pool, transport)
        assert transport.free_upload_slots == 1


def test_a_client_waiting_for_a_slot_stops_waiting_when_its_round_times_out(pool):
    """The waiting client is told at once that its result is no longer awaited; it stays
    connected, and its next result is received as usual."""
    with serving(max_concurrent_uploads=1, upload_idle_timeout=None) as transport:
        holder = RawClient(transport.address, node_id="holder")
        waiter = RawClient(transport.address, node_id="waiter")
        try:
            cohort = [("holder", fit_ins()), ("waiter", fit_ins())]
            future = start_round(pool, transport, cohort, timeout=1.0)
            holder_header, _ = holder.instruction()
            waiter_header, arrays = waiter.instruction()
            declare(holder, holder_header.message_id, SPEC, 1, granted=True)
            declare(waiter, waiter_header.message_id, SPEC, 1)
            outcomes = dict(future.result(10))
            assert {outcome.kind for outcome in outcomes.values()} == {"timeout"}
            # Told instead of a grant: its result ends with its header, no chunk is sent.
            rejection = waiter.next("rejection").rejection
            assert rejection.message_id == waiter_header.message_id
            assert "waited to upload" in rejection.reason
            assert holder.wait_closed().code() == grpc.StatusCode.DEADLINE_EXCEEDED

            future = start_round(pool, transport, [("waiter", fit_ins(7.0, 2))])
            header, arrays = waiter.instruction()
            waiter.send_result(header.message_id, arrays)
            [(_, outcome)] = future.result(10)
            np.testing.assert_array_equal(outcome.parameters[0], np.full(NUM_FEATURES, 7.0))
            assert transport.free_upload_slots == 1
        finally:
            holder.close()
            waiter.close()


class _CountedRequests:
    """Wraps the clients' stream of outgoing frames, counting result headers and chunk frames."""

    def __init__(self, requests) -> None:
        self._requests = requests
        self.headers = 0
        self.chunks = 0
        self._lock = threading.Lock()

    def __call__(self, outbox, grants):
        for frame in self._requests(outbox, grants):
            is_chunk = frames.chunk_data(frame) is not None
            with self._lock:
                if is_chunk:
                    self.chunks += 1
                elif frames.parse_frame(frame).WhichOneof("body") == "result":
                    self.headers += 1
            yield frame


@contextmanager
def _raw_clients(address: str, *node_ids: str):
    """Raw clients under `node_ids`, closed on the way out."""
    raws = [RawClient(address, node_id=node_id) for node_id in node_ids]
    try:
        yield raws
    finally:
        for raw in raws:
            raw.close()


def _hold_the_slot(pool, transport, holder, cohort):
    """Start a round of `cohort` (the holder first); the holder takes the only slot and sends
    nothing yet. Returns the round's future."""
    future = start_round(pool, transport, [("holder", fit_ins(1.0)), *cohort], timeout=30)
    header, _ = holder.instruction()
    declare(holder, header.message_id, SPEC, 1, granted=True)
    assert transport.free_upload_slots == 0
    return future


def _let_go(holder, future) -> dict:
    """The holder sends its result's one chunk, which frees the slot; the round's outcomes."""
    holder.send(frames.chunk_frame(np.zeros(NUM_FEATURES).tobytes()))
    return dict(future.result(20))


def test_clients_waiting_for_a_slot_send_no_chunk_until_granted(pool, monkeypatch):
    """One slot, held; three clients finish their fit meanwhile. Each sends its result's header
    and no chunk until the slot comes back; then every result arrives."""
    counted = _CountedRequests(client_module._requests)
    monkeypatch.setattr(client_module, "_requests", counted)
    # The clients train a little, so that the holder surely takes the slot first.
    monkeypatch.setenv("ROOST_TEST_FIT_SLEEP", "0.3")
    honest = {str(p): (lambda p=p: LinearClient(p)) for p in range(3)}
    with (
        serving(max_concurrent_uploads=1, upload_idle_timeout=None) as transport,
        clients(transport.address, honest),
    ):
        with _raw_clients(transport.address, "holder") as (holder,):
            transport.wait_for_clients(4, timeout=10)
            ins = fit_ins(1.0)
            future = _hold_the_slot(pool, transport, holder, [(c, ins) for c in honest])
            wait_for(lambda: counted.headers == 3, 10, what="the three result headers")
            time.sleep(0.5)  # time in which an eager client would have sent its chunks
            assert counted.chunks == 0
            assert transport.free_upload_slots == 0 and not future.done()
            outcomes = _let_go(holder, future)
        np.testing.assert_array_equal(outcomes["holder"].parameters[0], np.zeros(NUM_FEATURES))
        for node_id in honest:
            expected = honest_update(int(node_id), ins)
            np.testing.assert_array_equal(outcomes[node_id].parameters[0], expected)
        assert counted.chunks == 3  # one chunk of 40 bytes each, sent once granted
        assert transport.free_upload_slots == 1


def test_a_client_leaving_while_waiting_for_a_grant_frees_nothing_and_the_round_goes_on(pool):
    with (
        serving(max_concurrent_uploads=1, upload_idle_timeout=None) as transport,
        clients(transport.address, HONEST),
    ):
        with _raw_clients(transport.address, "holder", "waiter") as (holder, waiter):
            transport.wait_for_clients(4, timeout=10)
            ins = fit_ins(1.0)
            cohort = [("waiter", ins), ("0", ins), ("1", ins)]
            future = _hold_the_slot(pool, transport, holder, cohort)
            header, _ = waiter.instruction()
            declare(waiter, header.message_id, SPEC, 1)
            time.sleep(0.3)
            waiter.close()
            wait_for(lambda: "waiter" not in transport.connected(), 10, what="the waiter to go")
            # The slot is still the holder's: the waiter gave back nothing it did not hold.
            time.sleep(0.2)
            assert transport.free_upload_slots == 0 and not future.done()
            outcomes = _let_go(holder, future)
        assert outcomes["waiter"].kind == "disconnected"
        assert isinstance(outcomes["holder"], FitRes)
        for partition in (0, 1):
            expected = honest_update(partition, ins)
            np.testing.assert_array_equal(outcomes[str(partition)].parameters[0], expected)
        assert transport.free_upload_slots == 1
        assert_honest_rounds_complete(pool, transport, rounds=(2,))


def test_chunks_sent_before_the_grant_are_a_protocol_error(pool):
    """A client that does not wait for its grant is cut off; the slot's holder is not."""
    with serving(max_concurrent_uploads=1, upload_idle_timeout=None) as transport:
        with _raw_clients(transport.address, "holder", "eager") as (holder, eager):
            future = _hold_the_slot(pool, transport, holder, [("eager", fit_ins(1.0))])
            header, _ = eager.instruction()
            declare(eager, header.message_id, SPEC, 1)
            eager.send(frames.chunk_frame(np.zeros(NUM_FEATURES).tobytes()))
            error = eager.wait_closed()
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "before the server granted" in error.details()
            assert transport.free_upload_slots == 0
            outcomes = _let_go(holder, future)
        assert outcomes["eager"].kind == "invalid"
        assert isinstance(outcomes["holder"], FitRes)
        assert transport.free_upload_slots == 1


def test_a_result_without_chunks_needs_no_grant(pool):
    """An evaluate result is complete with its header, even while every slot is taken."""
    with (
        serving(max_concurrent_uploads=1, upload_idle_timeout=None) as transport,
        clients(transport.address, {"0": lambda: LinearClient(0)}),
        _raw_clients(transport.address, "holder") as (holder,),
    ):
        transport.wait_for_clients(2, timeout=10)
        future = _hold_the_slot(pool, transport, holder, [])
        ins = EvaluateIns([np.ones(NUM_FEATURES)], {})
        [(_, outcome)] = start_round(pool, transport, [("0", ins)]).result(10)
        assert isinstance(outcome, EvaluateRes)
        assert transport.free_upload_slots == 0
        assert isinstance(_let_go(holder, future)["holder"], FitRes)


@pytest.mark.parametrize(
    "options, fragment",
    [
        ({"max_concurrent_uploads": 0}, "max_concurrent_uploads must be an int >= 1"),
        ({"max_concurrent_uploads": 2.5}, "max_concurrent_uploads must be an int >= 1"),
        ({"upload_idle_timeout": 0}, "upload_idle_timeout must be a finite number of seconds"),
        ({"upload_idle_timeout": "1"}, "upload_idle_timeout must be a finite number of seconds"),
        ({"client_wait_timeout": -5}, "client_wait_timeout must be a finite number of seconds"),
        ({"client_wait_timeout": float("nan")}, "client_wait_timeout must be a finite number"),
    ],
)
def test_upload_settings_are_checked(options, fragment):
    with pytest.raises(ConfigurationError, match=fragment):
        GrpcServerTransport("127.0.0.1:0", ServerOptions(**options))
    # start_server passes them to its transport, so they are refused there too.
    with pytest.raises(ConfigurationError, match=fragment):
        roost.start_server(server_address="127.0.0.1:0", **options)


@pytest.mark.parametrize(
    "options, fragment",
    [
        ({"keepalive_s": 0}, "keepalive_s must be a finite number of seconds > 0, got 0"),
        ({"hello_timeout": -1}, "hello_timeout must be a finite number of seconds > 0"),
        ({"upload_idle_timeout": None}, None),  # never gives up: allowed
    ],
)
def test_server_durations_are_checked(options, fragment):
    if fragment is None:
        assert ServerOptions(**options).upload_idle_timeout is None
        return
    with pytest.raises(ConfigurationError, match=fragment):
        ServerOptions(**options)


@pytest.mark.parametrize(
    "options, fragment",
    [
        ({"reconnect_timeout": -1}, "reconnect_timeout must be a finite number of seconds > 0"),
        ({"reconnect_timeout": float("inf")}, "reconnect_timeout must be a finite number"),
        ({"initial_backoff": 0}, "initial_backoff must be a finite number of seconds > 0"),
        ({"initial_backoff": 20.0}, r"initial_backoff \(20 s\) must not exceed max_backoff"),
        ({"token": 5}, "token must be a str, got int"),
    ],
)
def test_client_options_are_checked(options, fragment):
    with pytest.raises(ConfigurationError, match=fragment):
        ClientOptions(**options)
    if "initial_backoff" not in options:  # start_client takes the others as keywords
        with pytest.raises(ConfigurationError, match=fragment):
            roost.start_client(server_address="127.0.0.1:1", client=object(), **options)
