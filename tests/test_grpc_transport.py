"""The gRPC transport in one process: server and clients on 127.0.0.1, hostile clients included."""

from __future__ import annotations

import logging
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

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
    free_port,
    honest_update,
    make_certificates,
    make_strategy,
    serving,
    simulate,
    start_round,
)

import roost
from roost.core.types import (
    EvaluateIns,
    EvaluateRes,
    Failure,
    FitIns,
    FitRes,
    GetParametersIns,
    GetParametersRes,
)
from roost.errors import ClientRefusedError, NotEnoughClientsError, ServerUnreachableError
from roost.server.loop import ServerConfig, run_rounds
from roost.transport.grpc import frames, wire
from roost.transport.grpc import roost_pb2 as pb
from roost.transport.grpc.client import GrpcClient
from roost.transport.grpc.options import ClientOptions

MAX_MESSAGE = 1 << 20


@pytest.fixture
def pool():
    executor = ThreadPoolExecutor(4)
    try:
        yield executor
    finally:
        executor.shutdown(wait=False, cancel_futures=True)


# -- the round loop over gRPC -------------------------------------------------------------------


def test_three_rounds_over_grpc_give_the_simulation_model():
    # One upload slot: results queue at the server one at a time, and the run still completes.
    with (
        serving(max_concurrent_uploads=1) as transport,
        clients(
            transport.address, {str(p): (lambda p=p: LinearClient(p)) for p in range(3)}
        ) as errors,
    ):
        history = run_rounds(make_strategy(3), transport, ServerConfig(num_rounds=3), seed=0)
    assert not errors
    reference = simulate(3, num_clients=3)
    np.testing.assert_allclose(history.parameters[0], reference.parameters[0], rtol=0, atol=1e-12)
    assert [(r.fit_results, r.fit_failures, r.evaluate_results) for r in history.rounds] == [
        (3, 0, 3)
    ] * 3
    np.testing.assert_allclose(
        [loss for _, loss in history.losses_distributed],
        [loss for _, loss in reference.losses_distributed],
        rtol=1e-12,
    )


def test_wait_for_clients_lists_connected_ids_and_times_out(caplog):
    with serving() as transport:
        with pytest.raises(NotEnoughClientsError, match="only 0 of the 1 clients"):
            transport.wait_for_clients(1, timeout=0.2)
        with (
            caplog.at_level(logging.INFO, logger="roost"),
            clients(
                transport.address, {"b": lambda: LinearClient(0), "a": lambda: LinearClient(1)}
            ),
        ):
            assert transport.wait_for_clients(2, timeout=10) == ["a", "b"]
        assert "2 connected: a, b" in caplog.text


def test_client_exception_is_a_failure_with_its_reason(pool):
    class Broken(LinearClient):
        def fit(self, parameters, config):
            raise ValueError("no data on this device")

    with serving() as transport, clients(transport.address, {"0": lambda: Broken(0)}):
        transport.wait_for_clients(1, timeout=10)
        [(client_id, outcome)] = start_round(pool, transport, [("0", fit_ins())]).result(20)
    assert client_id == "0" and isinstance(outcome, Failure)
    assert outcome.kind == "error" and "ValueError: no data on this device" in outcome.reason


def test_a_long_fit_outlives_many_keepalive_pings(pool):
    class Slow(LinearClient):
        def fit(self, parameters, config):
            time.sleep(2.5)
            return super().fit(parameters, config)

    # Pings every 0.2 s from both sides during a 2.5 s fit: neither side may take that for abuse
    # (too many pings) or for a dead peer.
    with (
        serving(keepalive_s=0.2) as transport,
        clients(transport.address, {"0": lambda: Slow(0)}, keepalive_s=0.2),
    ):
        transport.wait_for_clients(1, timeout=10)
        ins = fit_ins()
        [(_, outcome)] = start_round(pool, transport, [("0", ins)]).result(30)
    assert isinstance(outcome, FitRes), outcome
    np.testing.assert_array_equal(outcome.parameters[0], honest_update(0, ins))


