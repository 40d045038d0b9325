"""Bad messages: every one is charged to the client that sent it, the server never crashes and
never returns a wrong sum; clients refuse bad instructions the same way."""

from __future__ import annotations

import os
import random
import re

import numpy as np
import pytest

from roost.secagg import (
    Phase,
    Quantizer,
    SecAggClient,
    SecAggClientError,
    SecAggInstructionError,
    SecAggServer,
    crypto,
    run_in_memory,
)
from roost.secagg.messages import (
    CIPHERTEXT_BYTES,
    AdvertiseKeysIns,
    MaskedInputIns,
    ShareKeysIns,
    UnmaskIns,
)

NUM_CLIENTS, LENGTH = 8, 40  # complete graph, threshold 5


def _inputs(seed: int = 0) -> dict[str, np.ndarray]:
    quantizer = Quantizer(clip=1.0, max_clients=NUM_CLIENTS)
    data = np.random.default_rng(seed).uniform(-1, 1, size=(NUM_CLIENTS, LENGTH))
    return {f"client-{i}": quantizer.quantize(row) for i, row in enumerate(data)}


def _sum_of(inputs, clients) -> np.ndarray:
    return sum((inputs[c] for c in clients), np.zeros(LENGTH, dtype=np.uint64))


def _tamper(phase: Phase, change, target: str | None = "client-3"):
    """An intercept that applies `change(arrays, values, seen)` to one client's reply.

    With target None it picks the first client to answer that phase. `seen` holds the replies
    already seen in that phase, by client.
    """
    seen: dict[str, tuple] = {}

    def intercept(current, client_id, reply):
        chosen = target if target is not None else next(iter(seen), client_id)
        if current is phase:
            if client_id == chosen:
                arrays, values = [a.copy() for a in reply[0]], dict(reply[1])
                reply = change(arrays, values, seen)
            seen.setdefault(client_id, reply)
        return reply

    return intercept


def _flip_bit(array: np.ndarray, row: int = 0, byte: int = 20) -> np.ndarray:
    array[row, byte] ^= 0x10
    return array


def _replace(values: dict, **changes) -> dict:
    return {**values, **changes}


REJECTED_AT_RECEIPT = {
    # phase, change, expected reason
    "short public key": (
        Phase.ADVERTISE_KEYS,
        lambda a, v, s: (a, _replace(v, encryption_key=os.urandom(31))),
        "encryption_key must have 32 bytes",
    ),
    "low-order public key": (
        Phase.ADVERTISE_KEYS,
        lambda a, v, s: (a, _replace(v, masking_key=bytes(32))),
        "key agreement failed",
    ),
    "key as text": (
        Phase.ADVERTISE_KEYS,
        lambda a, v, s: (a, _replace(v, masking_key="k" * 32)),
        "masking_key must be bytes, got str",
    ),
    "another client's key": (
        Phase.ADVERTISE_KEYS,
        lambda a, v, s: (a, _replace(v, masking_key=s["client-0"][1]["masking_key"])),
        "another client already uses",
    ),
    "wrong message kind": (
        Phase.ADVERTISE_KEYS,
        lambda a, v, s: (a, _replace(v, **{"secagg.message": "secagg.unmask.res"})),
        "expected a 'secagg.advertise_keys.res' message",
    ),
    "unexpected array": (
        Phase.ADVERTISE_KEYS,
        lambda a, v, s: ([np.zeros(3)], v),
        "carries 0 arrays, got 1",
    ),
    "share for a stranger": (
        Phase.SHARE_KEYS,
        lambda a, v, s: ([np.where(a[0] == a[0][0], 99, a[0]), a[1]], v),
        "sent shares to nodes",
    ),
    "share for itself": (
        Phase.SHARE_KEYS,
        lambda a, v, s: ([np.where(a[0] == a[0][0], 4, a[0]), a[1]], v),
        "must be distinct positive node ids|sent shares to nodes",
    ),
    "a neighbour left out": (
        Phase.SHARE_KEYS,
        lambda a, v, s: ([a[0][:-1], a[1][:-1]], v),
        "sent shares to nodes",
    ),
    "truncated ciphertexts": (
        Phase.SHARE_KEYS,
        lambda a, v, s: ([a[0], a[1][:, :-1]], v),
        rf"ciphertexts must have shape \(n, {CIPHERTEXT_BYTES}\)",
    ),
    "float node ids": (
        Phase.SHARE_KEYS,
        lambda a, v, s: ([a[0].astype(np.float64), a[1]], v),
        "receiver_ids must have dtype int64",
    ),
    "short commitment": (
        Phase.SHARE_KEYS,
        lambda a, v, s: (a, _replace(v, seed_commitment=b"c" * 31)),
        "seed_commitment must have 32 bytes",
    ),
    "masked vector too short": (
        Phase.MASKED_INPUT,
        lambda a, v, s: ([a[0][:-1], a[1]], v),
        "masked vector has length 39",
    ),
    "masked vector as int64": (
        Phase.MASKED_INPUT,
        lambda a, v, s: ([a[0].astype(np.int64), a[1]], v),
        "masked_input must have dtype uint32 or uint64",
    ),
    "masked vector wider than the round": (
        Phase.MASKED_INPUT,
        lambda a, v, s: ([a[0].astype(np.uint64), a[1]], v),
        "32-bit rounds use uint32",
    ),
    "masked vector as a matrix": (
        Phase.MASKED_INPUT,
        lambda a, v, s: ([a[0].reshape(4, 10), a[1]], v),
        r"must have shape \(n,\)",
    ),
    "rejects a node it never heard from": (
        Phase.MASKED_INPUT,
        lambda a, v, s: ([a[0], np.array([99])], v),
        "never received",
    ),
    "seed share of someone else": (
        Phase.UNMASK,
        lambda a, v, s: ([np.where(a[0] == a[0][0], 99, a[0]), *a[1:]], v),
        "sent shares for seeds",
    ),
    "missing seed share": (
        Phase.UNMASK,
        lambda a, v, s: ([a[0][:-1], a[1][:-1], a[2], a[3]], v),
        "sent shares for seeds",
    ),
    "share value outside the field": (
        Phase.UNMASK,
        lambda a, v, s: ([a[0], np.full_like(a[1], 0xFF), a[2], a[3]], v),
        "not an element of the field",
    ),
}


