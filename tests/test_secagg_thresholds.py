"""Clients check the server's threshold against their own share holders (issue 22, hole 2)."""

from __future__ import annotations

import numpy as np
import pytest

from roost.secagg import SecAggClient, SecAggConfigError, SecAggInstructionError, crypto
from roost.secagg.graph import default_parameters
from roost.secagg.messages import AdvertiseKeysIns, ShareKeysIns


def _share_keys(neighbours: range | list[int]) -> ShareKeysIns:
    ids = list(neighbours)
    keys = [crypto.public_bytes(crypto.generate_private_key()) for _ in range(2 * len(ids))]
    rows = np.frombuffer(b"".join(keys), np.uint8).reshape(-1, 32)
    return ShareKeysIns(np.array(ids, dtype=np.int64), rows[::2].copy(), rows[1::2].copy(), 1)


def _client(threshold: int, **limits: int) -> SecAggClient:
    client = SecAggClient(**limits)
    client.advertise_keys(AdvertiseKeysIns(1, 1, 10, 32, threshold))
    return client


def test_a_threshold_of_two_among_six_holders_is_refused() -> None:
    # With t = 2 and 6 holders the server asks three holders for the seed share and three for the
    # masking-key share of the same client, rebuilds both secrets and unmasks its input exactly.
    with pytest.raises(SecAggInstructionError, match=r"threshold 2 is not above half .* 6 share"):
        _client(2).share_keys(_share_keys(range(2, 7)))


def test_an_inflated_neighbour_list_is_refused_at_the_default_threshold() -> None:
    # 50 clients: the honest default is k = 28, t = 15 (29 holders); a server naming all 49 others
    # as one client's neighbours makes 50 holders, of which 25 + 25 give both secrets.
    assert (default_parameters(50).degree, default_parameters(50).threshold) == (28, 15)
    with pytest.raises(SecAggInstructionError, match="at least 26"):
        _client(15).share_keys(_share_keys(range(2, 51)))
    _client(15).share_keys(_share_keys(range(2, 30)))  # the honest 28 neighbours pass


@pytest.mark.parametrize("num_clients", [2, 3, 4, 7, 10, 20, 21, 50, 101, 1000])
def test_every_honest_default_setting_passes_the_clients_checks(num_clients: int) -> None:
    parameters = default_parameters(num_clients)
    reply = _client(parameters.threshold).share_keys(_share_keys(range(2, parameters.degree + 2)))
    assert len(reply.receiver_ids) == parameters.degree


def test_a_client_can_demand_a_larger_threshold_and_neighbourhood() -> None:
    with pytest.raises(SecAggInstructionError, match="threshold 2 is below this client's"):
        _client(2, min_threshold=3)
    with pytest.raises(SecAggInstructionError, match=r"2 neighbours, fewer than .* min_neigh"):
        _client(2, min_neighbours=4).share_keys(_share_keys([2, 3]))
    _client(3, min_threshold=3, min_neighbours=4).share_keys(_share_keys(range(2, 6)))
    with pytest.raises(SecAggConfigError, match="min_threshold must be an int >= 2"):
        SecAggClient(min_threshold=1)
    with pytest.raises(SecAggConfigError, match="min_neighbours must be an int >= 1"):
        SecAggClient(min_neighbours=True)
