"""`KerasTask` on the vectorized engine against the Keras adapter on the sequential engine.

`_worker()` runs the checks in a subprocess with `KERAS_BACKEND=torch` (Keras picks its backend
when it is first imported), together with test_keras's (the conftest fixture keras_on_torch),
and returns the numbers the tests assert on.
"""

from __future__ import annotations

import importlib.util
import sys

import pytest

# Keras runs in the subprocesses only: checking it is installed without importing it here saves
# every pytest worker a TensorFlow import (Keras' default backend) at collection.
# One group with test_keras's torch test: --dist loadgroup runs them on one worker, so the
# session fixture keras_on_torch (one Keras process for both files) is made once.
pytestmark = [
    pytest.mark.skipif(
        importlib.util.find_spec("keras") is None or importlib.util.find_spec("torch") is None,
        reason="keras and torch are needed",
    ),
    pytest.mark.xdist_group("keras_torch"),
    pytest.mark.slow,
]

SIZES = (30, 17, 45, 8, 23)  # unequal clients: some run out of batches before the others


def _worker() -> dict:  # runs in the subprocess (keras_checks)
    import logging

    # On torch, keep TensorFlow out of this process: keras.utils.set_random_seed imports it (when
    # installed) only to seed it, about 10 s of a Keras test's start-up.
    sys.modules["tensorflow"] = None  # type: ignore[assignment]
    import keras
    import numpy as np

    import roost
    from roost.compat.flwr.client import NumPyClient
    from roost.metrics import weighted_average
    from roost.tasks import KerasTask

    logging.getLogger("roost").setLevel(logging.WARNING)
    keras.utils.set_random_seed(0)

    def seed_model(optimizer) -> keras.Model:
        # The seed tutorial's network, on 8×8×3 images to keep the test fast.
        model = keras.Sequential(
            [
                keras.Input(shape=(8, 8, 3)),
                keras.layers.Flatten(),
                keras.layers.Dense(64, activation="relu"),
                keras.layers.Dense(64, activation="relu"),
                keras.layers.Dense(10, activation="softmax"),
            ]
        )
        model.compile(optimizer, "sparse_categorical_crossentropy", metrics=["accuracy"])
        return model

    def data(partition_id: int, num_partitions: int):
        rng = np.random.default_rng(partition_id)
        n = SIZES[partition_id]
        return rng.random((n, 8, 8, 3)).astype("float32"), rng.integers(0, 10, n)

    def eval_data(partition_id: int, num_partitions: int):
        rng = np.random.default_rng(100 + partition_id)
        return rng.random((12, 8, 8, 3)).astype("float32"), rng.integers(0, 10, 12)

    def simulate(client_fn, engine: str, initial, warm: bool = False):
        strategy = roost.FedAvg(
            fraction_evaluate=1.0,
            initial_parameters=initial,
            on_fit_config_fn=lambda server_round: {"server_round": server_round},
            evaluate_metrics_aggregation_fn=weighted_average,
        )
        return roost.run_simulation(
            client_fn,
            len(SIZES),
            strategy=strategy,
            config=roost.ServerConfig(num_rounds=2),
            seed=0,
            engine=engine,
            warm_clients=warm,
        )

    def max_diff(a, b) -> float:
        return max(float(np.abs(x - y).max()) for x, y in zip(a, b, strict=True))

    out: dict = {}
    optimizers = {
        "sgd": lambda: keras.optimizers.SGD(0.1),
        "momentum": lambda: keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True),
        "adam": lambda: "adam",
    }
    for name, optimizer in optimizers.items():
        task = KerasTask(
            model=lambda optimizer=optimizer: seed_model(optimizer()),
            data=data,
            eval_data=eval_data,
            epochs=2,
            batch_size=8,
            steps_per_epoch=3,
            seed=0,
        )
        initial = task.initial_parameters()
        warm = simulate(task, "sequential", initial, warm=True)
        # Cold clients (a Keras model built per instruction) are slow: checked for two only.
        adapter = warm if name == "momentum" else simulate(task, "sequential", initial)
        vectorized = simulate(task, "vectorized", initial)
        out[name] = {
            "moved": max_diff(initial, adapter.parameters),
            "vectorized_vs_adapter": max_diff(vectorized.parameters, adapter.parameters),
            "warm_vs_cold": max_diff(warm.parameters, adapter.parameters),
            "losses": [adapter.losses_distributed, vectorized.losses_distributed],
            "accuracy": [
                adapter.metrics_distributed["accuracy"],
                vectorized.metrics_distributed["accuracy"],
            ],
        }

    # The seed's own client keeps its compiled Adam between rounds when it is kept warm.
    class SeedClient(NumPyClient):
        def __init__(self, partition_id: int) -> None:
            self.model = seed_model("adam")
            self.x, self.y = data(partition_id, len(SIZES))

        def fit(self, parameters, config):
            self.model.set_weights(parameters)
            self.model.fit(self.x, self.y, batch_size=8, shuffle=False, verbose=0)
            return self.model.get_weights(), len(self.y), {}

        def evaluate(self, parameters, config):
            return 0.0, 1, {}

    def seed_client_fn(context):
        return SeedClient(context.partition_id)

    initial = seed_model("adam").get_weights()
    cold = simulate(seed_client_fn, "sequential", initial)
    warm = simulate(seed_client_fn, "sequential", initial, warm=True)
    out["stateful_warm_vs_cold"] = max_diff(cold.parameters, warm.parameters)

    refusals = {}
    for label, layers, optimizer in (
        ("dropout", [keras.layers.Dropout(0.5)], "adam"),
        ("batchnorm", [keras.layers.BatchNormalization()], "adam"),
        ("rmsprop", [], "rmsprop"),
    ):

        def factory(layers=layers, optimizer=optimizer):
            model = keras.Sequential([keras.Input(shape=(4,)), *layers, keras.layers.Dense(2)])
            model.compile(optimizer, "mse")
            return model

        try:
            task = KerasTask(model=factory, data=data)
            roost.engines.make_engine("vectorized", task, 2)
            refusals[label] = ""
        except roost.ConfigurationError as error:
            refusals[label] = str(error)
    out["refusals"] = refusals
    return out