@pytest.mark.parametrize("case", sorted(REJECTED_AT_RECEIPT))
def test_a_bad_reply_is_charged_to_its_sender_and_the_sum_stays_exact(case: str) -> None:
    phase, change, reason = REJECTED_AT_RECEIPT[case]
    inputs = _inputs()
    trace = run_in_memory(inputs, intercept=_tamper(phase, change))
    assert list(trace.rejected) == ["client-3"]
    assert phase.value in trace.rejected["client-3"]
    assert re.search(reason, trace.rejected["client-3"])
    result = trace.result
    assert set(result.failures) == {"client-3"}
    # Out of the sum unless it failed only after its masked input was in.
    assert ("client-3" in result.survivors) == (phase is Phase.UNMASK)
    assert np.array_equal(result.total, _sum_of(inputs, result.survivors))


def test_a_masked_value_beyond_the_rounds_bits_is_rejected() -> None:
    quantizer = Quantizer(clip=1.0, max_clients=NUM_CLIENTS, bits=20)
    inputs = {f"client-{i}": quantizer.quantize(np.zeros(LENGTH)) for i in range(NUM_CLIENTS)}

    def too_big(arrays, values, seen):
        arrays[0][0] = 1 << 21
        return arrays, values

    trace = run_in_memory(inputs, bits=20, intercept=_tamper(Phase.MASKED_INPUT, too_big))
    assert "values >= 2^20" in trace.rejected["client-3"]
    assert np.array_equal(trace.result.total, _sum_of(inputs, trace.result.survivors))


def _flip_ciphertext(arrays, values, seen):
    return [arrays[0], _flip_bit(arrays[1], row=2)], values


def _swap_ciphertexts(arrays, values, seen):
    arrays[1][[0, 1]] = arrays[1][[1, 0]]  # each receiver gets the other's ciphertext
    return arrays, values


def _flip_public_key(name: str):
    def change(arrays, values, seen):
        key = bytearray(values[name])
        key[5] ^= 0x01
        return arrays, {**values, name: bytes(key)}

    return change


