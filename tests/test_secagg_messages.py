"""Every secure-aggregation message survives its wire form and carries only wire-safe data."""

from __future__ import annotations

import numpy as np
import pytest

from roost.core.validation import check_parameters, check_scalar_dict
from roost.secagg import MessageFormatError, Phase, Quantizer, SecAggClient, SecAggServer
from roost.secagg.messages import AdvertiseKeysIns, AdvertiseKeysRes, UnmaskRes


def _one_round_of_messages() -> list:
    """Every message of a 4-client round, as message objects, in the order they were sent."""
    cohort = ["a", "b", "c", "d"]
    server = SecAggServer(cohort, 6, server_round=2)
    clients = {c: SecAggClient() for c in cohort}
    quantized = Quantizer(1.0, 4).quantize(np.linspace(-1, 1, 6))
    sent = []
    while not server.done:
        for client_id, (arrays, values) in server.instructions().items():
            sent.append((arrays, values))
            reply = clients[client_id].respond(arrays, values, quantized)
            sent.append(reply)
            server.receive(client_id, *reply)
        server.close_phase()
    assert server.phase is Phase.DONE
    return sent


def test_all_messages_are_arrays_of_numbers_and_scalar_values() -> None:
    messages = _one_round_of_messages()
    kinds = {values["secagg.message"] for _, values in messages}
    assert len(kinds) == 8
    for arrays, values in messages:
        check_parameters(arrays)  # int/uint/float arrays only, as the wire requires
        assert check_scalar_dict(values, "values") == values


def test_from_wire_inverts_to_wire() -> None:
    original = UnmaskRes(
        np.array([1, 4], dtype=np.int64),
        np.arange(132, dtype=np.uint8).reshape(2, 66),
        np.array([3], dtype=np.int64),
        np.ones((1, 66), dtype=np.uint8),
    )
    copy = UnmaskRes.from_wire(*original.to_wire())
    for name in ("seed_share_owners", "seed_shares", "key_share_owners", "key_shares"):
        assert np.array_equal(getattr(copy, name), getattr(original, name))
    ins = AdvertiseKeysIns(3, 2, 10, 32, 3)
    assert AdvertiseKeysIns.from_wire(*ins.to_wire()).to_wire() == ins.to_wire()


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: AdvertiseKeysIns(1, 0, 10, 32, 3), "node_id and vector_length must be >= 1"),
        (lambda: AdvertiseKeysIns(1, 1, 10, 65, 3), r"bits in \[2, 64\]"),
        (lambda: AdvertiseKeysIns(1, 1, 10, 32, 1), "threshold must be >= 2"),
        (lambda: AdvertiseKeysIns(1, True, 10, 32, 3), "node_id must be int, got bool"),
        (lambda: AdvertiseKeysRes(b"k" * 32, b"k" * 32), "the two public keys must differ"),
        (
            lambda: UnmaskRes(
                np.array([1, 1]),
                np.zeros((2, 66), np.uint8),
                np.zeros(0, np.int64),
                np.zeros((0, 66), np.uint8),
            ),
            "distinct positive node ids",
        ),
        (
            lambda: UnmaskRes(
                np.array([1, 2]),
                np.zeros((1, 66), np.uint8),
                np.zeros(0, np.int64),
                np.zeros((0, 66), np.uint8),
            ),
            r"seed_shares needs one row per entry of seed_share_owners \(2\), got 1",
        ),
    ],
)
def test_inconsistent_messages_cannot_even_be_built(build, message) -> None:
    with pytest.raises(MessageFormatError, match=message):
        build()
