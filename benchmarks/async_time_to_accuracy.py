"""Virtual time to a target accuracy with stragglers: FedAvg, FedAvg with a deadline, FedBuff.

Clients' speeds are heavy-tailed: a share of them (10 % by default, chosen by the seed) is 10x
slower in compute and bandwidth (`roost.ClientProfiles.heavy_tailed`). Every run is on the
simulated clock, so the table compares virtual seconds, not this machine's speed:

- FedAvg, wait for all: each round samples `--cohort` clients and waits for the slowest;
- FedAvg with a deadline: the same, but a round waits `--deadline` virtual seconds at most (later
  clients are timeouts, left out of the round);
- FedBuff: K = `--concurrency` clients in flight, an aggregation every B = `--buffer-size`
  arrivals, polynomial staleness (1 + s)^-0.5.

Two workloads on scikit-learn's digits (the demo's split): the demo's softmax regression (NumPy
clients) and a small CNN on the 8x8 images (PyTorch clients). The table gives the first virtual
time at which the centralized test accuracy reaches `--target`, the server steps and client
updates it took, and the wall time of the whole run.

    python benchmarks/async_time_to_accuracy.py                # both workloads
    python benchmarks/async_time_to_accuracy.py --workload softmax --clients 50
"""

from __future__ import annotations

import argparse
import logging
import time
from typing import Any

import numpy as np

import roost
from roost.apps.digits import make_client_fn
from roost.apps.digits.client import client_data
from roost.apps.digits.strategy import strategy_knobs
from roost.data.bundled_digits import load_digits_split
from roost.settings import RunSettings


def softmax_workload(settings: RunSettings) -> tuple[Any, dict[str, Any]]:
    """The demo's clients and knobs (initial model, centralized evaluation, fit config)."""
    knobs = strategy_knobs(settings)
    return make_client_fn(settings.seed), knobs


