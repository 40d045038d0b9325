"""One benchmark run of Flower (run with the Python of Flower's own virtual environment).

    benchmarks/.flower-venv/bin/python benchmarks/flower_run.py SCENARIO

Flower's `run_simulation` on Ray, one CPU per client, its FedAvg, and a NumPyClient that trains
with `workloads.train_plain`: the model, data, initial parameters and batch order of every other
runner. Prints one JSON line like `engine_run.py`.
"""

from __future__ import annotations

import json
import logging
import sys
import time

STARTED = time.perf_counter()

import numpy as np  # noqa: E402
import torch  # noqa: E402, F401 - imported before the clock starts, as in every torch runner
import workloads  # noqa: E402
from flwr.client import ClientApp, NumPyClient  # noqa: E402
from flwr.common import Context, ndarrays_to_parameters  # noqa: E402
from flwr.server import ServerApp, ServerAppComponents, ServerConfig  # noqa: E402
from flwr.server.strategy import FedAvg  # noqa: E402
from flwr.simulation import run_simulation  # noqa: E402
from workloads import SCENARIOS, Scenario  # noqa: E402

SCENARIO: Scenario = SCENARIOS[sys.argv[1]] if __name__ == "__main__" else SCENARIOS["cnn"]
_models: dict = {}
_final: dict = {}


class BenchClient(NumPyClient):
    def __init__(self, scenario: Scenario, partition_id: int, num_partitions: int) -> None:
        self.scenario = scenario
        self.partition_id = partition_id
        data = workloads.ClientData(scenario.model, scenario.samples_per_client)
        self.x, self.y = data(partition_id, num_partitions)

    def fit(self, parameters, config):
        scenario = self.scenario
        model = _models.get(scenario.model) or _models.setdefault(
            scenario.model, workloads.MODELS[scenario.model]()
        )
        trained = workloads.train_plain(
            model,
            parameters,
            self.x,
            self.y,
            scenario,
            int(config["server_round"]),
            self.partition_id,
        )
        return trained, len(self.y), {}


def make_apps(scenario: Scenario) -> tuple[ServerApp, ClientApp]:
    def client_fn(context: Context):
        return BenchClient(
            scenario,
            int(context.node_config["partition-id"]),
            int(context.node_config["num-partitions"]),
        ).to_client()

    def evaluate(server_round, parameters, config):
        if server_round == scenario.rounds:  # only the final model: the accuracy column
            _final["parameters"] = [np.asarray(p) for p in parameters]
        return None

    def server_fn(context: Context) -> ServerAppComponents:
        strategy = FedAvg(
            fraction_fit=scenario.fraction_fit,
            fraction_evaluate=0.0,
            min_fit_clients=scenario.cohort,
            min_evaluate_clients=0,
            min_available_clients=scenario.num_clients,
            initial_parameters=ndarrays_to_parameters(workloads.initial_parameters(scenario)),
            on_fit_config_fn=lambda server_round: {"server_round": server_round},
            evaluate_fn=evaluate,
        )
        config = ServerConfig(num_rounds=scenario.rounds)
        return ServerAppComponents(strategy=strategy, config=config)

    return ServerApp(server_fn=server_fn), ClientApp(client_fn=client_fn)


def main() -> None:
    logging.getLogger("flwr").setLevel(logging.WARNING)
    server_app, client_app = make_apps(SCENARIO)
    imported = time.perf_counter()
    run_simulation(
        server_app=server_app,
        client_app=client_app,
        num_supernodes=SCENARIO.num_clients,
        backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}},
    )
    finished = time.perf_counter()
    print(
        json.dumps(
            {
                "import_s": imported - STARTED,
                "run_s": finished - imported,
                "accuracy": workloads.accuracy(SCENARIO, _final["parameters"]),
            }
        )
    )


if __name__ == "__main__":
    main()