@pytest.mark.parametrize(
    ("phase", "change", "partners"),
    [
        (Phase.SHARE_KEYS, _flip_ciphertext, 1),
        (Phase.SHARE_KEYS, _swap_ciphertexts, 2),
        (Phase.ADVERTISE_KEYS, _flip_public_key("encryption_key"), NUM_CLIENTS - 1),
        (Phase.ADVERTISE_KEYS, _flip_public_key("masking_key"), NUM_CLIENTS - 1),
    ],
    ids=[
        "flipped-ciphertext-bit",
        "swapped-ciphertexts",
        "tampered-encryption-key",
        "tampered-masking-key",
    ],
)
def test_shares_that_fail_authentication_or_confirmation_drop_the_right_client(
    phase, change, partners
) -> None:
    # The server cannot read shares; their receivers report them, and the failed pairs point
    # at the client whose messages were altered.
    inputs = _inputs(1)
    result = run_in_memory(inputs, intercept=_tamper(phase, change)).result
    assert list(result.failures) == ["client-3"]
    reason = result.failures["client-3"]
    assert "failed authentication or key confirmation" in reason
    assert reason.count(",") == partners - 1  # the partners are listed
    assert "client-3" not in result.survivors
    assert np.array_equal(result.total, _sum_of(inputs, result.survivors))


def test_a_wrong_share_value_is_found_and_charged_and_the_sum_stays_exact() -> None:
    def wrong_value(arrays, values, seen):
        arrays[1][:, 0] = 0  # keep it a field element, change its value
        arrays[1][:, 1:] = np.frombuffer(os.urandom(arrays[1][:, 1:].size), np.uint8).reshape(
            arrays[1].shape[0], -1
        )
        return arrays, values

    inputs = _inputs(2)
    # The first client to answer: its shares are the first ones used to rebuild every seed.
    trace = run_in_memory(inputs, intercept=_tamper(Phase.UNMASK, wrong_value, target=None))
    result = trace.result
    assert trace.rejected == {}  # the message was well formed
    (culprit,) = result.failures
    assert "sent a wrong share" in result.failures[culprit]
    assert culprit in result.survivors  # its input was already in the sum
    assert np.array_equal(result.total, _sum_of(inputs, result.survivors))


def _random_array(chooser: random.Random) -> np.ndarray:
    dtype = chooser.choice([np.int64, np.uint64, np.uint8, np.float64, np.int8, np.float32])
    shape = tuple(chooser.randint(0, 5) for _ in range(chooser.randint(0, 3)))
    return np.frombuffer(os.urandom(int(np.prod(shape)) * np.dtype(dtype).itemsize), dtype).reshape(
        shape
    )


def _random_mutation(chooser: random.Random):
    def change(arrays, values, seen):
        kind = chooser.randrange(6)
        if kind == 0:
            return [_random_array(chooser) for _ in range(chooser.randint(0, 5))], values
        if kind == 1 and arrays:
            index = chooser.randrange(len(arrays))
            arrays[index] = _random_array(chooser)
            return arrays, values
        if kind == 2:
            key = chooser.choice(sorted(values))
            junk = chooser.choice([None, 1.5, -3, True, os.urandom(40), "x", [1, 2]])
            return arrays, {**values, key: junk}
        if kind == 3:
            return arrays, {**values, "extra": 1}
        if kind == 4:
            return None, "not a dict"
        for array in arrays:  # flip one random bit in every array that has bytes
            if array.size and array.dtype == np.uint8:
                flat = array.reshape(-1)
                flat[chooser.randrange(flat.size)] ^= 1 << chooser.randrange(8)
        return arrays, values

    return change


@pytest.mark.parametrize("seed", range(24))
def test_random_garbage_never_crashes_the_server_nor_corrupts_the_sum(seed: int) -> None:
    chooser = random.Random(seed)
    phase = [Phase.ADVERTISE_KEYS, Phase.SHARE_KEYS, Phase.MASKED_INPUT, Phase.UNMASK][seed % 4]
    inputs = _inputs(seed)
    trace = run_in_memory(inputs, intercept=_tamper(phase, _random_mutation(chooser)))
    result = trace.result
    assert set(trace.rejected) <= {"client-3"}
    assert set(result.failures) <= {"client-3"}
    if "client-3" in result.survivors and phase is Phase.MASKED_INPUT:
        return  # flipped bits in its own masked vector are, in effect, another input
    assert np.array_equal(result.total, _sum_of(inputs, result.survivors))


def test_replies_from_strangers_duplicates_and_the_dropped_are_refused() -> None:
    server = SecAggServer(["a", "b", "c"], 4, server_round=1)
    clients = {c: SecAggClient() for c in "abc"}
    replies = {c: clients[c].respond(*ins) for c, ins in server.instructions().items()}
    with pytest.raises(SecAggClientError, match="not part of this round's cohort"):
        server.receive("mallory", *replies["a"])
    server.receive("a", *replies["a"])
    with pytest.raises(SecAggClientError, match="unexpected advertise_keys reply"):
        server.receive("a", *replies["a"])
    with pytest.raises(SecAggClientError, match="client b: advertise_keys"):
        server.receive("b", [], {"secagg.message": "nonsense"})
    with pytest.raises(SecAggClientError, match="unexpected"):
        server.receive("b", *replies["b"])  # it is out after its bad reply
    assert set(server.failures()) == {"b"}


