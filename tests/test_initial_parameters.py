"""Initial parameters from the clients: one seeded pick, and the next clients when it fails."""

from __future__ import annotations

import numpy as np
import pytest

import roost
from roost.errors import RoostError
from roost.server.loop import INITIAL_PARAMETERS_TRIES


class PartitionClient(roost.Client):
    """Its parameters name its partition: 100 + partition_id."""

    def __init__(self, partition_id: int) -> None:
        self.partition_id = partition_id

    def get_parameters(self, config):
        return [np.full(2, 100.0 + self.partition_id)]

    def fit(self, parameters, config):
        return parameters, 1, {}

    def evaluate(self, parameters, config):
        return 0.0, 1, {}


def client_fn_failing_for(broken: set[int], calls: list[int]):
    """A client_fn that raises for the partitions in `broken`; records every partition built."""

    def client_fn(context: roost.Context) -> roost.Client:
        calls.append(context.partition_id)
        if context.partition_id in broken:
            raise RuntimeError(f"no data for partition {context.partition_id}")
        return PartitionClient(context.partition_id)

    return client_fn


def initial_model(client_fn, num_clients: int, seed: int) -> list[np.ndarray]:
    minimum = min(num_clients, 2)
    history = roost.run_simulation(
        client_fn,
        num_clients=num_clients,
        strategy=roost.FedAvg(
            fraction_evaluate=0.0,
            min_available_clients=minimum,
            min_fit_clients=minimum,
            min_evaluate_clients=minimum,
        ),
        config=roost.ServerConfig(num_rounds=0),
        seed=seed,
    )
    return history.parameters


@pytest.mark.parametrize("seed", [0, 3, 7])
def test_a_run_whose_first_pick_answers_asks_the_seeded_client_only(seed) -> None:
    calls: list[int] = []
    model = initial_model(client_fn_failing_for(set(), calls), num_clients=6, seed=seed)
    # The one draw of the run's seeded generator picks the client, as it always has.
    picked = int(np.random.default_rng(seed).integers(6))
    assert calls == [picked]
    np.testing.assert_array_equal(model[0], np.full(2, 100.0 + picked))


def test_a_client_fn_that_fails_for_the_picked_client_is_followed_by_the_next(caplog) -> None:
    seed, num_clients = 3, 6
    picked = int(np.random.default_rng(seed).integers(num_clients))
    broken = {picked, (picked + 1) % num_clients}
    calls: list[int] = []
    model = initial_model(client_fn_failing_for(broken, calls), num_clients, seed)
    answered = (picked + 2) % num_clients
    assert calls == [picked, (picked + 1) % num_clients, answered]
    np.testing.assert_array_equal(model[0], np.full(2, 100.0 + answered))
    # One line for each client that failed, naming it and its error.
    for partition in sorted(broken):
        lines = [
            line
            for line in caplog.text.splitlines()
            if f"client {partition}:" in line and f"no data for partition {partition}" in line
        ]
        assert len(lines) == 1, caplog.text
    assert f"requesting initial parameters from client {answered} instead" in caplog.text


def test_the_run_gives_up_after_a_bounded_number_of_failed_clients() -> None:
    num_clients = INITIAL_PARAMETERS_TRIES + 3
    calls: list[int] = []
    with pytest.raises(RoostError) as raised:
        initial_model(client_fn_failing_for(set(range(num_clients)), calls), num_clients, seed=0)
    assert len(calls) == INITIAL_PARAMETERS_TRIES
    message = str(raised.value)
    assert "\n" not in message
    assert f"any of the {INITIAL_PARAMETERS_TRIES} clients asked" in message
    assert "pass initial_parameters to the strategy or fix the app's client_fn" in message
    for partition in calls:
        assert str(partition) in message


def test_a_single_client_that_fails_says_so_in_one_line() -> None:
    with pytest.raises(RoostError, match=r"from client 0: .*no data for partition 0.*fix the app"):
        initial_model(client_fn_failing_for({0}, []), num_clients=1, seed=0)
