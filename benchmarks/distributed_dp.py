"""Distributed DP under SecAgg+ against central DP at the same ε: digits, softmax and a torch MLP.

    python benchmarks/distributed_dp.py --models softmax --seeds 20   # 200 clients, 5 rounds
    python benchmarks/distributed_dp.py --models torch-mlp --seeds 10

Both columns train the same model with the same cohort (every client, every round), the same
clip norm C and rounds, at the same (ε, δ):

- central DP: DP-FedAvg (`with_central_dp`, a fixed cohort of all N clients, so no amplification
  by sampling), the server adds N(0, (σ·C)²) to the clipped sum; σ from `noise_multiplier_for`.
- distributed DP: `DistributedDP` with `SecureAggregation`: every client quantizes its clipped
  update and adds discrete Gaussian noise before masking; the server unmasks only the noised sum.
  z is the least (to 1e-3) whose accounted ε (Kairouz et al.'s bound, τ term included, composed as
  zCDP) stays within the target; `--min-survivors` is the n_min the noise is calibrated for.

Accuracy is the server's, on the held-out digits test split, after the last round: the mean over
--seeds runs ± its standard error (the noise makes single runs vary by several points). The
torch model is a 64-32-10 MLP trained by roost's PyTorch client.
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np

import roost
from roost.apps.digits import make_client_fn, make_strategy
from roost.privacy import DistributedDP, noise_multiplier_for, with_central_dp
from roost.privacy.distributed import epsilon_of_rho, round_rho
from roost.settings import RunSettings
from roost.strategy import Mean, SecureAggregation, Strategy
from roost.strategy.secure_noise import NoisePlan


def ddp_epsilon(z: float, args: argparse.Namespace, size: int) -> float:
    ddp = DistributedDP(z, args.clip_norm, args.min_survivors, args.clients, delta=args.delta)
    plan = NoisePlan.build(ddp, args.secagg_clip, args.bits, args.clients, size)
    rho = round_rho(plan.sensitivity, args.min_survivors, plan.variance, size)
    return epsilon_of_rho(args.rounds * rho, args.delta)


def ddp_multiplier(args: argparse.Namespace, size: int) -> float:
    low, high = 0.01, 1000.0
    while high - low > 1e-3:
        middle = (low + high) / 2
        low, high = (
            (middle, high) if ddp_epsilon(middle, args, size) > args.epsilon else (low, middle)
        )
    return high


def central_strategy(base: Strategy, args: argparse.Namespace, sigma: float) -> Strategy:
    return with_central_dp(
        base,
        noise_multiplier=sigma,
        clip_norm=args.clip_norm,
        expected_clients=args.clients,
        num_clients=args.clients,
        sampling="fixed",
        delta=args.delta,
    )


def distributed_strategy(base: Strategy, args: argparse.Namespace, z: float) -> Strategy:
    ddp = DistributedDP(z, args.clip_norm, args.min_survivors, args.clients, delta=args.delta)
    knobs = {
        key: getattr(base, key)
        for key in ("fraction_fit", "min_fit_clients", "min_available_clients", "on_fit_config_fn")
    }
    return Strategy(
        **knobs,
        fraction_evaluate=0.0,
        initial_parameters=base.initial_parameters,
        evaluate_fn=base.evaluate_fn,
        aggregator=Mean(),
        update_transforms=[ddp],
        secure_aggregation=SecureAggregation(clip_range=args.secagg_clip, bits=args.bits),
    )


def run(client_fn, strategy: Strategy, args: argparse.Namespace, seed: int) -> tuple[float, float]:
    history = roost.run_simulation(
        client_fn,
        args.clients,
        strategy=strategy,
        config=roost.ServerConfig(num_rounds=args.rounds),
        seed=seed,
    )
    assert history.privacy is not None
    return float(history.metrics_centralized["accuracy"][-1][1]), history.privacy.epsilon[-1][1]


def model(name: str, args: argparse.Namespace, seed: int):
    """(client_fn, base strategy) of the softmax demo or the torch MLP."""
    settings = RunSettings(
        num_clients=args.clients,
        num_rounds=args.rounds,
        fraction_fit=1.0,
        fraction_evaluate=0.0,
        local_epochs=args.local_epochs,
        learning_rate=args.lr,
        seed=seed,
    )
    if name == "softmax":
        return make_client_fn(seed), make_strategy(settings)
    from torch_mlp import mlp_client_fn, mlp_strategy

    return mlp_client_fn(seed, args), mlp_strategy(settings, seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epsilon", type=float, default=3.0)
    parser.add_argument("--delta", type=float, default=1e-5)
    parser.add_argument("--clip-norm", type=float, default=1.0)
    parser.add_argument("--lr", type=float, default=0.5, help="the clients' learning rate")
    parser.add_argument("--local-epochs", type=int, default=2)
    parser.add_argument("--min-survivors", type=int, default=None, help="default: all clients")
    parser.add_argument("--bits", type=int, default=32, help="SecAgg+ field bits")
    parser.add_argument("--secagg-clip", type=float, default=1.0, help="coordinate clip R")
    parser.add_argument("--seeds", type=int, default=10, help="runs averaged per cell")
    parser.add_argument("--models", nargs="+", default=["softmax", "torch-mlp"])
    args = parser.parse_args()
    args.min_survivors = args.min_survivors or args.clients
    logging.getLogger("roost").setLevel(logging.WARNING)

    print(
        f"digits, {args.clients} clients all in every round, {args.rounds} rounds, "
        f"C = {args.clip_norm:g}, ε = {args.epsilon:g}, δ = {args.delta:g}, "
        f"n_min = {args.min_survivors}, {args.bits}-bit SecAgg+"
    )
    print(
        f"{'model':>10} | {'central σ':>9} {'ε':>5} {'accuracy':>12} | {'DDP z':>6} {'ε':>5} "
        f"{'accuracy':>12} | {'time':>5}"
    )
    print("-" * 80)
    for name in args.models:
        started = time.perf_counter()
        client_fn, base = model(name, args, 0)
        size = sum(int(np.size(a)) for a in base.initial_parameters)
        sigma = noise_multiplier_for(
            args.epsilon,
            args.rounds,
            args.delta,
            sampling="fixed",
            cohort=args.clients,
            population=args.clients,
        )
        z = ddp_multiplier(args, size)
        cells = {"central": [], "ddp": []}
        for seed in range(args.seeds):
            client_fn, base = model(name, args, seed)
            cells["central"].append(run(client_fn, central_strategy(base, args, sigma), args, seed))
            cells["ddp"].append(run(client_fn, distributed_strategy(base, args, z), args, seed))
        (c_acc, c_eps), (d_acc, d_eps) = (np.mean(cells[k], axis=0) for k in ("central", "ddp"))
        c_se, d_se = (
            np.std(np.array(cells[k])[:, 0], ddof=1) / np.sqrt(args.seeds)
            for k in ("central", "ddp")
        )
        elapsed = time.perf_counter() - started
        print(
            f"{name:>10} | {sigma:>9.2f} {c_eps:>5.2f} {c_acc:>6.3f}±{c_se:.3f} | {z:>6.2f} "
            f"{d_eps:>5.2f} {d_acc:>6.3f}±{d_se:.3f} | {elapsed:>4.0f}s"
        )


if __name__ == "__main__":
    main()
