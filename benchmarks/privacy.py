"""What privacy costs in accuracy: the digits demo under central and local DP at ε ≈ 1, 3, 8, ∞.

    python benchmarks/privacy.py                      # 100 clients, q = 0.25, 30 rounds
    python benchmarks/privacy.py --rounds 50 --q 0.2 --epsilons 1 3 8

The bundled digits demo (softmax regression) with 100 clients, δ = 1e-5 and, each round, a cohort
drawn with probability q per client. For each target ε the noise multiplier σ is the least that
keeps ε within the target after the rounds run:

- central DP (`roost simulate --dp central`): DP-FedAvg, secret Poisson sampling at rate q,
  σ from `noise_multiplier_for` (the RDP accountant); ε is for the whole federation and any one
  client's participation.
- local DP (`roost simulate --dp local`): every client clips and noises its own update, σ from
  `local_noise_multiplier_for` so that a client taking part in every round stays within ε — a
  bound that holds against the server too, and so gains nothing from sampling.

ε = ∞ rows: the same clipping and sampling with σ = 0. Accuracy is the server's, on the held-out
test split, after the last round (mean over --seeds runs).
"""

from __future__ import annotations

import argparse
import logging
import math
import time

import numpy as np

import roost
from roost.apps.digits import make_client_fn, make_strategy
from roost.privacy import (
    LocalDPAccountant,
    LocalDPClientFn,
    local_noise_multiplier_for,
    noise_multiplier_for,
    with_central_dp,
)
from roost.settings import RunSettings
from roost.strategy.presets import preset


def central_run(settings: RunSettings, sigma: float, clip_norm: float, delta: float) -> float:
    strategy = with_central_dp(
        make_strategy(settings),
        noise_multiplier=sigma,
        clip_norm=clip_norm,
        expected_clients=round(settings.fraction_fit * settings.num_clients),
        num_clients=settings.num_clients,
        delta=delta,
    )
    return final_accuracy(make_client_fn(settings.seed), strategy, settings)


def local_run(settings: RunSettings, sigma: float, clip_norm: float, delta: float) -> float:
    accountant = LocalDPAccountant(sigma, delta=delta)
    strategy = preset("fedavg", like=make_strategy(settings), update_transforms=[accountant])
    client_fn = LocalDPClientFn(make_client_fn(settings.seed), clip_norm, sigma)
    return final_accuracy(client_fn, strategy, settings)


def final_accuracy(client_fn, strategy, settings: RunSettings) -> float:
    history = roost.run_simulation(
        client_fn,
        settings.num_clients,
        strategy=strategy,
        config=roost.ServerConfig(num_rounds=settings.num_rounds),
        seed=settings.seed,
    )
    return float(history.metrics_centralized["accuracy"][-1][1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--q", type=float, default=0.25, help="sampling rate per round")
    parser.add_argument("--clip-norm", type=float, default=1.0)
    parser.add_argument("--lr", type=float, default=0.5, help="the clients' learning rate")
    parser.add_argument("--local-epochs", type=int, default=2)
    parser.add_argument("--delta", type=float, default=1e-5)
    parser.add_argument("--epsilons", type=float, nargs="+", default=[1.0, 3.0, 8.0])
    parser.add_argument("--seeds", type=int, default=3, help="runs averaged per cell")
    args = parser.parse_args()
    # The ε = ∞ rows run central DP with σ = 0 on purpose; its warning would only repeat that.
    logging.getLogger("roost.privacy").setLevel(logging.ERROR)

    rows = []
    started = time.perf_counter()
    for target in [*args.epsilons, math.inf]:
        if math.isinf(target):
            central_sigma = local_sigma = 0.0
        else:
            central_sigma = noise_multiplier_for(target, args.rounds, args.delta, q=args.q)
            local_sigma = local_noise_multiplier_for(
                target, args.delta, rounds=args.rounds, discretization=1e-2
            )
        cells = []
        for run, sigma in ((central_run, central_sigma), (local_run, local_sigma)):
            accuracies = [
                run(settings(args, seed), sigma, args.clip_norm, args.delta)
                for seed in range(args.seeds)
            ]
            cells.append((sigma, float(np.mean(accuracies))))
        rows.append((target, cells))
    elapsed = time.perf_counter() - started

    print(
        f"digits, {args.clients} clients, {args.rounds} rounds, q = {args.q:g}, "
        f"C = {args.clip_norm:g}, δ = {args.delta:g}, {args.local_epochs} local epochs"
    )
    print(f"{'ε':>6} | {'central σ':>9} {'accuracy':>8} | {'local σ':>8} {'accuracy':>8}")
    print("-" * 48)
    for target, ((c_sigma, c_acc), (l_sigma, l_acc)) in rows:
        label = "∞" if math.isinf(target) else f"{target:g}"
        print(f"{label:>6} | {c_sigma:>9.3f} {c_acc:>8.3f} | {l_sigma:>8.2f} {l_acc:>8.3f}")
    print(f"({elapsed:.0f} s)")


def settings(args: argparse.Namespace, seed: int) -> RunSettings:
    return RunSettings(
        num_clients=args.clients,
        num_rounds=args.rounds,
        fraction_fit=args.q,
        fraction_evaluate=0.0,
        local_epochs=args.local_epochs,
        learning_rate=args.lr,
        seed=seed,
    )


if __name__ == "__main__":
    main()