def _started_client(threshold: int = 3) -> SecAggClient:
    client = SecAggClient()
    client.advertise_keys(AdvertiseKeysIns(1, 1, 10, 32, threshold))
    return client


def test_clients_refuse_malformed_instructions_with_one_error_type() -> None:
    chooser = random.Random(0)
    for _ in range(50):
        client = SecAggClient()
        arrays = [_random_array(chooser) for _ in range(chooser.randint(0, 3))]
        values = chooser.choice([{}, {"secagg.message": "secagg.advertise_keys.ins"}, {"x": 1}])
        with pytest.raises(SecAggInstructionError):
            client.respond(arrays, values)
    client = _started_client()
    with pytest.raises(SecAggInstructionError, match="round 2 in round 1"):
        client.share_keys(_share_keys_ins(server_round=2))


def _share_keys_ins(server_round: int = 1, neighbours=(2, 3)):
    keys = [crypto.public_bytes(crypto.generate_private_key()) for _ in range(2 * len(neighbours))]
    rows = np.frombuffer(b"".join(keys), np.uint8).reshape(-1, 32)
    return ShareKeysIns(
        np.array(neighbours, dtype=np.int64), rows[::2].copy(), rows[1::2].copy(), server_round
    )


def test_clients_refuse_unsafe_share_and_unmask_requests() -> None:
    with pytest.raises(SecAggInstructionError, match="own neighbour"):
        _started_client().share_keys(_share_keys_ins(neighbours=(1, 2)))
    with pytest.raises(SecAggInstructionError, match="cannot hold shares with threshold 3"):
        _started_client().share_keys(_share_keys_ins(neighbours=(2,)))
    with pytest.raises(SecAggInstructionError, match="public key"):
        ins = _share_keys_ins()
        ins.masking_keys[0] = 0  # the identity point
        _started_client().share_keys(ins)
    with pytest.raises(SecAggInstructionError, match="expected advertise_keys"):
        SecAggClient().share_keys(_share_keys_ins())
    # Asking for both secrets of one node in one request is malformed on its face.
    both = ([np.array([2]), np.array([2])], {"secagg.message": "secagg.unmask.ins"})
    both[1].update(server_round=1, num_survivors=5)
    with pytest.raises(SecAggInstructionError, match="none of them in another id list"):
        _unmask_ready_client().respond(*both)


def test_a_client_with_too_few_valid_shares_does_not_send_its_input() -> None:
    client = _started_client()
    client.share_keys(_share_keys_ins())
    no_shares = MaskedInputIns(np.zeros(0, np.int64), np.zeros((0, CIPHERTEXT_BYTES), np.uint8), 1)
    with pytest.raises(SecAggInstructionError, match="only 0 neighbours sent valid shares"):
        client.masked_input(no_shares, np.zeros(10, np.uint64))


def _unmask_ready_client() -> SecAggClient:
    """Client "a" (node 1) of a 3-client round (k = 2, t = 2), waiting for its unmask request."""
    server = SecAggServer(["a", "b", "c"], 10, server_round=1)
    clients = {c: SecAggClient() for c in "abc"}
    while server.phase is not Phase.UNMASK:
        for client_id, ins in server.instructions().items():
            server.receive(client_id, *clients[client_id].respond(*ins, np.zeros(10, np.uint64)))
        server.close_phase()
    return clients["a"]


@pytest.mark.parametrize(
    ("survivors", "dropped", "count", "message"),
    [
        ([1, 2, 3], [], 1, "fewer than the threshold 2"),
        ([2, 3], [], 3, "not listed among the survivors"),
        ([1, 2], [7], 3, "holds no shares of nodes"),
    ],
)
def test_clients_reveal_nothing_on_a_suspicious_unmask_request(
    survivors, dropped, count, message
) -> None:
    client = _unmask_ready_client()
    ins = UnmaskIns(np.array(survivors), np.array(dropped, dtype=np.int64), 1, count)
    with pytest.raises(SecAggInstructionError, match=message):
        client.unmask(ins)
