"""`flwr.simulation.start_simulation`, as older Flower tutorials call it, runs on roost."""

from __future__ import annotations

import numpy as np
import pytest
from test_compat import NUM_CLIENTS, FlowerClient, SoftmaxModel, client_fn, load_data, make_strategy

import roost.compat.flwr as fl
from roost.compat.flwr.server import ServerConfig
from roost.compat.flwr.simulation import run_simulation, start_simulation
from roost.errors import ConfigurationError


def cid_client_fn(cid: str) -> fl.client.Client:
    """The pre-1.8 tutorials' client_fn: the client id as a string."""
    (x_train, y_train), (x_val, y_val) = load_data(int(cid))
    return FlowerClient(SoftmaxModel(), x_train, y_train, x_val, y_val, int(cid)).to_client()


def test_a_cid_client_fn_runs_and_matches_run_simulation():
    history = start_simulation(
        client_fn=cid_client_fn,
        num_clients=NUM_CLIENTS,
        config=ServerConfig(num_rounds=3),
        strategy=make_strategy(),
        client_resources={"num_cpus": 1},
        seed=0,
    )
    accuracy = [value for _, value in history.metrics_distributed["accuracy"]]
    assert len(accuracy) == 3 and accuracy[-1] > 0.6  # ten classes: chance is 0.1
    server = fl.server.ServerApp(
        server_fn=lambda context: fl.server.ServerAppComponents(
            strategy=make_strategy(), config=ServerConfig(num_rounds=3)
        )
    )
    same = run_simulation(
        server_app=server,
        client_app=fl.client.ClientApp(client_fn=client_fn),
        num_supernodes=NUM_CLIENTS,
        seed=0,
    )
    for mine, theirs in zip(history.parameters, same.parameters, strict=True):
        np.testing.assert_array_equal(mine, theirs)


def test_a_context_client_fn_and_client_ids():
    seen: list[str] = []

    def remember(cid: str) -> fl.client.Client:
        seen.append(cid)
        return cid_client_fn(str(["a", "b", "c"].index(cid)))

    strategy = fl.server.strategy.FedAvg(min_fit_clients=3, min_available_clients=3)
    start_simulation(client_fn=remember, clients_ids=["a", "b", "c"], strategy=strategy)
    assert set(seen) == {"a", "b", "c"}
    history = start_simulation(client_fn=client_fn, num_clients=2)  # Context, FedAvg, 1 round
    assert [record.fit_results for record in history.rounds] == [2]


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"num_clients": 2, "server": object()}, "server= and client_manager="),
        ({"num_clients": 2, "client_manager": object()}, "server= and client_manager="),
        ({}, "needs num_clients"),
        ({"num_clients": 3, "clients_ids": ["a"]}, "one id per client"),
    ],
)
def test_what_roost_cannot_honour_is_refused(options, fragment):
    with pytest.raises(ConfigurationError, match=fragment):
        start_simulation(client_fn=cid_client_fn, **options)
