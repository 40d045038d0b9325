"""Many clients on one server: churn mid-round, and clients with valid tokens that misbehave."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from grpc_support import serving, wait_for

from roost.core.types import Failure, FitIns, FitRes

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
