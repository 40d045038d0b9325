"""The tutorial's simulation: 5 clients, FedAvg, Keras on CIFAR-10, on one machine.

roost chooses how the clients run (the first log line names the engine and why); as in the
tutorial, the script needs no `if __name__ == "__main__":` guard, on worker processes too.

    python examples/seed_tutorial/simulation.py                  # the tutorial's sizes
    python examples/seed_tutorial/simulation.py --rounds 3 --out results/
"""

from __future__ import annotations

import argparse

import keras
from task import FlowerClient, initial_weights, load_data, load_model, weighted_average

import roost.compat.flwr as fl
from roost.compat.flwr.client import ClientApp
from roost.compat.flwr.common import Context, ndarrays_to_parameters
from roost.compat.flwr.server import ServerApp, ServerAppComponents, ServerConfig
from roost.compat.flwr.server.strategy import FedAvg
from roost.compat.flwr.simulation import run_simulation

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
parser.add_argument("--num-clients", type=int, default=5)
parser.add_argument("--num-images", type=int, default=10_000)
parser.add_argument("--rounds", type=int, default=5)
parser.add_argument("--epochs", type=int, default=1)
parser.add_argument("--download", action="store_true", help="download CIFAR-10 if not on disk")
parser.add_argument("--out", default=None, help="write history.json, history.csv, plot.png here")
args = parser.parse_args()
keras.utils.set_random_seed(0)


def client_fn(context: Context) -> fl.client.Client:
    partition_id = context.node_config["partition-id"]
    num_partitions = context.node_config["num-partitions"]
    (x_train, y_train), (x_val, y_val) = load_data(partition_id, num_partitions, args.num_images,
                                                   args.download)
    model = load_model()
    return FlowerClient(model, x_train, y_train, x_val, y_val, epochs=args.epochs).to_client()


client = ClientApp(client_fn=client_fn)


def server_fn(context: Context) -> ServerAppComponents:
    strategy = FedAvg(
        fraction_fit=1.0,
        fraction_evaluate=0.5,
        min_fit_clients=args.num_clients,
        min_evaluate_clients=max(1, args.num_clients // 2),
        min_available_clients=args.num_clients,
        evaluate_metrics_aggregation_fn=weighted_average,
        initial_parameters=ndarrays_to_parameters(initial_weights()),
    )
    return ServerAppComponents(strategy=strategy, config=ServerConfig(num_rounds=args.rounds))


server = ServerApp(server_fn=server_fn)

history = run_simulation(
    server_app=server,
    client_app=client,
    num_supernodes=args.num_clients,
    backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}},
    seed=0,
)
print(history)
if args.out:
    from roost.outputs import save_run

    for path in save_run(args.out, history):
        print(f"wrote {path}")
