"""Terminals 2 and 3: a client holding one partition of the data.

    python examples/seed_tutorial/client.py --partition-id 0
    python examples/seed_tutorial/client.py --partition-id 1
"""

from __future__ import annotations

import argparse

from task import FlowerClient, load_data, load_model

import roost.compat.flwr as fl

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
parser.add_argument("--server", default="127.0.0.1:8080", help="host:port of the server")
parser.add_argument("--partition-id", type=int, required=True)
parser.add_argument("--num-partitions", type=int, default=2)
parser.add_argument("--num-images", type=int, default=10_000)
parser.add_argument("--download", action="store_true", help="download CIFAR-10 if not on disk")
args = parser.parse_args()

(x_train, y_train), (x_val, y_val) = load_data(args.partition_id, args.num_partitions,
                                               args.num_images, args.download)
fl.client.start_client(
    server_address=args.server,
    client=FlowerClient(load_model(), x_train, y_train, x_val, y_val).to_client(),
)
