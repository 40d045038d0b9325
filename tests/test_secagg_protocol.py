"""The whole protocol in memory: exact sums, dropouts in every phase, uniform-looking masks."""

from __future__ import annotations

import random

import numpy as np
import pytest

from roost.secagg import (
    Phase,
    Quantizer,
    SecAggAbortedError,
    SecAggParameters,
    WeightedQuantizer,
    run_in_memory,
)
from roost.secagg.graph import smallest_secure_threshold


def _inputs(num_clients: int, length: int, seed: int = 0, bits: int = 32) -> dict[str, np.ndarray]:
    """Quantized inputs (test data only: numpy.random is fine here, never inside the protocol)."""
    quantizer = Quantizer(clip=1.0, max_clients=num_clients, bits=bits)
    data = np.random.default_rng(seed).uniform(-1.2, 1.2, size=(num_clients, length))
    return {f"client-{i}": quantizer.quantize(row) for i, row in enumerate(data)}


def _plain_sum(inputs: dict[str, np.ndarray], clients) -> np.ndarray:
    total = np.zeros_like(next(iter(inputs.values())))
    for client in clients:
        total = total + inputs[client]
    return total


def _parameters(degree: int) -> SecAggParameters:
    return SecAggParameters(degree, smallest_secure_threshold(degree))


GRAPHS = {
    # n: (complete degree, a k-regular degree below n − 1)
    5: (4, 2),
    20: (19, 6),
    50: (49, 10),
}


@pytest.mark.parametrize("num_clients", sorted(GRAPHS))
@pytest.mark.parametrize("graph", ["complete", "k-regular"])
def test_the_sum_equals_the_plaintext_sum_exactly(num_clients: int, graph: str) -> None:
    degree = GRAPHS[num_clients][0 if graph == "complete" else 1]
    inputs = _inputs(num_clients, 300, seed=num_clients)
    trace = run_in_memory(inputs, server_round=7, parameters=_parameters(degree))
    result = trace.result
    assert result.total.dtype == np.uint64
    assert np.array_equal(result.total, _plain_sum(inputs, inputs))
    assert result.survivors == tuple(inputs) and result.failures == {}
    # Complete graphs cost O(n) per client, k-regular ones O(k): the sent bytes show it.
    per_client = max(trace.bytes_from_clients.values())
    assert per_client < 300 * 8 + 400 * (degree + 2)


def _dropped(clients, fraction: float, seed: int) -> list[str]:
    return random.Random(seed).sample(sorted(clients), round(fraction * len(clients)))


@pytest.mark.parametrize(
    ("num_clients", "degree"),
    [(20, 19), (50, 49), (50, 24)],
    ids=["20-complete", "50-complete", "50-k24"],
)
@pytest.mark.parametrize("phase", [Phase.MASKED_INPUT, Phase.UNMASK])
def test_thirty_percent_dropouts_leave_exactly_the_survivors_sum(
    num_clients, degree, phase
) -> None:
    inputs = _inputs(num_clients, 200, seed=3)
    gone = _dropped(inputs, 0.3, seed=num_clients + degree)
    trace = run_in_memory(
        inputs,
        parameters=_parameters(degree),
        shuffle=random.Random(11).shuffle,
        silent={phase: gone},
    )
    result = trace.result
    if phase is Phase.MASKED_INPUT:  # dropped after sharing keys: their inputs are not in the sum
        assert set(result.survivors) == set(inputs) - set(gone)
    else:  # dropped after sending the masked input: their inputs are in, their shares not needed
        assert set(result.survivors) == set(inputs)
    assert set(result.failures) == set(gone)
    assert all(reason == f"{phase.value}: no reply" for reason in result.failures.values())
    assert np.array_equal(result.total, _plain_sum(inputs, result.survivors))


def test_dropouts_in_every_phase_at_once() -> None:
    inputs = _inputs(20, 100, seed=4)
    clients = sorted(inputs)
    silent = {
        Phase.ADVERTISE_KEYS: clients[0:2],
        Phase.SHARE_KEYS: clients[2:4],
        Phase.MASKED_INPUT: clients[4:6],
        Phase.UNMASK: clients[6:8],
    }
    result = run_in_memory(inputs, silent=silent).result
    assert set(result.survivors) == set(clients[6:])
    assert len(result.failures) == 8
    assert np.array_equal(result.total, _plain_sum(inputs, result.survivors))


@pytest.mark.parametrize(
    "phase", [Phase.ADVERTISE_KEYS, Phase.SHARE_KEYS, Phase.MASKED_INPUT, Phase.UNMASK]
)
def test_fewer_than_threshold_survivors_is_a_clear_error(phase: Phase) -> None:
    inputs = _inputs(10, 50)  # complete graph: t = 6
    with pytest.raises(SecAggAbortedError, match=r"5 clients left .* fewer than the threshold 6"):
        run_in_memory(inputs, silent={phase: sorted(inputs)[:5]})
    # One fewer dropout and the round completes.
    result = run_in_memory(inputs, silent={phase: sorted(inputs)[:4]}).result
    assert np.array_equal(result.total, _plain_sum(inputs, result.survivors))


