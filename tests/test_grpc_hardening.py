"""A server no client can stall or flood, that tells clients the truth when it fails, and that
can require client certificates."""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
from grpc_support import (
    LinearClient,
    RawClient,
    clients,
    fit_ins,
    free_port,
    honest_update,
    make_certificates,
    make_client_certificate,
    make_strategy,
    serving,
    simulate,
    start_round,
)

import roost
from roost.core.types import Failure, FitRes
from roost.errors import ClientRefusedError, ConfigurationError, ServerUnreachableError
from roost.transport.grpc import frames, wire
from roost.transport.grpc import roost_pb2 as pb
from roost.transport.grpc.client import GrpcClient
from roost.transport.grpc.options import ClientOptions, ServerOptions
from roost.transport.grpc.server import GrpcServerTransport


@pytest.fixture
def pool():
    executor = ThreadPoolExecutor(4)
    yield executor
    executor.shutdown(wait=False, cancel_futures=True)


# -- a failed server does not send its clients home -----------------------------------------------


class FailingOnce:
    """`on_fit_config_fn` that raises in round `round_` of the first server only."""

    def __init__(self, round_: int) -> None:
        self.round = round_
        self.armed = True

    def __call__(self, server_round: int) -> dict:
        if self.armed and server_round == self.round:
            self.armed = False
            raise RuntimeError("the server broke")
        return {"server_round": server_round}


def test_clients_of_a_failed_server_keep_reconnecting_and_finish_the_resumed_run(tmp_path):
    address = f"127.0.0.1:{free_port()}"
    strategy = make_strategy(2)
    strategy.on_fit_config_fn = FailingOnce(2)
    options = {"server_address": address, "state_dir": tmp_path / "state", "seed": 0}
    config = roost.ServerConfig(num_rounds=3)
    honest = {str(p): (lambda p=p: LinearClient(p)) for p in (0, 1)}
    with clients(address, honest, initial_backoff=0.05, max_backoff=0.2) as errors:
        with pytest.raises(RuntimeError, match="the server broke"):
            roost.start_server(config=config, strategy=strategy, **options)
        time.sleep(1.0)
        assert errors == []
        history = roost.start_server(config=config, strategy=strategy, resume=True, **options)
    assert errors == []
    np.testing.assert_allclose(history.parameters[0], simulate(3).parameters[0])


def test_close_without_run_over_leaves_clients_reconnecting():
    port = free_port()
    with clients(f"127.0.0.1:{port}", {"0": lambda: LinearClient(0)}, initial_backoff=0.05):
        first = GrpcServerTransport(f"127.0.0.1:{port}")
        first.wait_for_clients(1, timeout=10)
        first.close(grace=1.0, run_over=False)
        second = GrpcServerTransport(f"127.0.0.1:{port}")
        try:
            assert second.wait_for_clients(1, timeout=20) == ["0"]
        finally:
            second.close(grace=1.0)


# -- stale floods are counted, summarised and bounded ---------------------------------------------


def test_a_flood_of_stale_results_is_summarised_and_disconnected(pool, caplog):
    with serving(violation_allowance=8) as transport:
        raw = RawClient(transport.address)
        try:
            future = start_round(pool, transport, [("raw", fit_ins())], timeout=0.3)
            header, arrays = raw.instruction()
            future.result(10)
            # Headers of results, sent without waiting for the server's answers: each is stale.
            result = wire.encode_result(FitRes(arrays, 10, {}), 1 << 16).header
            stale = wire.header_frame(result, "result", header.message_id)
            with caplog.at_level(logging.INFO, logger="roost"):
                raw.send(*[stale] * 200)
                error = raw.wait_closed()
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "not awaited from it" in error.details()
            stale_lines = [r for r in caplog.records if "stale" in r.getMessage()]
            assert 1 <= len(stale_lines) <= 3, [r.getMessage() for r in stale_lines]
            # 1 instruction + the allowance of 8: the 10th stale result ends the connection.
            assert sum(f.WhichOneof("body") == "rejection" for f in _drain(raw)) <= 10
        finally:
            raw.close()


def test_an_honest_late_client_stays_connected(pool):
    """One late answer per instruction is what an honest client on a slow link sends."""
    with serving(violation_allowance=0) as transport:
        raw = RawClient(transport.address)
        try:
            for server_round in (1, 2, 3):
                ins = fit_ins(server_round=server_round)
                future = start_round(pool, transport, [("raw", ins)], timeout=0.2)
                header, arrays = raw.instruction()
                [(_, outcome)] = future.result(10)
                assert isinstance(outcome, Failure) and outcome.kind == "timeout"
                raw.send_result(header.message_id, arrays)
                assert "not awaited" in raw.next("rejection").rejection.reason
            assert transport.connected() == ["raw"]
        finally:
            raw.close()