@pytest.fixture
def run(keras_on_torch: dict) -> dict:
    return keras_on_torch["test_keras_task"]


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_the_vectorized_engine_trains_keras_like_the_adapter(run: dict, optimizer: str) -> None:
    result = run[optimizer]
    assert result["moved"] > 1e-3
    assert result["vectorized_vs_adapter"] < 1e-5
    adapter_losses, vectorized_losses = result["losses"]
    for (round_a, loss_a), (round_b, loss_b) in zip(adapter_losses, vectorized_losses, strict=True):
        assert round_a == round_b and loss_a == pytest.approx(loss_b, abs=1e-5)
    adapter_accuracy, vectorized_accuracy = result["accuracy"]
    for (round_a, value_a), (round_b, value_b) in zip(
        adapter_accuracy, vectorized_accuracy, strict=True
    ):
        assert round_a == round_b and value_a == pytest.approx(value_b, abs=1e-6)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_a_keras_tasks_clients_give_the_same_model_warm_and_cold(run: dict, optimizer: str):
    # A fresh optimizer state each round: nothing the client keeps changes its training.
    assert run[optimizer]["warm_vs_cold"] < 1e-6


def test_a_warm_seed_client_keeps_its_optimizer_state_and_trains_differently(run: dict):
    assert run["stateful_warm_vs_cold"] > 1e-4


def test_models_the_vectorized_engine_cannot_train_exactly_are_refused(run: dict):
    refusals = run["refusals"]
    assert "non-trainable variables" in refusals["dropout"]
    assert "non-trainable variables" in refusals["batchnorm"]
    assert "SGD or Adam" in refusals["rmsprop"]
    assert all("engine='sequential'" in reason for reason in refusals.values())
