"""Many clients on one server: churn mid-round, and clients with valid tokens that misbehave."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import numpy as np
from grpc_support import (
    LinearClient,
    free_port,
    make_strategy,
    serving,
    simulate,
    wait_for,
    wait_listening,
)

import roost
from roost.core.files import load_parameters
from roost.core.types import Failure, FitIns, FitRes
from roost.transport.grpc.client import GrpcClient
from roost.transport.grpc.options import ClientOptions

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from swarm import Behaviour, Swarm

NUM_CLIENTS = 200
MODEL = [np.arange(2000.0)]  # 16 kB: several 1 kB chunks, so an upload can stop half way


def test_200_clients_40_leave_mid_round_and_every_later_round_has_all_the_rest():
    behaviours = {f"c{i:03d}": Behaviour.ECHO for i in range(NUM_CLIENTS)}
    leaving = set(list(behaviours)[:40])
    for index, node_id in enumerate(sorted(leaving)):
        behaviours[node_id] = (
            Behaviour.LEAVE_ON_INSTRUCTION if index % 2 else Behaviour.LEAVE_MID_UPLOAD
        )
    with (
        serving(max_concurrent_uploads=4, chunk_bytes=1024, upload_idle_timeout=5) as transport,
        Swarm(transport.address, behaviours),
    ):
        ids = transport.wait_for_clients(NUM_CLIENTS, timeout=120)
        ins = FitIns(MODEL, {})
        outcomes = dict(transport.run([(c, ins) for c in ids], timeout=60))
        failed = {c for c, outcome in outcomes.items() if isinstance(outcome, Failure)}
        assert failed == leaving
        assert {outcomes[c].kind for c in failed} == {"disconnected"}
        remaining = sorted(set(ids) - leaving)
        wait_for(lambda: transport.connected() == remaining, 30, what="the leavers to be gone")
        for server_round in (2, 3, 4):
            ins = FitIns([MODEL[0] + server_round], {})
            started = time.monotonic()
            outcomes = dict(transport.run([(c, ins) for c in remaining], timeout=60))
            assert sorted(outcomes) == remaining
            for outcome in outcomes.values():
                assert isinstance(outcome, FitRes), outcome
                np.testing.assert_array_equal(outcome.parameters[0], ins.parameters[0])
            assert time.monotonic() - started < 30
        assert transport.free_upload_slots == 4


def test_hostile_clients_with_valid_tokens_cannot_stop_the_run_or_change_the_model(tmp_path):
    """NaN metrics, an overflowing loss, an upload never finished and a flood of stale results,
    each from a client with a valid token: the run completes, the model is the one the honest
    clients make on their own, and the outputs are written."""
    hostile = {
        "nan": Behaviour.NAN_METRICS,
        "huge": Behaviour.HUGE_LOSS,
        "stall": Behaviour.NEVER_FINISH,
        "flood": Behaviour.FLOOD,
    }
    honest = ["0", "1", "2"]
    tokens = {node: f"token-of-{node}-0123456789abcdef" for node in [*honest, *hostile]}
    address = f"127.0.0.1:{free_port()}"
    result: dict = {}

    def serve() -> None:
        try:
            result["history"] = roost.start_server(
                server_address=address,
                config=roost.ServerConfig(num_rounds=3, round_timeout=30),
                strategy=make_strategy(len(honest) + len(hostile)),
                auth_tokens=tokens,
                out_dir=tmp_path,
                upload_idle_timeout=1.0,
                seed=0,
            )
        except Exception as error:  # surfaced below
            result["error"] = error

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    wait_listening(address)
    threads, grpc_clients = [], []
    for node in honest:
        grpc_client = GrpcClient(
            address,
            lambda node=node: LinearClient(int(node)),
            node,
            ClientOptions(token=tokens[node], reconnect_timeout=30),
        )
        grpc_clients.append(grpc_client)
        threads.append(threading.Thread(target=grpc_client.run, daemon=True))
    # Cut off, the hostile clients come back (as real ones would) and misbehave again.
    with Swarm(address, hostile, tokens, reconnect=True) as swarm:
        welcomed = [client.welcomed for client in swarm.clients.values()]
        wait_for(lambda: all(event.is_set() for event in welcomed), 30, what="hostile clients")
        for thread in threads:
            thread.start()
        server.join(120)
    for grpc_client in grpc_clients:
        grpc_client.stop()
    assert not server.is_alive() and "error" not in result, result
    history = result["history"]
    clean = simulate(3, num_clients=len(honest))
    np.testing.assert_allclose(history.parameters[0], clean.parameters[0], rtol=1e-12)
    for record in history.rounds:
        assert record.fit_results == len(honest) and set(record.failed_clients) == set(hostile)
    saved = json.loads((tmp_path / "history.json").read_text())
    assert len(saved["rounds"]) == 3
    np.testing.assert_allclose(load_parameters(tmp_path / "model.npz")[0], clean.parameters[0])
