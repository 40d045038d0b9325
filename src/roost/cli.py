"""The `roost` command line: `roost simulate` runs the bundled digits demo (or your own app)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from roost.errors import RoostError


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from roost.apps.digits import DemoSettings

    defaults = DemoSettings()
    parser = argparse.ArgumentParser(
        prog="roost", description="roost: federated learning, simulated or deployed."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    simulate = commands.add_parser(
        "simulate",
        help="simulate a federation on this machine (default: the bundled digits demo)",
        description="Simulate FedAvg over softmax regression on scikit-learn's digits, "
        "split IID across clients, with centralized evaluation on a held-out test split.",
    )
    simulate.add_argument("--clients", type=_positive_int, default=defaults.num_clients,
                          help="number of clients (default: %(default)s)")
    simulate.add_argument("--rounds", type=_positive_int, default=defaults.num_rounds,
                          help="number of federated rounds (default: %(default)s)")
    simulate.add_argument("--fraction-fit", type=_fraction, default=defaults.fraction_fit,
                          help="share of clients trained per round (default: %(default)s)")
    simulate.add_argument("--fraction-evaluate", type=_fraction,
                          default=defaults.fraction_evaluate,
                          help="share of clients evaluating per round (default: %(default)s)")
    simulate.add_argument("--local-epochs", type=_positive_int, default=defaults.local_epochs,
                          help="local epochs per round (default: %(default)s)")
    simulate.add_argument("--batch-size", type=_positive_int, default=defaults.batch_size,
                          help="local mini-batch size (default: %(default)s)")
    simulate.add_argument("--lr", type=_positive_float, default=defaults.learning_rate,
                          help="local SGD learning rate (default: %(default)s)")
    simulate.add_argument("--seed", type=int, default=defaults.seed,
                          help="seed for data split, sampling and local shuffling "
                          "(default: %(default)s)")
    simulate.add_argument("--round-timeout", type=_positive_float, default=None,
                          help="seconds a client may take per instruction (default: no limit)")
    simulate.add_argument("--out", metavar="DIR", default=None,
                          help="write DIR/history.json and DIR/model.npz")
    simulate.add_argument("--quiet", action="store_true", help="only print the final summary")
    simulate.set_defaults(handler=_simulate)
    return parser


def _simulate(args: argparse.Namespace) -> int:
    from rich.console import Console

    from roost.apps.digits import DemoSettings, check_settings, make_client_fn, make_strategy
    from roost.log import ensure_logging
    from roost.outputs import save_run
    from roost.report import history_table
    from roost.server.loop import ServerConfig
    from roost.simulation import run_simulation

    console = Console(stderr=False)
    ensure_logging(logging.WARNING if args.quiet else logging.INFO, console=console)
    settings = DemoSettings(
        num_clients=args.clients,
        num_rounds=args.rounds,
        fraction_fit=args.fraction_fit,
        fraction_evaluate=args.fraction_evaluate,
        local_epochs=args.local_epochs,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        seed=args.seed,
    )
    check_settings(settings)
    history = run_simulation(
        make_client_fn(settings.seed),
        settings.num_clients,
        strategy=make_strategy(settings),
        config=ServerConfig(num_rounds=settings.num_rounds, round_timeout=args.round_timeout),
        seed=settings.seed,
    )
    console.print(history_table(history))
    if args.out:
        for path in save_run(args.out, history):
            console.print(f"wrote {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `roost` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except RoostError as error:
        print(f"roost: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("roost: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
