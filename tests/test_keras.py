"""The Keras adapter, run in a fresh process per backend (Keras picks its backend at import time).

`_worker()` below runs every check in a subprocess with `KERAS_BACKEND` set (keras_checks.py) and
returns the numbers the tests assert on. Torch is the default backend here, in one process with
test_keras_task's checks; one run with TensorFlow's `tf.keras` (the adapter's arithmetic, without
the federated run) is marked slow and needs `tensorflow` installed.
"""

from __future__ import annotations

import importlib.util
import os
import sys

import pytest
from keras_checks import run_keras_checks

# Keras runs in the subprocesses only: checking it is installed without importing it here saves
# every pytest worker a TensorFlow import (Keras' default backend) at collection.
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("keras") is None, reason="keras is not installed"
)


def _worker() -> dict:  # runs in the subprocess (keras_checks)
    import logging

    import numpy as np

    if os.environ["KERAS_BACKEND"] == "tensorflow":
        import tensorflow as tf

        keras = tf.keras  # TensorFlow's own Keras, as a tf.keras user has it
    else:
        # On torch, keep TensorFlow out of this process: keras.utils.set_random_seed imports it
        # (when installed) only to seed it, about 10 s of a Keras test's start-up.
        sys.modules["tensorflow"] = None  # type: ignore[assignment]
        import keras

    import roost
    from roost.client.keras import KerasClient
    from roost.data import iid_partition
    from roost.data.bundled_digits import load_digits_split

    logging.getLogger("roost").setLevel(logging.WARNING)
    keras.utils.set_random_seed(0)
    train, test = load_digits_split(seed=0)

    def make_model() -> keras.Model:
        # The tutorial's network, sized for 8×8 digits instead of 32×32×3 images.
        model = keras.Sequential(
            [
                keras.Input(shape=(64,)),
                keras.layers.Dense(64, activation="relu"),
                keras.layers.Dense(64, activation="relu"),
                keras.layers.Dense(10, activation="softmax"),
            ]
        )
        model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
        return model

    out: dict = {"backend": keras.backend.backend(), "keras_module": keras.__name__}
    x, y = train.x[:256].astype("float32"), train.y[:256]

    # 1. Parameters are get_weights(), in order.
    model = make_model()
    client = KerasClient(model, x, y, shuffle=False)
    params = client.get_parameters({})
    out["param_shapes"] = [list(p.shape) for p in params]
    out["param_dtypes"] = sorted({str(p.dtype) for p in params})

    # 2. fit == a plain Keras fit from the same weights with the same schedule.
    start = [p.copy() for p in params]
    updated, n, fit_metrics = client.fit(start, {"local_epochs": 2, "batch_size": 16})
    reference = make_model()
    reference.set_weights(start)
    history = reference.fit(x, y, epochs=2, batch_size=16, shuffle=False, verbose=0)
    out["fit_max_diff"] = max(
        float(np.abs(a - b).max()) for a, b in zip(updated, reference.get_weights(), strict=True)
    )
    out["fit_moved"] = max(float(np.abs(a - b).max()) for a, b in zip(updated, start, strict=True))
    out["fit_n"] = n
    out["fit_metrics"] = fit_metrics
    out["reference_last_loss"] = float(history.history["loss"][-1])
    steps_model = make_model()
    KerasClient(steps_model, x, y).fit(start, {"epochs": 3, "batch_size": 8, "steps_per_epoch": 5})
    out["optimizer_steps"] = int(
        steps_model.optimizer.iterations.numpy()
        if hasattr(steps_model.optimizer.iterations, "numpy")
        else steps_model.optimizer.iterations
    )

    # 3. evaluate == cross-entropy and accuracy computed with NumPy from predicted probabilities.
    xv, yv = train.x[256:356].astype("float32"), train.y[256:356]
    loss, n_val, metrics = KerasClient(make_model(), x, y, xv, yv).evaluate(updated, {})
    probe = make_model()
    probe.set_weights(updated)
    p = np.clip(np.asarray(probe.predict(xv, verbose=0), dtype=np.float64), 1e-7, 1 - 1e-7)
    out["eval"] = {
        "loss": loss,
        "n": n_val,
        "metrics": metrics,
        "numpy_loss": float(-np.log(p[np.arange(len(yv)), yv]).mean()),
        "numpy_accuracy": float((p.argmax(axis=1) == yv).mean()),
    }

    # 4. Federated: 5 clients, FedAvg, centralized accuracy on the held-out digits. Run on the
    # torch backend only: the adapter's arithmetic is backend-specific and checked above, the round
    # loop is not, and TensorFlow Keras federates in the seed tutorial's test (test_examples).
    if os.environ.get("ROOST_TEST_FEDERATED") == "0":
        return out
    parts = iid_partition(len(train.y), 5, 0)

    def client_fn(context: roost.Context) -> KerasClient:
        part = parts[context.partition_id]
        return KerasClient(
            make_model(), train.x[part].astype("float32"), train.y[part], epochs=3, batch_size=32
        )

    evaluator = make_model()

    def evaluate(server_round, parameters, config):
        evaluator.set_weights(parameters)
        result = evaluator.evaluate(test.x.astype("float32"), test.y, verbose=0, return_dict=True)
        return float(result["loss"]), {"accuracy": float(result["accuracy"])}

    strategy = roost.FedAvg(
        initial_parameters=make_model().get_weights(),
        evaluate_fn=evaluate,
        min_fit_clients=5,
        min_available_clients=5,
    )
    # Warm clients: each client's model is built, compiled and traced once, not every round
    # (the cold path is the same adapter; test_engines_warm compares the two).
    fed = roost.run_simulation(
        client_fn,
        5,
        strategy=strategy,
        config=roost.ServerConfig(num_rounds=5),
        seed=0,
        warm_clients=True,
    )
    out["federated_accuracy"] = fed.metrics_centralized["accuracy"]
    out["federated_loss_distributed"] = fed.losses_distributed
    return out


