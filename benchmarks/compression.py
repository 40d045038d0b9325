"""Bytes per round against final accuracy, for each compression setting, on the digits demo.

    python benchmarks/compression.py                     # 10 clients, 20 rounds, seeds 0 1 2
    python benchmarks/compression.py --rounds 5 --seeds 0   # a quick look

Every setting runs the bundled digits demo (softmax regression, 650 float64 parameters, the
demo's data split and local training) with FedAvg and `compression=` that setting, on the
sequential engine, once per seed. "bytes up" is what one client sends per round (array bytes, the
payload of the wire's chunk frames), read from the run's `History.measurements` (`bytes_up` over
the round's fit results); "bytes down" the model each client receives. The first row, `none`,
sends the update uncompressed in the model's dtype, the bytes an uncompressed round sends; its
accuracy is checked against a run without compression. Accuracy is the centralized test
accuracy after the last round, the mean over the seeds (min–max in brackets).
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np

import roost
from roost.apps.digits.client import make_client_fn
from roost.apps.digits.strategy import strategy_knobs
from roost.settings import RunSettings

SETTINGS = (
    *("none", "q8", "q4", "q2", "q1", "rot-q8", "rot-q4", "rot-q2", "rot-q1"),
    *("topk:0.1", "topk:0.01"),
)


def run(compression: str | None, clients: int, rounds: int, seed: int) -> roost.History:
    """One seeded run of the digits demo with `compression` (None: no compression)."""
    settings = RunSettings(num_clients=clients, num_rounds=rounds, seed=seed, fraction_evaluate=0)
    strategy = roost.FedAvg(**strategy_knobs(settings), compression=compression)
    return roost.run_simulation(
        make_client_fn(seed),
        clients,
        strategy=strategy,
        config=roost.ServerConfig(num_rounds=rounds),
        seed=seed,
        engine="sequential",
    )


def per_client(history: roost.History, name: str) -> float:
    """The measured bytes of `name` per client per round, the same in every round."""
    counts = [r.fit_results for r in history.rounds]
    values = {v / n for (_, v), n in zip(history.measurements[name], counts, strict=True)}
    assert len(values) == 1, f"{name} differs between rounds: {values}"
    return values.pop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)  # the table only, not every round
    start = time.perf_counter()
    plain = [run(None, args.clients, args.rounds, seed) for seed in args.seeds]
    plain_accuracy = [h.metrics_centralized["accuracy"][-1][1] for h in plain]
    rows, baseline = [], None
    for setting in SETTINGS:
        histories = [run(setting, args.clients, args.rounds, seed) for seed in args.seeds]
        accuracy = [h.metrics_centralized["accuracy"][-1][1] for h in histories]
        up, down = per_client(histories[0], "bytes_up"), per_client(histories[0], "bytes_down")
        if setting == "none":
            baseline = up
            assert np.allclose(accuracy, plain_accuracy, atol=1e-9), (accuracy, plain_accuracy)
        rows.append((setting, up, down, accuracy))
    assert baseline is not None
    print(
        f"digits, {args.clients} clients, {args.rounds} rounds, FedAvg, seeds "
        f"{' '.join(map(str, args.seeds))}; uncompressed run's accuracy "
        f"{np.mean(plain_accuracy):.4f}\n"
    )
    print("| compression | bytes up per client per round | smaller by | bytes down | accuracy |")
    print("|---|---:|---:|---:|---|")
    for setting, up, down, accuracy in rows:
        spread = f"{min(accuracy):.4f}–{max(accuracy):.4f}"
        print(
            f"| {setting} | {up:,.0f} | {baseline / up:.1f}× | {down:,.0f} | "
            f"{np.mean(accuracy):.4f} ({spread}) |"
        )
    print(f"\n{time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
