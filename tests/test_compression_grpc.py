"""Compressed rounds over real gRPC (127.0.0.1): the wire carries the compressed form, and the
bytes it carries are those the history records and the benchmark's table states."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import numpy as np
import pytest
from grpc_support import RawClient, clients, serving

import roost
from roost.apps.digits.client import make_client_fn
from roost.apps.digits.strategy import strategy_knobs
from roost.client.client import Context
from roost.core.types import PhaseRes
from roost.server.loop import ServerConfig, run_rounds
from roost.settings import RunSettings
from roost.transport.grpc import client as grpc_client
from roost.transport.grpc import frames, session, wire

TABLE = Path(__file__).resolve().parents[1] / "docs" / "benchmarks" / "compression.md"
CLIENTS, ROUNDS = 3, 2


def table_bytes_up() -> dict[str, int]:
    """Bytes up per client per round, by setting, as the benchmark's table states them."""
    rows = re.findall(r"^\| (\S+) \| ([\d,]+) \|", TABLE.read_text(), flags=re.MULTILINE)
    return {setting: int(count.replace(",", "")) for setting, count in rows}


def counting(dispatch, counts: dict[str, int], direction: str):
    """`dispatch_frame` that first adds the array bytes of every chunk frame it receives."""

    def dispatch_counted(raw, *args, **kwargs):
        data = frames.chunk_data(raw)
        if data is None and frames.parse_frame(raw).WhichOneof("body") == "chunk":
            data = frames.parse_frame(raw).chunk.data
        counts[direction] += 0 if data is None else len(data)
        counts[f"{direction} frames"] += len(raw)
        return dispatch(raw, *args, **kwargs)

    return dispatch_counted


def digits_client(partition_id: int):
    return lambda: make_client_fn(0)(Context.for_partition(partition_id, CLIENTS))


@pytest.mark.parametrize("setting", ["none", "q8", "rot-q4", "q2", "topk:0.01"])
def test_compressed_rounds_over_grpc_send_the_bytes_the_table_says(setting, monkeypatch) -> None:
    counts = dict.fromkeys(["up", "down", "up frames", "down frames"], 0)
    monkeypatch.setattr(session, "dispatch_frame", counting(session.dispatch_frame, counts, "up"))
    client_dispatch = counting(grpc_client.dispatch_frame, counts, "down")
    monkeypatch.setattr(grpc_client, "dispatch_frame", client_dispatch)
    settings = RunSettings(num_clients=CLIENTS, fraction_evaluate=0.0)
    knobs = {**strategy_knobs(settings), "min_available_clients": CLIENTS}  # all, every round
    strategy = roost.FedAvg(**knobs, compression=setting)
    with (
        serving() as transport,
        clients(transport.address, {str(p): digits_client(p) for p in range(CLIENTS)}) as errors,
    ):
        history = run_rounds(strategy, transport, ServerConfig(num_rounds=ROUNDS), seed=0)
    assert not errors
    assert [(r.fit_results, r.fit_failures) for r in history.rounds] == [(CLIENTS, 0)] * ROUNDS
    recorded_up = sum(value for _, value in history.measurements["bytes_up"])
    recorded_down = sum(value for _, value in history.measurements["bytes_down"])
    # What the server received in chunk frames is what the history records, and the table's
    # figure for every client in every round.
    assert counts["up"] == recorded_up == table_bytes_up()[setting] * CLIENTS * ROUNDS
    assert counts["down"] == recorded_down == 650 * 8 * CLIENTS * ROUNDS
    # Framing (headers with the values, chunk tags) adds little beside the arrays.
    assert counts["up frames"] - counts["up"] < 300 * CLIENTS * ROUNDS
    # The run learned: a compressed round still moves the model toward the data.
    accuracy = history.metrics_centralized["accuracy"]
    assert accuracy[-1][1] > accuracy[0][1] + 0.2
    assert np.isfinite(history.parameters[0]).all()


def test_a_client_sending_floats_instead_of_the_codec_is_one_failure_over_grpc() -> None:
    """A raw client answers every compressed instruction with the uncompressed update (the
    floats, not q8's codes and ranges): each round counts it as a failure, the run goes on with
    the honest clients, and its bytes are not recorded as accepted."""
    settings = RunSettings(num_clients=CLIENTS, fraction_evaluate=0.0)
    strategy = roost.FedAvg(
        **{**strategy_knobs(settings), "min_available_clients": CLIENTS}, compression="q8"
    )
    with serving() as transport:
        raw = RawClient(transport.address, node_id="z-floats")
        stop = threading.Event()

        def answer_with_floats() -> None:
            while not stop.is_set():
                try:
                    header, _ = raw.instruction(timeout=0.2)
                except Exception:
                    continue
                answer = PhaseRes([np.zeros(650)], {"num_examples": 10})
                encoded = wire.encode_result(answer, 1 << 16)
                raw.send(wire.header_frame(encoded.header, "result", header.message_id))
                if raw.await_grant(header.message_id):
                    raw.send(*encoded.chunks)

        hostile = threading.Thread(target=answer_with_floats, daemon=True)
        hostile.start()
        try:
            honest = {str(p): digits_client(p) for p in range(CLIENTS - 1)}
            with clients(transport.address, honest) as errors:
                history = run_rounds(strategy, transport, ServerConfig(num_rounds=ROUNDS), seed=0)
        finally:
            stop.set()
            hostile.join(5)
            raw.close()
    assert not errors
    rounds = [(r.fit_results, r.fit_failures, r.failed_clients) for r in history.rounds]
    assert rounds == [(CLIENTS - 1, 1, ["z-floats"])] * ROUNDS
    payload = table_bytes_up()["q8"]
    assert history.measurements["bytes_up"] == [(r, float(payload * (CLIENTS - 1))) for r in (1, 2)]
