"""One run of the seed tutorial's workload in a fresh process, on Flower, roost or a plain loop.

    python benchmarks/seed_run.py SCENARIO RUNNER      # SCENARIO: seed, seed-100, tutorial[-tf]
                                                       # RUNNER: flower, default, sequential,
                                                       #   process, warm, vectorized, loop

The workload is the seed tutorial's own code: a Keras ANN (Flatten → Dense 64 relu → Dense 64
relu → Dense 10 softmax, Adam, sparse categorical cross-entropy), 10,000 CIFAR-shaped images split
IID over the clients (10 % of each share kept for validation), a `NumPyClient` whose `fit` runs
`model.fit(..., epochs=1, batch_size=32, steps_per_epoch=3)` on a model its `client_fn` builds and
compiles, FedAvg with every client training and half of them evaluating each round. The
`tutorial` scenario is the tutorial's code unchanged: 5 clients, 5 rounds, and `fit` trains a
whole epoch over the client's share (57 steps of 32), as the tutorial's `model.fit` does;
`tutorial-tf` is the same on Keras' default backend, TensorFlow (`engines.py` sets
`KERAS_BACKEND` for each scenario).

Runners:
  flower      the script on Flower 1.42 (`flwr.simulation.run_simulation`, Ray, 1 CPU per client)
  default     the same script, imports changed to `roost.compat.flwr` (cold clients), on the
              engine roost chooses when the script names none (Keras clients: the process engine)
  sequential  the same, with `engine="sequential"` (one client after another, in this process)
  process     the same, with `engine="process"` (a worker per core, clients side by side)
  warm        the same, plus `warm_clients=True` (each partition's client is kept between rounds)
  vectorized  the seed's model as a `roost.tasks.KerasTask` on the vectorized engine
  loop        the compute limit: one Keras model reused for every client, the vectorized
              runner's arithmetic (set_weights, a fresh optimizer state, fit on the 3 batches the
              `KerasTask` draws, get_weights, FedAvg by hand, evaluate): both end with one model

Prints one JSON line: seconds spent importing and running, and the final model's accuracy on 1,000
held-out images. Keras runs on its torch backend (`KERAS_BACKEND=torch`, unless set) in every
runner. The images are a CIFAR-shaped stand-in made by NumPy (no download): a fixed random
template per class under noise, as uint8, so only the arithmetic's size matters, not CIFAR-10's
difficulty. They are drawn once into `benchmarks/.cache/seed-images.npz` before the clock
starts, and every runner's `load_data` reads them from there (as the tutorial reads CIFAR-10
from its dataset cache).
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

STARTED = time.perf_counter()
os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
import numpy as np  # noqa: E402

SEED = 0
NUM_IMAGES = 10_000
VALIDATION_SPLIT = 0.1
STEPS_PER_EPOCH = 3
BATCH_SIZE = 32


@dataclass(frozen=True)
class SeedScenario:
    name: str
    num_clients: int
    rounds: int
    steps_per_epoch: int | None = STEPS_PER_EPOCH  # None: whole epochs, as the tutorial has


SCENARIOS = {
    "seed": SeedScenario("seed", num_clients=5, rounds=5),
    "seed-100": SeedScenario("seed-100", num_clients=100, rounds=10),
    "tutorial": SeedScenario("tutorial", num_clients=5, rounds=5, steps_per_epoch=None),
    "tutorial-tf": SeedScenario("tutorial-tf", num_clients=5, rounds=5, steps_per_epoch=None),
}
RUNNERS = ("flower", "default", "sequential", "process", "warm", "vectorized", "loop")


# -- the tutorial's pieces (task.py), on stand-in images -------------------------------------------


def stand_in_images(count: int, stream: int) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-shaped uint8 images: a fixed random template per class, under noise."""
    templates = np.random.default_rng([SEED, 7]).integers(40, 216, size=(10, 32, 32, 3))
    rng = np.random.default_rng([SEED, stream])
    y = rng.integers(0, 10, count)
    noisy = templates[y] + rng.normal(scale=60.0, size=(count, 32, 32, 3))
    return np.clip(noisy, 0, 255).astype(np.uint8), y.astype(np.int64)


IMAGES_FILE = Path(__file__).resolve().parent / ".cache" / "seed-images.npz"
_IMAGES: dict[str, tuple[np.ndarray, np.ndarray]] = {}


def prepare_images() -> None:
    """Write the training images to `IMAGES_FILE` once, before any clock starts.

    Every runner then reads them from disk, as the tutorial reads CIFAR-10 from its dataset cache
    (Flower's Ray workers included, each in its own process): drawing them costs more than the
    5-client run's training, and that cost is not what the benchmark compares.
    """
    if IMAGES_FILE.exists():
        return
    IMAGES_FILE.parent.mkdir(exist_ok=True)
    x, y = stand_in_images(NUM_IMAGES, 1)
    partial = IMAGES_FILE.with_name(f"{IMAGES_FILE.stem}.{os.getpid()}.npz")
    np.savez(partial, x=x, y=y)
    os.replace(partial, IMAGES_FILE)  # whole or absent, should two runs prepare at once


