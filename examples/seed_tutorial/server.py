"""Terminal 1 of 3: the server. Start it, then two clients (client.py) in two more terminals.

    python examples/seed_tutorial/server.py --rounds 3
"""

from __future__ import annotations

import argparse

from task import initial_weights, weighted_average

import roost.compat.flwr as fl
from roost.compat.flwr.common import ndarrays_to_parameters
from roost.compat.flwr.server.strategy import FedAvg

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
parser.add_argument("--address", default="0.0.0.0:8080", help="host:port to listen on")
parser.add_argument("--rounds", type=int, default=3)
parser.add_argument("--min-clients", type=int, default=2)
parser.add_argument("--out", default=None, help="write history.json, history.csv, plot.png here")
args = parser.parse_args()

strategy = FedAvg(
    fraction_fit=1.0,
    fraction_evaluate=1.0,
    min_fit_clients=args.min_clients,
    min_evaluate_clients=args.min_clients,
    min_available_clients=args.min_clients,
    evaluate_metrics_aggregation_fn=weighted_average,
    initial_parameters=ndarrays_to_parameters(initial_weights()),
)
history = fl.server.start_server(
    server_address=args.address,
    config=fl.server.ServerConfig(num_rounds=args.rounds),
    strategy=strategy,
    out_dir=args.out,  # roost's addition: history.json, model.npz, history.csv, plot.png
)
print(history)
