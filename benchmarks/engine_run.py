"""One benchmark run in a fresh process: a scenario on a roost engine or the plain loop.

    python benchmarks/engine_run.py SCENARIO RUNNER     # RUNNER: sequential, process, ray,
                                                        #   vectorized, numpy or loop
    python benchmarks/engine_run.py SCENARIO prepare    # cache the initial model (untimed)

Prints one JSON line: seconds spent importing and running, and the final accuracy. Called by
`benchmarks/engines.py`, which measures the whole process from the outside.
"""

from __future__ import annotations

import json
import logging
import sys
import time

STARTED = time.perf_counter()

import numpy as np  # noqa: E402
import workloads  # noqa: E402
from workloads import SCENARIOS, SEED, Scenario  # noqa: E402


def run_roost(scenario: Scenario, engine: str) -> tuple[list[np.ndarray], float, float]:
    import torch  # noqa: F401 - imported before the clock starts, like the loop's

    import roost
    from roost.tasks import SGD, Task

    imported = time.perf_counter()
    task = Task(
        model=workloads.MODELS[scenario.model],
        data=workloads.ClientData(scenario.model, scenario.samples_per_client),
        optimizer=SGD(lr=scenario.lr),
        epochs=scenario.epochs,
        batch_size=scenario.batch_size,
        seed=SEED,
    )
    strategy = roost.FedAvg(
        fraction_fit=scenario.fraction_fit,
        fraction_evaluate=0.0,
        min_fit_clients=scenario.cohort,
        min_available_clients=scenario.num_clients,
        initial_parameters=workloads.initial_parameters(scenario),
        on_fit_config_fn=task.fit_config,
    )
    history = roost.run_simulation(
        task,
        scenario.num_clients,
        strategy=strategy,
        config=roost.ServerConfig(num_rounds=scenario.rounds),
        seed=SEED,
        engine=engine,
    )
    return history.parameters, imported, time.perf_counter()


class NumpySoftmaxClient:
    """Softmax regression in NumPy, float32, laid out like `nn.Linear(64, 10)`.

    The same arithmetic as `workloads.train_plain` (mean cross-entropy, plain SGD, the batch order
    drawn from `(seed, round, client)`), so a process running it never imports torch.
    """

    def __init__(self, partition_id: int, x: np.ndarray, y: np.ndarray, scenario: Scenario):
        self.partition_id, self.x, self.y, self.scenario = partition_id, x, y, scenario

    def get_parameters(self, config):
        raise NotImplementedError("the benchmark gives the strategy its initial parameters")

    def fit(self, parameters, config):
        weight, bias = (p.copy() for p in parameters)
        rng = np.random.default_rng([SEED, int(config["server_round"]), self.partition_id])
        lr, size = np.float32(self.scenario.lr), self.scenario.batch_size
        for _ in range(self.scenario.epochs):
            order = rng.permutation(len(self.y))
            for start in range(0, len(self.y), size):
                batch = order[start : start + size]
                x, y = self.x[batch], self.y[batch]
                logits = x @ weight.T + bias
                logits -= logits.max(axis=1, keepdims=True)
                grad = np.exp(logits)
                grad /= grad.sum(axis=1, keepdims=True)
                grad[np.arange(len(y)), y] -= 1.0
                grad /= np.float32(len(y))
                weight -= lr * (grad.T @ x)
                bias -= lr * grad.sum(axis=0)
        return [weight, bias], len(self.y), {}

    def evaluate(self, parameters, config):
        raise NotImplementedError("the benchmark evaluates on the server")


def run_numpy(scenario: Scenario) -> tuple[list[np.ndarray], float, float]:
    """roost's sequential engine with NumPy clients: no torch in the process at all."""
    if scenario.model != "linear":
        raise SystemExit("the numpy runner has softmax regression only (digits scenarios)")
    import roost

    imported = time.perf_counter()
    data = workloads.ClientData(scenario.model)

    def client_fn(context: roost.Context) -> NumpySoftmaxClient:
        x, y = data(context.partition_id, context.num_partitions)
        return NumpySoftmaxClient(context.partition_id, x, y, scenario)

    strategy = roost.FedAvg(
        fraction_fit=scenario.fraction_fit,
        fraction_evaluate=0.0,
        min_fit_clients=scenario.cohort,
        min_available_clients=scenario.num_clients,
        initial_parameters=workloads.cached_initial_parameters(scenario),
        on_fit_config_fn=lambda server_round: {"server_round": server_round},
    )
    history = roost.run_simulation(
        client_fn,
        scenario.num_clients,
        strategy=strategy,
        config=roost.ServerConfig(num_rounds=scenario.rounds),
        seed=SEED,
        engine="sequential",
    )
    return history.parameters, imported, time.perf_counter()


def run_loop(scenario: Scenario) -> tuple[list[np.ndarray], float, float]:
    """The compute limit: one process, one model, clients one after another, FedAvg by hand."""
    import torch  # noqa: F401 - "run s" counts the run, not torch's import

    imported = time.perf_counter()
    model = workloads.MODELS[scenario.model]()
    data = workloads.ClientData(scenario.model, scenario.samples_per_client)
    parameters = workloads.initial_parameters(scenario)
    rng = np.random.default_rng(SEED)
    for server_round in range(1, scenario.rounds + 1):
        results = []
        for client in workloads.sample_cohort(rng, scenario):
            x, y = data(client, scenario.num_clients)
            trained = workloads.train_plain(model, parameters, x, y, scenario, server_round, client)
            results.append((trained, len(y)))
        parameters = workloads.weighted_mean(results)
    return parameters, imported, time.perf_counter()


def main() -> None:
    scenario, runner = SCENARIOS[sys.argv[1]], sys.argv[2]
    if runner == "prepare":
        workloads.save_initial_parameters(scenario)
        return
    logging.basicConfig(level=logging.WARNING)  # keeps roost's per-round INFO logs quiet
    if runner == "loop":
        parameters, imported, finished = run_loop(scenario)
    elif runner == "numpy":
        parameters, imported, finished = run_numpy(scenario)
    else:
        parameters, imported, finished = run_roost(scenario, runner)
    print(
        json.dumps(
            {
                "import_s": imported - STARTED,
                "run_s": finished - imported,
                "accuracy": workloads.accuracy(scenario, parameters),
            }
        )
    )


if __name__ == "__main__":
    main()
