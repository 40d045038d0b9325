"""The PyTorch client adapter federates the digits demo data to the demo's accuracy."""

from __future__ import annotations

import numpy as np
import pytest

import roost
from roost.data.bundled_digits import load_digits_split
from roost.data.partition import iid_partition
from roost.metrics import weighted_average

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from roost.client.torch import TorchClient  # noqa: E402
from roost.tasks import SGD  # noqa: E402

NUM_CLIENTS = 10


def net() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def client_fn(context: roost.Context) -> TorchClient:
    train, _ = load_digits_split(seed=0)
    indices = iid_partition(len(train.y), context.num_partitions, seed=0)[context.partition_id]
    split = len(indices) // 10
    return TorchClient(
        net,
        (train.x[indices[split:]].astype(np.float32), train.y[indices[split:]]),
        eval_data=(train.x[indices[:split]].astype(np.float32), train.y[indices[:split]]),
        optimizer=SGD(lr=0.1, momentum=0.9),
        epochs=2,
        batch_size=16,
        partition_id=context.partition_id,
    )


def centralized(server_round, parameters, config):
    _, test = load_digits_split(seed=0)
    model = net()
    names = model.state_dict()
    model.load_state_dict({k: torch.tensor(a) for k, a in zip(names, parameters, strict=True)})
    with torch.no_grad():
        logits = model(torch.tensor(test.x, dtype=torch.float32))
    loss = float(nn.functional.cross_entropy(logits, torch.tensor(test.y)))
    return loss, {"accuracy": float((logits.argmax(1).numpy() == test.y).mean())}


def test_torch_client_federates_the_digits_to_the_demo_accuracy():
    strategy = roost.FedAvg(
        evaluate_fn=centralized,
        on_fit_config_fn=lambda server_round: {"server_round": server_round},
        evaluate_metrics_aggregation_fn=weighted_average,
    )
    history = roost.run_simulation(
        client_fn, NUM_CLIENTS, strategy=strategy, config=roost.ServerConfig(num_rounds=5), seed=0
    )
    accuracy = history.metrics_centralized["accuracy"]
    assert accuracy[0][1] < 0.3  # the initial model (asked from one client) guesses
    assert accuracy[-1][0] == 5 and accuracy[-1][1] >= 0.85
    assert history.metrics_distributed["accuracy"][-1][1] >= 0.85
    assert [r.fit_results for r in history.rounds] == [NUM_CLIENTS] * 5
