"""The personalization example: FedPer's heads live in Context.state and beat FedAvg per client."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from roost.errors import ConfigurationError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "personalization"))
import fedper

CLIENTS, ROUNDS = 6, 6


def run(personal: bool, engine: str = "sequential") -> dict[int, float]:
    settings = fedper.Settings(personal=personal)
    return fedper.train(settings, clients=CLIENTS, rounds=ROUNDS, engine=engine)


def test_local_heads_beat_one_global_model_on_label_skewed_clients():
    fedavg, fedper_ = run(personal=False), run(personal=True)
    assert np.mean(list(fedper_.values())) > np.mean(list(fedavg.values())) + 0.02


def test_the_head_never_leaves_the_client_and_persists_between_rounds():
    import roost

    context = roost.Context.for_partition(0, CLIENTS)
    client = fedper.PersonalClientFn(fedper.Settings(personal=True))(context)
    body = client.get_parameters({})
    assert [p.shape for p in body] == [(64, 32), (32,)]  # the head is not sent
    sent, _, _ = client.fit(body, {"server_round": 1})
    assert len(sent) == 2
    head = [array.copy() for array in context.state["head"]]
    rebuilt = fedper.PersonalClientFn(fedper.Settings(personal=True))(context)  # next round
    rebuilt.fit(sent, {"server_round": 2})
    assert not np.array_equal(context.state["head"][0], head[0])  # trained on from round 1's


@pytest.mark.slow
def test_the_process_engine_keeps_each_nodes_state_like_the_sequential_one():
    assert run(personal=True, engine="process") == run(personal=True)


def test_the_vectorized_engine_refuses_the_stateful_client_naming_another_engine():
    with pytest.raises(ConfigurationError, match="sequential"):
        run(personal=True, engine="vectorized")