def test_a_survivor_graph_split_in_two_aborts_instead_of_revealing_partial_sums() -> None:
    inputs = _inputs(10, 50)
    clients = sorted(inputs, key=lambda c: int(c.split("-")[1]))
    # Identity shuffle: the ring is node 1..10 in cohort order; a ring (k = 2) split at 1 and 6.
    silent = {Phase.MASKED_INPUT: [clients[0], clients[5]]}
    with pytest.raises(SecAggAbortedError, match="split"):
        run_in_memory(inputs, parameters=_parameters(2), shuffle=lambda order: None, silent=silent)


def test_a_secret_with_too_few_live_holders_aborts_before_anything_is_revealed() -> None:
    inputs = _inputs(10, 50)
    clients = sorted(inputs, key=lambda c: int(c.split("-")[1]))
    revealed = []

    def watch(phase, client_id, reply):
        if phase is Phase.UNMASK:
            revealed.append(client_id)
        return reply

    # k = 4, t = 3 on the ring 1..10: node 3's holders are itself and nodes 1, 2, 4, 5. With
    # nodes 2 and 4 gone after sharing, three remain (1, 3, 5) and the round completes; if node 3
    # drops too, its masking key has two live holders (1, 5) and cannot be rebuilt.
    silent = {Phase.MASKED_INPUT: [clients[1], clients[3]]}
    trace = run_in_memory(
        inputs, parameters=_parameters(4), shuffle=lambda order: None, silent=silent
    )
    assert np.array_equal(trace.result.total, _plain_sum(inputs, trace.result.survivors))
    silent = {Phase.MASKED_INPUT: [clients[1], clients[2], clients[3]]}
    with pytest.raises(SecAggAbortedError, match="live holders, fewer than the threshold 3"):
        run_in_memory(
            inputs,
            parameters=_parameters(4),
            shuffle=lambda o: None,
            silent=silent,
            intercept=watch,
        )
    assert revealed == []


def _chi_square_top_bits(vector: np.ndarray, bits: int, buckets_log2: int = 6) -> float:
    """Chi-square statistic of the 6 bits just below bit `bits`, against uniform buckets."""
    shifted = vector >> np.uint64(bits - buckets_log2)
    buckets = (shifted & np.uint64((1 << buckets_log2) - 1)).astype(np.int64)
    counts = np.bincount(buckets, minlength=1 << buckets_log2)
    expected = vector.size / (1 << buckets_log2)
    return float(((counts - expected) ** 2 / expected).sum())


# Chi-square with 63 degrees of freedom exceeds this with probability 1e-6.
CHI_SQUARE_63_AT_1E_6 = 131.37


def test_each_masked_vector_is_indistinguishable_from_uniform() -> None:
    bits, length = 32, 20_000
    quantizer = Quantizer(clip=1.0, max_clients=5, bits=bits)
    inputs = {f"client-{i}": quantizer.quantize(np.full(length, 0.5)) for i in range(5)}
    masked = {}

    def capture(phase, client_id, reply):
        if phase is Phase.MASKED_INPUT:
            masked[client_id] = reply[0][0].copy()
        return reply

    trace = run_in_memory(inputs, bits=bits, intercept=capture)
    assert np.array_equal(trace.result.total, _plain_sum(inputs, inputs))
    # The raw input (all one value) is as far from uniform as can be: the test can fail.
    assert _chi_square_top_bits(inputs["client-0"], bits) > 100 * CHI_SQUARE_63_AT_1E_6
    for vector in masked.values():
        assert int(vector.max()) < 1 << bits
        assert _chi_square_top_bits(vector, bits) < CHI_SQUARE_63_AT_1E_6
        assert _chi_square_top_bits(vector, bits - 6) < CHI_SQUARE_63_AT_1E_6  # middle bits


def test_weighted_mean_through_the_protocol_with_dropouts() -> None:
    num_clients, length = 12, 400
    quantizer = WeightedQuantizer(clip=1.0, max_weight=1000.0, max_clients=num_clients)
    data = np.random.default_rng(8).uniform(-1, 1, size=(num_clients, length))
    weights = np.random.default_rng(9).integers(1, 1000, size=num_clients).astype(float)
    clients = [f"client-{i}" for i in range(num_clients)]
    inputs = {c: quantizer.encode(data[i], weights[i]) for i, c in enumerate(clients)}
    result = run_in_memory(inputs, silent={Phase.MASKED_INPUT: clients[:3]}).result
    kept = [clients.index(c) for c in result.survivors]
    mean, total_weight = quantizer.decode_mean(result.total, len(kept))
    expected = (weights[kept, None] * data[kept]).sum(0) / weights[kept].sum()
    assert abs(total_weight - weights[kept].sum()) < 1e-3
    assert np.abs(mean - expected).max() < quantizer.mean_error_bound(len(kept), total_weight)


def test_rounds_do_not_share_masks() -> None:
    inputs = _inputs(5, 100)
    first, second = {}, {}
    for store, server_round in ((first, 1), (second, 2)):

        def capture(phase, client_id, reply, store=store):
            if phase is Phase.MASKED_INPUT:
                store[client_id] = reply[0][0]
            return reply

        run_in_memory(inputs, server_round=server_round, intercept=capture)
    assert all(not np.array_equal(first[c], second[c]) for c in inputs)