def test_any_number_of_phases_per_round_on_the_same_clients(pool):
    """The loop may run one exchange after another with the same clients (a round's phases):
    get_parameters, fit, evaluate, evaluate, fit, each answered by every client."""
    partitions = (0, 1)
    with (
        serving() as transport,
        clients(transport.address, {str(p): (lambda p=p: LinearClient(p)) for p in partitions}),
    ):
        transport.wait_for_clients(2, timeout=10)

        def phase(instruction):
            cohort = [(str(p), instruction) for p in partitions]
            outcomes = dict(start_round(pool, transport, cohort).result(20))
            assert sorted(outcomes) == ["0", "1"]
            return outcomes

        for outcome in phase(GetParametersIns()).values():
            assert isinstance(outcome, GetParametersRes), outcome
            np.testing.assert_array_equal(outcome.parameters[0], np.zeros(NUM_FEATURES))
        for instruction in (
            fit_ins(1.0),
            EvaluateIns([np.full(NUM_FEATURES, 2.0)], {}),
            EvaluateIns([np.full(NUM_FEATURES, 3.0)], {}),
            fit_ins(4.0, server_round=2),
        ):
            for partition, outcome in phase(instruction).items():
                client = LinearClient(int(partition))
                if isinstance(instruction, FitIns):
                    assert isinstance(outcome, FitRes), outcome
                    expected = honest_update(int(partition), instruction)
                    np.testing.assert_array_equal(outcome.parameters[0], expected)
                else:
                    assert isinstance(outcome, EvaluateRes), outcome
                    w = instruction.parameters[0]
                    mse = np.mean((client.x @ w - client.y) ** 2)
                    assert outcome.loss == pytest.approx(mse)
                    assert outcome.num_examples == len(client.y)


def test_disconnect_mid_instruction_is_a_failure_at_once(pool):
    with serving() as transport:
        raw = RawClient(transport.address)
        try:
            started = time.monotonic()
            future = start_round(pool, transport, [("raw", fit_ins())], timeout=30)
            raw.instruction()
            raw.close()
            [(_, outcome)] = future.result(10)
        finally:
            raw.close()
    assert isinstance(outcome, Failure) and outcome.kind == "disconnected"
    assert time.monotonic() - started < 10


# -- hostile or broken clients --------------------------------------------------------------------


def _malformed(raw, message_id, arrays):
    raw.send(b"\x0a\xff\xff\xff\xff\x0f")


def _oversized_declaration(raw, message_id, arrays):
    declare(raw, message_id, [pb.ArraySpec(dtype="<f8", shape=[10**9])], 10**6)


def _oversized_frame(raw, message_id, arrays):
    raw.send(frames.chunk_frame(b"\0" * (wire.FRAME_LIMIT_BYTES + 1)))


def _chunks_overflow(raw, message_id, arrays):
    declare(raw, message_id, [pb.ArraySpec(dtype="<f8", shape=[NUM_FEATURES])], 1, granted=True)
    raw.send(frames.chunk_frame(b"\0" * (8 * NUM_FEATURES + 8)))


def _chunk_outside_message(raw, message_id, arrays):
    raw.send(frames.chunk_frame(b"\0" * 8))


def _object_dtype(raw, message_id, arrays):
    declare(raw, message_id, [pb.ArraySpec(dtype="|O", shape=[NUM_FEATURES])], 1)


def _result(parameters, **options):
    def send(raw, message_id, arrays):
        raw.send_result(message_id, parameters(arrays), **options)

    return send


NAN = np.array([np.nan] + [0.0] * (NUM_FEATURES - 1))
INF = np.array([np.inf] + [0.0] * (NUM_FEATURES - 1))