TOKENS = {"0": "token-of-node-zero-0123456789"}


def test_a_flood_of_refused_connections_is_summarised_and_the_server_serves_on(pool, caplog):
    with serving(auth_tokens=TOKENS) as transport, caplog.at_level(logging.INFO, logger="roost"):
        for attempt in range(30):
            # Half without a token, half with a valid token under another node id's name.
            token = None if attempt % 2 else TOKENS["0"]
            raw = RawClient(transport.address, node_id="intruder", token=token, hello=False)
            raw.send(
                frames.frame_bytes(
                    hello=pb.Greeting(protocol_version=wire.PROTOCOL_VERSION, node_id="intruder")
                )
            )
            error = raw.wait_closed()
            raw.close()
            assert error is not None
        during = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
        # Each cause: its first in full, then a line each 10 s (a slow machine may reach one).
        assert 2 <= len(during) <= 4, during
        assert any("missing or unknown token" in line for line in during), during
        assert any("issued for node '0', not 'intruder'" in line for line in during), during
        with clients(transport.address, {"0": lambda: LinearClient(0)}, token=TOKENS["0"]):
            assert transport.wait_for_clients(1, timeout=10) == ["0"]
    # Closing the server logs what was counted since the last line: every refusal is counted.
    lines = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    firsts = [
        line for line in lines if line.startswith(("refused a connection", "refused a hello"))
    ]
    counted = len(firsts) + sum(int(line.split()[1]) for line in lines if line not in firsts)
    assert len(firsts) == 2 and counted == 30, lines
    assert any("(15 in all; latest:" in line for line in lines), lines


def test_a_summary_logs_the_first_event_then_one_line_per_interval(caplog):
    from roost.transport.grpc import conduct

    now = [100.0]
    summary = conduct.Summary(
        "refused %s", "refused %d more (%d in all; latest: %s)", 10.0, clock=lambda: now[0]
    )
    with caplog.at_level(logging.INFO, logger="roost"):
        for index in range(50):
            summary.add(f"#{index}")
        now[0] += 10.0
        summary.add("#50")
        summary.add("#51")
        summary.flush()
        summary.flush()  # nothing new: no line
    assert [r.getMessage() for r in caplog.records] == [
        "refused #0",
        "refused 50 more (51 in all; latest: #50)",
        "refused 1 more (52 in all; latest: #51)",
    ]


def _drain(raw: RawClient) -> list:
    frames = []
    while not raw.frames.empty():
        frame = raw.frames.get_nowait()
        if frame is not None:
            frames.append(frame)
    return frames


# -- mutual TLS -----------------------------------------------------------------------------------


def test_mutual_tls_admits_a_client_only_under_its_certificates_name(tmp_path, pool):
    ca = make_certificates(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    stranger_ca = make_certificates(other, "some other CA")
    alice = make_client_certificate(ca, "alice")
    forged = make_client_certificate(stranger_ca, "bob")
    server_certificates = (ca["server"], ca["server-key"])
    with serving(certificates=server_certificates, client_ca=ca["ca"]) as transport:
        address = f"localhost:{transport.port}"

        def client(node_id, certificate, timeout=1.0):
            return GrpcClient(
                address,
                lambda: LinearClient(0),
                node_id,
                ClientOptions(
                    root_certificates=ca["ca"], certificate=certificate, reconnect_timeout=timeout
                ),
            )

        for certificate in (None, forged):  # no certificate, or one the CA did not sign
            with pytest.raises(ServerUnreachableError):
                client("bob", certificate).run()
        with pytest.raises(ClientRefusedError, match="certificate was issued for node 'alice'"):
            client("bob", alice, timeout=10).run()
        assert transport.connected() == []
        with clients(
            address,
            {"alice": lambda: LinearClient(0)},
            root_certificates=ca["ca"],
            certificate=alice,
        ):
            transport.wait_for_clients(1, timeout=10)
            ins = fit_ins(2.0)
            [(_, outcome)] = start_round(pool, transport, [("alice", ins)]).result(20)
    np.testing.assert_array_equal(outcome.parameters[0], honest_update(0, ins))


def test_client_certificates_need_tls(tmp_path):
    ca = make_certificates(tmp_path)
    with pytest.raises(ConfigurationError, match="need TLS"):
        GrpcServerTransport("127.0.0.1:0", ServerOptions(client_ca=ca["ca"]))
    with pytest.raises(ConfigurationError, match="needs TLS"):
        GrpcClient(
            "127.0.0.1:1",
            lambda: LinearClient(0),
            "a",
            ClientOptions(certificate=(ca["ca"], ca["ca"])),
        )