def load_data(partition_id: int, num_partitions: int):
    """This client's (x_train, y_train), (x_val, y_val): an IID share, 10 % kept for validation."""
    if "train" not in _IMAGES:
        prepare_images()
        with np.load(IMAGES_FILE, allow_pickle=False) as archive:
            _IMAGES["train"] = archive["x"], archive["y"]
    x, y = _IMAGES["train"]
    order = np.random.default_rng(SEED).permutation(len(y))
    part = np.array_split(order, num_partitions)[partition_id]
    x_part = x[part].astype("float32") / 255.0
    y_part = y[part]
    split = int(len(part) * (1 - VALIDATION_SPLIT))
    return (x_part[:split], y_part[:split]), (x_part[split:], y_part[split:])


def load_model() -> keras.Model:
    model = keras.Sequential(
        [
            keras.Input(shape=(32, 32, 3)),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def weighted_average(metrics):
    accuracies = [num_examples * m["accuracy"] for num_examples, m in metrics]
    examples = [num_examples for num_examples, _ in metrics]
    return {"accuracy": sum(accuracies) / sum(examples)}


def accuracy(parameters) -> float:
    model = load_model()
    model.set_weights(parameters)
    x, y = stand_in_images(1000, 2)
    result = model.evaluate(x.astype("float32") / 255.0, y, verbose=0, return_dict=True)
    return float(result["accuracy"])


# -- the tutorial's simulation script, on Flower or (imports changed) on roost ---------------------


def fedavg_settings(scenario: SeedScenario) -> dict:
    """The tutorial's FedAvg: every client trains, half of them evaluate."""
    return {
        "fraction_fit": 1.0,
        "fraction_evaluate": 0.5,
        "min_fit_clients": scenario.num_clients,
        "min_evaluate_clients": max(1, scenario.num_clients // 2),
        "min_available_clients": scenario.num_clients,
        "evaluate_metrics_aggregation_fn": weighted_average,
    }


def run_script(
    scenario: SeedScenario, initial: list[np.ndarray], framework: str, options: dict
) -> list[np.ndarray]:
    """The seed's simulation.py, with `framework` ("flwr" or "roost.compat.flwr") as `fl`, and
    roost's `options` (engine, warm clients) added to its `run_simulation` call."""
    client_module = importlib.import_module(f"{framework}.client")
    common = importlib.import_module(f"{framework}.common")
    server = importlib.import_module(f"{framework}.server")
    strategies = importlib.import_module(f"{framework}.server.strategy")
    simulation = importlib.import_module(f"{framework}.simulation")
    final: dict = {}

    class FlowerClient(client_module.NumPyClient):
        def __init__(self, model, x_train, y_train, x_val, y_val):
            self.model = model
            self.x_train, self.y_train = x_train, y_train
            self.x_val, self.y_val = x_val, y_val

        def get_parameters(self, config):
            return self.model.get_weights()

        def fit(self, parameters, config):
            self.model.set_weights(parameters)
            self.model.fit(
                self.x_train,
                self.y_train,
                epochs=1,
                batch_size=BATCH_SIZE,
                steps_per_epoch=scenario.steps_per_epoch,
                verbose=0,
            )
            return self.model.get_weights(), len(self.x_train), {}

        def evaluate(self, parameters, config):
            self.model.set_weights(parameters)
            loss, accuracy = self.model.evaluate(self.x_val, self.y_val, verbose=0)
            return loss, len(self.x_val), {"accuracy": accuracy}

    def client_fn(context):
        partition_id = context.node_config["partition-id"]
        num_partitions = context.node_config["num-partitions"]
        (x_train, y_train), (x_val, y_val) = load_data(partition_id, num_partitions)
        return FlowerClient(load_model(), x_train, y_train, x_val, y_val).to_client()

    def keep_final(server_round, parameters, config):
        if server_round == scenario.rounds:  # only the final model: the accuracy column
            final["parameters"] = [np.asarray(p) for p in parameters]
        return None

    def server_fn(context):
        strategy = strategies.FedAvg(
            **fedavg_settings(scenario),
            initial_parameters=common.ndarrays_to_parameters(initial),
            evaluate_fn=keep_final,
        )
        config = server.ServerConfig(num_rounds=scenario.rounds)
        return server.ServerAppComponents(strategy=strategy, config=config)

    simulation.run_simulation(
        server_app=server.ServerApp(server_fn=server_fn),
        client_app=client_module.ClientApp(client_fn=client_fn),
        num_supernodes=scenario.num_clients,
        backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}},
        **options,
    )
    return final["parameters"]


ROOST_SCRIPT_OPTIONS = {
    "default": {},
    "sequential": {"engine": "sequential"},
    "process": {"engine": "process"},
    "warm": {"engine": "sequential", "warm_clients": True},
}


def run_vectorized(scenario: SeedScenario, initial: list[np.ndarray]) -> list[np.ndarray]:
    """The seed's model and data as a `KerasTask`, on roost's vectorized engine."""
    import roost
    from roost.tasks import KerasTask

    shares: dict[int, tuple] = {}  # one load_data per partition, as the loop below has

    def share(partition_id: int, num_partitions: int) -> tuple:
        if partition_id not in shares:
            shares[partition_id] = load_data(partition_id, num_partitions)
        return shares[partition_id]

    task = KerasTask(
        model=load_model,
        data=lambda partition_id, n: share(partition_id, n)[0],
        eval_data=lambda partition_id, n: share(partition_id, n)[1],
        batch_size=BATCH_SIZE,
        steps_per_epoch=STEPS_PER_EPOCH,
        seed=SEED,
    )
    strategy = roost.FedAvg(
        **fedavg_settings(scenario), initial_parameters=initial, on_fit_config_fn=task.fit_config
    )
    history = roost.run_simulation(
        task,
        scenario.num_clients,
        strategy=strategy,
        config=roost.ServerConfig(num_rounds=scenario.rounds),
        seed=SEED,
        engine="vectorized",
    )
    return history.parameters


def run_loop(scenario: SeedScenario, initial: list[np.ndarray]) -> list[np.ndarray]:
    """The compute limit: one compiled model for every client, FedAvg by hand.

    The arithmetic is the vectorized runner's, step for step: each fit starts from the optimizer's
    initial state (as a client whose model was just built) and trains on the examples the
    `KerasTask` picks, in its order (`default_rng([seed, round, partition])`'s permutation, the
    first `steps_per_epoch` batches), so both runners end with the same model.
    """
    model = load_model()
    optimizer = model.optimizer
    optimizer.build(model.trainable_variables)
    optimizer_start = [variable.numpy() for variable in optimizer.variables]
    parameters = initial
    data = [load_data(p, scenario.num_clients) for p in range(scenario.num_clients)]
    rng = np.random.default_rng(SEED)
    for server_round in range(1, scenario.rounds + 1):
        results = []
        for partition_id, ((x_train, y_train), _) in enumerate(data):
            model.set_weights(parameters)
            for variable, value in zip(optimizer.variables, optimizer_start, strict=True):
                variable.assign(value)
            order = np.random.default_rng([SEED, server_round, partition_id])
            used = order.permutation(len(y_train))[: STEPS_PER_EPOCH * BATCH_SIZE]
            model.fit(x_train[used], y_train[used], batch_size=BATCH_SIZE, shuffle=False, verbose=0)
            results.append((model.get_weights(), len(y_train)))
        total = sum(n for _, n in results)
        parameters = [
            sum(weights[i] * (n / total) for weights, n in results).astype("float32")
            for i in range(len(parameters))
        ]
        evaluating = rng.choice(scenario.num_clients, max(1, scenario.num_clients // 2), False)
        model.set_weights(parameters)
        for partition_id in evaluating:
            _, (x_val, y_val) = data[partition_id]
            model.evaluate(x_val, y_val, verbose=0)
    return parameters


def main() -> None:
    scenario, runner = SCENARIOS[sys.argv[1]], sys.argv[2]
    logging.basicConfig(level=logging.WARNING)  # keeps per-round INFO logs quiet
    logging.getLogger("flwr").setLevel(logging.WARNING)
    if runner != "flower":
        import roost  # noqa: F401 - imported before the clock starts, like flwr below
    else:
        import flwr.simulation  # noqa: F401
    keras.utils.set_random_seed(SEED)  # as the tutorial does: every runner starts from one model
    initial = load_model().get_weights()
    prepare_images()
    imported = time.perf_counter()
    if runner == "flower":
        parameters = run_script(scenario, initial, "flwr", {})
    elif runner in ROOST_SCRIPT_OPTIONS:
        options = ROOST_SCRIPT_OPTIONS[runner]
        parameters = run_script(scenario, initial, "roost.compat.flwr", options)
    elif runner == "vectorized":
        parameters = run_vectorized(scenario, initial)
    elif runner == "loop":
        parameters = run_loop(scenario, initial)
    else:
        raise SystemExit(f"unknown runner {runner!r}; choose one of {', '.join(RUNNERS)}")
    finished = time.perf_counter()
    print(
        json.dumps(
            {
                "import_s": imported - STARTED,
                "run_s": finished - imported,
                "accuracy": accuracy(parameters),
            }
        )
    )


if __name__ == "__main__":
    main()
