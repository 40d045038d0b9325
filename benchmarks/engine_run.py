"""One benchmark run in a fresh process: a scenario on a roost engine or the plain loop.

    python benchmarks/engine_run.py SCENARIO RUNNER     # RUNNER: sequential, process, ray,
                                                        #         vectorized or loop

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


def run_loop(scenario: Scenario) -> tuple[list[np.ndarray], float, float]:
    """The compute limit: one process, one model, clients one after another, FedAvg by hand."""
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
    logging.basicConfig(level=logging.WARNING)  # keeps roost's per-round INFO logs quiet
    if runner == "loop":
        parameters, imported, finished = run_loop(scenario)
    else:
        parameters, imported, finished = run_roost(scenario, runner)
    print(json.dumps({
        "import_s": imported - STARTED,
        "run_s": finished - imported,
        "accuracy": workloads.accuracy(scenario, parameters),
    }))


if __name__ == "__main__":
    main()