# (behaviour, failure kind, reason fragment, whether the client stays connected)
HOSTILE = {
    "malformed protobuf": (_malformed, "invalid", "malformed frame", False),
    "oversized declaration": (_oversized_declaration, "invalid", "more than 1048576 bytes", False),
    "oversized frame": (_oversized_frame, "disconnected", "", False),
    "chunks overflow": (_chunks_overflow, "invalid", "more than the 40 bytes declared", False),
    "chunk outside a message": (_chunk_outside_message, "invalid", "outside of any result", False),
    "object dtype": (_object_dtype, "invalid", "dtype '|O'", False),
    "wrong shape": (_result(lambda a: [np.zeros(NUM_FEATURES + 1)]), "invalid", "shape", True),
    "wrong dtype": (
        _result(lambda a: [np.zeros(NUM_FEATURES, np.int64)]),
        "invalid",
        "dtype",
        True,
    ),
    "extra array": (_result(lambda a: [a[0], np.zeros(1)]), "invalid", "expected 1 arrays", True),
    "NaN": (_result(lambda a: [NAN]), "invalid", "NaN or Inf", True),
    "Inf": (_result(lambda a: [INF]), "invalid", "NaN or Inf", True),
    "absurd num_examples": (
        _result(lambda a: a, num_examples=10**13),
        "invalid",
        "num_examples",
        True,
    ),
    "wrong kind": (_result(lambda a: a, kind=pb.EVALUATE), "invalid", "answers a FIT", True),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_result_is_rejected_and_the_next_round_succeeds(case, pool):
    behaviour, kind, fragment, stays = HOSTILE[case]
    with (
        serving(max_message_bytes=MAX_MESSAGE) as transport,
        clients(transport.address, {"0": lambda: LinearClient(0)}),
    ):
        raw = RawClient(transport.address)
        try:
            transport.wait_for_clients(2, timeout=10)
            ins = fit_ins(1.0)
            future = start_round(pool, transport, [("0", ins), ("raw", ins)])
            header, arrays = raw.instruction()
            behaviour(raw, header.message_id, arrays)
            outcomes = dict(future.result(20))
            assert isinstance(outcomes["0"], FitRes)
            failure = outcomes["raw"]
            assert isinstance(failure, Failure) and failure.kind == kind, failure
            assert fragment in failure.reason
            if stays:
                rejection = raw.next("rejection").rejection
                assert rejection.message_id == header.message_id and fragment in rejection.reason
            else:
                raw.wait_closed()
            # The instruction the server sent was not touched by whatever came back.
            np.testing.assert_array_equal(ins.parameters[0], np.ones(NUM_FEATURES))

            # The next round: the honest client (and the hostile one, if still connected and now
            # honest) are served as usual.
            ins2 = fit_ins(2.0, server_round=2)
            cohort = [("0", ins2)] + ([("raw", ins2)] if stays else [])
            future = start_round(pool, transport, cohort)
            if stays:
                header, arrays = raw.instruction()
                raw.send_result(header.message_id, [arrays[0] + 1])
            outcomes = dict(future.result(20))
            np.testing.assert_array_equal(outcomes["0"].parameters[0], honest_update(0, ins2))
            if stays:
                np.testing.assert_array_equal(outcomes["raw"].parameters[0], np.full(5, 3.0))
        finally:
            raw.close()


def test_replayed_old_and_foreign_results_are_dropped(pool):
    with serving() as transport, clients(transport.address, {"0": lambda: LinearClient(0)}):
        raw = RawClient(transport.address)
        try:
            transport.wait_for_clients(2, timeout=10)
            ins = fit_ins(1.0)
            future = start_round(pool, transport, [("0", ins), ("raw", ins)])
            header1, arrays = raw.instruction()
            raw.send_result(header1.message_id, [arrays[0] + 1])
            outcomes = dict(future.result(20))
            np.testing.assert_array_equal(outcomes["raw"].parameters[0], np.full(5, 2.0))

            # Replay after the round: dropped, and the client is told.
            raw.send_result(header1.message_id, [arrays[0] + 1])
            assert "not awaited" in raw.next("rejection").rejection.reason

            # Next round: an old-round result, then one claiming the honest client's
            # instruction, then the real answer. Only the real answer counts, once.
            ins2 = fit_ins(5.0, server_round=2)
            future = start_round(pool, transport, [("0", ins2), ("raw", ins2)])
            header2, arrays2 = raw.instruction()
            raw.send_result(header1.message_id, [np.full(5, 100.0)])
            honest_id = header2.message_id - 1  # ids are given out in cohort order
            raw.send_result(honest_id, [np.full(5, 200.0)])
            raw.send_result(header2.message_id, [arrays2[0] + 1])
            outcomes = future.result(20)
            assert sorted(client for client, _ in outcomes) == ["0", "raw"]
            outcomes = dict(outcomes)
            np.testing.assert_array_equal(outcomes["raw"].parameters[0], np.full(5, 6.0))
            np.testing.assert_array_equal(outcomes["0"].parameters[0], honest_update(0, ins2))
            for message_id in (header1.message_id, honest_id):
                assert raw.next("rejection").rejection.message_id == message_id
        finally:
            raw.close()


def test_a_result_after_the_timeout_is_dropped(pool):
    with serving() as transport:
        raw = RawClient(transport.address)
        try:
            future = start_round(pool, transport, [("raw", fit_ins())], timeout=0.5)
            header, arrays = raw.instruction()
            [(_, outcome)] = future.result(10)
            assert isinstance(outcome, Failure) and outcome.kind == "timeout"
            raw.send_result(header.message_id, arrays)
            assert "not awaited" in raw.next("rejection").rejection.reason
            # Still connected, and served in the next round.
            future = start_round(pool, transport, [("raw", fit_ins(3.0, 2))])
            header, arrays = raw.instruction()
            raw.send_result(header.message_id, arrays)
            [(_, outcome)] = future.result(10)
            np.testing.assert_array_equal(outcome.parameters[0], np.full(5, 3.0))
        finally:
            raw.close()


def test_hostile_client_never_reaches_the_global_model():
    """A full run where one client always answers with NaN: the model is the honest clients'."""
    with serving() as transport:
        raw = RawClient(transport.address, node_id="z-hostile")
        stop = threading.Event()

        def answer_with_nan():
            while not stop.is_set():
                try:
                    header, _ = raw.instruction(timeout=0.2)
                except Exception:
                    continue
                if header.kind == pb.FIT:
                    raw.send_result(header.message_id, [NAN])
                else:
                    raw.send(
                        frames.frame_bytes(
                            client_error=pb.MessageFailure(
                                message_id=header.message_id, reason="will not evaluate"
                            )
                        )
                    )

        hostile = threading.Thread(target=answer_with_nan, daemon=True)
        hostile.start()
        try:
            with clients(
                transport.address, {str(p): (lambda p=p: LinearClient(p)) for p in (0, 1)}
            ):
                history = run_rounds(
                    make_strategy(3), transport, ServerConfig(num_rounds=2), seed=0
                )
        finally:
            stop.set()
            hostile.join(5)
            raw.close()
    reference = simulate(2, num_clients=2)
    np.testing.assert_allclose(history.parameters[0], reference.parameters[0], atol=1e-12)
    assert [(r.fit_results, r.fit_failures, r.failed_clients[:1]) for r in history.rounds] == [
        (2, 1, ["z-hostile"])
    ] * 2


# -- authentication and TLS -----------------------------------------------------------------------

TOKENS = {"0": "token-of-node-zero-0123456789", "1": "token-of-node-one-0123456789"}


def test_tokens_admit_their_node_and_refuse_everything_else(pool):
    with serving(auth_tokens=TOKENS) as transport:
        # No token: refused before anything sent is parsed (garbage is not even a protocol error).
        raw = RawClient(transport.address, hello=False)
        raw.send(b"\xff\xfe garbage")
        error = raw.wait_closed()
        raw.close()
        assert error is not None and error.code() == grpc.StatusCode.UNAUTHENTICATED

        def refused(node_id, token):
            grpc_client = GrpcClient(
                transport.address,
                lambda: LinearClient(0),
                node_id,
                ClientOptions(token=token, reconnect_timeout=5),
            )
            with pytest.raises(ClientRefusedError) as info:
                grpc_client.run()
            return str(info.value)

        assert "credentials" in refused("0", "a-wrong-token-0123456789")
        assert "issued for node '0', not '1'" in refused("1", TOKENS["0"])
        assert transport.connected() == []

        with clients(transport.address, {"0": lambda: LinearClient(0)}, token=TOKENS["0"]):
            transport.wait_for_clients(1, timeout=10)
            ins = fit_ins()
            [(_, outcome)] = start_round(pool, transport, [("0", ins)]).result(20)
        np.testing.assert_array_equal(outcome.parameters[0], honest_update(0, ins))


def test_tls_serves_clients_that_trust_its_certificate(tmp_path, pool):
    certificates = make_certificates(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    untrusted_ca = make_certificates(other, "some other CA")["ca"]
    with serving(certificates=(certificates["server"], certificates["server-key"])) as transport:
        address = f"localhost:{transport.port}"
        for root in (None, untrusted_ca):  # no TLS at all, or a CA that did not sign the server
            grpc_client = GrpcClient(
                address,
                lambda: LinearClient(0),
                "0",
                ClientOptions(root_certificates=root, reconnect_timeout=1.0),
            )
            with pytest.raises(ServerUnreachableError):
                grpc_client.run()
        assert transport.connected() == []
        with clients(
            address,
            {"0": lambda: LinearClient(0)},
            root_certificates=certificates["ca"].read_bytes(),
        ):
            transport.wait_for_clients(1, timeout=10)
            ins = EvaluateIns([np.ones(NUM_FEATURES)], {})
            [(_, outcome)] = start_round(pool, transport, [("0", ins)]).result(20)
    assert isinstance(outcome, EvaluateRes)
    x, y = LinearClient(0).x, LinearClient(0).y
    assert outcome.loss == pytest.approx(np.mean((x @ np.ones(NUM_FEATURES) - y) ** 2))


# -- large models ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_100_mb_model_completes_a_round(pool):
    class AddOne(roost.Client):
        def fit(self, parameters, config):
            parameters[0] += 1  # the received array is the client's own: in place is fine
            return parameters, 1, {}

    model = [np.arange(25_000_000, dtype=np.float32), np.ones((3, 3), np.float32)]
    assert sum(a.nbytes for a in model) >= 100_000_000
    with serving() as transport, clients(transport.address, {"0": AddOne}):
        transport.wait_for_clients(1, timeout=10)
        started = time.monotonic()
        [(_, outcome)] = start_round(pool, transport, [("0", FitIns(model, {}))]).result(120)
        elapsed = time.monotonic() - started
    assert isinstance(outcome, FitRes), outcome
    assert outcome.parameters[0].dtype == np.float32
    np.testing.assert_array_equal(outcome.parameters[0], model[0] + 1)
    np.testing.assert_array_equal(outcome.parameters[1], model[1])
    print(f"100 MB model round trip: {elapsed:.2f} s")


def test_hello_is_required_promptly_and_must_speak_our_protocol():
    with serving(hello_timeout=0.3) as transport:
        silent = RawClient(transport.address, hello=False)
        try:
            assert "no hello within 0.3 s" in silent.next("refusal").refusal.reason
            assert silent.wait_closed().code() == grpc.StatusCode.DEADLINE_EXCEEDED
        finally:
            silent.close()
        future = RawClient(transport.address, hello=False)
        try:
            future.send(frames.frame_bytes(hello=pb.Greeting(protocol_version=99, node_id="x")))
            assert "protocol version 99" in future.next("refusal").refusal.reason
            assert future.wait_closed().code() == grpc.StatusCode.PERMISSION_DENIED
        finally:
            future.close()
        assert transport.connected() == []


def test_a_node_connecting_again_replaces_its_old_connection(pool):
    with serving() as transport:
        old = RawClient(transport.address, node_id="n1")
        new = RawClient(transport.address, node_id="n1")
        try:
            old.wait_closed()
            assert transport.connected() == ["n1"]
            future = start_round(pool, transport, [("n1", fit_ins(4.0))])
            header, arrays = new.instruction()
            new.send_result(header.message_id, arrays)
            [(_, outcome)] = future.result(10)
            np.testing.assert_array_equal(outcome.parameters[0], np.full(NUM_FEATURES, 4.0))
        finally:
            old.close()
            new.close()


def test_reconnecting_leaves_the_random_module_as_the_app_seeded_it():
    # Apps seed Python's `random` (keras.utils.set_random_seed does) and then draw their initial
    # weights from it; a client waiting for its server in the same process must not move it.
    random.seed(0)
    expected = random.getstate()
    grpc_client = GrpcClient(
        f"127.0.0.1:{free_port()}",
        lambda: LinearClient(0),
        "0",
        ClientOptions(reconnect_timeout=0.5, initial_backoff=0.05),
    )
    with pytest.raises(ServerUnreachableError):
        grpc_client.run()
    assert random.getstate() == expected