def _check(out: dict, backend: str, federated: bool = True) -> None:
    assert out["backend"] == backend
    assert out["keras_module"].endswith("_tf_keras.keras" if backend == "tensorflow" else "keras")
    assert out["param_shapes"] == [[64, 64], [64], [64, 64], [64], [64, 10], [10]]
    assert out["param_dtypes"] == ["float32"]
    # The adapter trains exactly like Keras does from the same start.
    assert out["fit_moved"] > 1e-3
    assert out["fit_max_diff"] < 1e-5
    assert out["fit_n"] == 256
    assert out["fit_metrics"]["train_loss"] == pytest.approx(out["reference_last_loss"], rel=1e-4)
    assert 0.0 <= out["fit_metrics"]["train_accuracy"] <= 1.0
    assert out["optimizer_steps"] == 15  # 3 epochs × steps_per_epoch 5
    ev = out["eval"]
    assert ev["n"] == 100
    assert ev["loss"] == pytest.approx(ev["numpy_loss"], rel=1e-3)
    assert ev["metrics"]["accuracy"] == pytest.approx(ev["numpy_accuracy"])
    if not federated:
        return
    accuracy = out["federated_accuracy"]
    assert [r for r, _ in accuracy] == [0, 1, 2, 3, 4, 5]
    assert accuracy[0][1] < 0.3
    assert accuracy[-1][1] >= 0.85


# Run with test_keras_task's checks in one process (the conftest fixture keras_on_torch): one
# xdist group keeps both files' tests on the worker that made it.
@pytest.mark.xdist_group("keras_torch")
def test_keras_adapter_on_torch_backend(keras_on_torch: dict) -> None:
    _check(keras_on_torch["test_keras"], "torch")


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("tensorflow") is None,
    reason="tensorflow is not installed (pip install tensorflow-cpu)",
)
def test_keras_adapter_on_tensorflow_backend() -> None:
    out = run_keras_checks(["test_keras"], "tensorflow", timeout=600, ROOST_TEST_FEDERATED="0")[
        "test_keras"
    ]
    _check(out, "tensorflow", federated=False)