class CNNData:
    """A partition's digits as (n, 1, 8, 8) images for the CNN (the demo's split)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def __call__(self, partition_id: int, num_partitions: int) -> tuple[np.ndarray, np.ndarray]:
        train, _ = client_data(partition_id, num_partitions, self.seed)
        return train.x.reshape(-1, 1, 8, 8).astype(np.float32), train.y.astype(np.int64)


def make_cnn() -> Any:
    """Conv 3x3 (8 channels), ReLU, 2x2 max-pool, linear 128 -> 10: 1,378 parameters."""
    import torch

    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(8 * 4 * 4, 10),
    )


def cnn_workload(settings: RunSettings) -> tuple[Any, dict[str, Any]]:
    """The CNN as a `roost.Task` (each client a TorchClient), evaluated on the test split."""
    import torch

    torch.set_num_threads(1)  # tiny batches: threads cost more than they save
    task = roost.Task(
        model=make_cnn,
        data=CNNData(settings.seed),
        optimizer=roost.SGD(lr=settings.learning_rate),
        epochs=settings.local_epochs,
        batch_size=settings.batch_size,
        seed=settings.seed,
    )
    _, test = load_digits_split(seed=settings.seed)
    images = torch.tensor(test.x.reshape(-1, 1, 8, 8), dtype=torch.float32)
    labels = torch.tensor(test.y)
    model = make_cnn()

    def evaluate(server_round: int, parameters: Any, config: Any) -> tuple[float, dict]:
        state = dict(zip(model.state_dict(), (torch.as_tensor(p) for p in parameters), strict=True))
        model.load_state_dict(state)
        with torch.no_grad():
            logits = model(images)
        loss = float(torch.nn.functional.cross_entropy(logits, labels))
        return loss, {"accuracy": float((logits.argmax(1) == labels).float().mean())}

    knobs = {
        **strategy_knobs(settings),
        "initial_parameters": task.initial_parameters(),
        "evaluate_fn": evaluate,
    }
    return task, knobs


WORKLOADS = {"softmax": softmax_workload, "cnn": cnn_workload}


def time_to_target(history: roost.History, target: float) -> tuple[float | None, int | None]:
    """The first virtual time (and server step) at which the centralized accuracy >= target."""
    times = {record.server_round: record.virtual_time for record in history.rounds}
    for step, accuracy in history.metrics_centralized.get("accuracy", []):
        if step > 0 and float(accuracy) >= target:
            return times[step], step
    return None, None


def run_one(args: argparse.Namespace, workload: str, method: str) -> dict[str, Any]:
    settings = RunSettings(
        num_clients=args.clients,
        seed=args.seed,
        learning_rate=args.lr,
        local_epochs=args.local_epochs,
        fraction_evaluate=0.0,
    )
    client_fn, knobs = WORKLOADS[workload](settings)
    knobs = {**knobs, "fraction_evaluate": 0.0, "min_evaluate_clients": 0}
    profiles = roost.ClientProfiles.heavy_tailed(
        args.clients, args.slow_fraction, args.slowdown, seed=args.seed
    )
    deadline = None
    if method == "fedbuff":
        strategy: roost.Strategy = roost.FedBuff(
            concurrency=args.concurrency, buffer_size=args.buffer_size, **knobs
        )
        steps = args.aggregations
    else:
        knobs.update(fraction_fit=args.cohort / args.clients, min_fit_clients=args.cohort)
        strategy = roost.FedAvg(**knobs)
        steps = args.rounds
        deadline = args.deadline if method == "fedavg-deadline" else None
    started = time.perf_counter()
    history = roost.run_simulation(
        client_fn,
        args.clients,
        strategy=strategy,
        config=roost.ServerConfig(num_rounds=steps),
        seed=args.seed,
        engine="sequential",
        clock=roost.VirtualClock(profiles, deadline),
    )
    wall = time.perf_counter() - started
    reached, step = time_to_target(history, args.target)
    updates = sum(r.fit_results for r in history.rounds[: step or len(history.rounds)])
    if method == "fedbuff" and step is not None:
        updates = step * args.buffer_size  # arrivals aggregated (dispatches run ahead of them)
    final = history.metrics_centralized["accuracy"][-1][1]
    return {
        "workload": workload,
        "method": method,
        "reached": reached,
        "step": step,
        "updates": updates,
        "final": float(final),
        "end": history.rounds[-1].virtual_time,
        "wall": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=[*WORKLOADS, "both"], default="both")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--cohort", type=int, default=30, help="FedAvg's clients per round")
    parser.add_argument("--rounds", type=int, default=40, help="FedAvg's rounds")
    parser.add_argument("--deadline", type=float, default=1.0, help="virtual seconds per round")
    parser.add_argument("--concurrency", type=int, default=30, help="FedBuff's K")
    parser.add_argument("--buffer-size", type=int, default=10, help="FedBuff's B")
    parser.add_argument("--aggregations", type=int, default=120, help="FedBuff's server steps")
    parser.add_argument("--slow-fraction", type=float, default=0.1)
    parser.add_argument("--slowdown", type=float, default=10.0)
    parser.add_argument("--target", type=float, default=0.85)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--local-epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # roost logs INFO (and every timeout) otherwise
    workloads = list(WORKLOADS) if args.workload == "both" else [args.workload]
    print(
        f"{args.clients} clients, {args.slow_fraction:.0%} of them {args.slowdown:g}x slower; "
        f"target accuracy {args.target:g}; FedAvg {args.cohort} clients/round, deadline "
        f"{args.deadline:g} s; FedBuff K={args.concurrency}, B={args.buffer_size}\n"
    )
    print(
        "| workload | method | virtual s to target | server steps | client updates | "
        "final accuracy | virtual s at end | wall s |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for workload in workloads:
        for method in ("fedavg", "fedavg-deadline", "fedbuff"):
            row = run_one(args, workload, method)
            reached = "not reached" if row["reached"] is None else f"{row['reached']:.1f}"
            print(
                f"| {workload} | {method} | {reached} | {row['step'] or '-'} | "
                f"{row['updates']} | {row['final']:.3f} | {row['end']:.1f} | {row['wall']:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
