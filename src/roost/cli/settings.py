"""The round and local-training options `roost simulate` and `roost server` share.

`add_run_options` adds them to a command; `settings_from_args` reads them back as one
`RunSettings`, which the command hands to its app; `server_config` is the round loop's part of them.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from typing import Any

from roost.cli.dp_options import PrivacySettings, privacy_settings
from roost.cli.options import fraction, positive_float, positive_int
from roost.cli.secagg_options import secure_aggregation
from roost.server.loop import ServerConfig
from roost.strategy.secure import SecureAggregation


@dataclass(frozen=True)
class RunSettings:
    """What the command line asks of a run; an app maps these onto its clients and strategy.

    Args:
        num_clients: clients in the federation (`roost server`: the clients it waits for).
        num_rounds: federated rounds.
        fraction_fit: share of the clients trained per round.
        fraction_evaluate: share of the clients evaluating per round.
        local_epochs: local epochs per round.
        batch_size: local mini-batch size.
        learning_rate: the clients' local learning rate.
        seed: seed of client sampling, the data split and local shuffling.
        privacy: what `--dp` asks (None: no differential privacy).
        secure_aggregation: what `--secagg` asks (None: updates in the clear).
    """

    num_clients: int = 10
    num_rounds: int = 5
    fraction_fit: float = 1.0
    fraction_evaluate: float = 1.0
    local_epochs: int = 1
    batch_size: int = 16
    learning_rate: float = 0.5
    seed: int = 0
    privacy: PrivacySettings | None = None
    secure_aggregation: SecureAggregation | None = None


def add_run_options(parser: argparse.ArgumentParser, *, app_only: bool = False) -> None:
    """Add the round and local-training options; `app_only` marks those only the app reads."""
    defaults = RunSettings()
    parser.add_argument(
        "--rounds",
        type=positive_int,
        default=defaults.num_rounds,
        help="number of federated rounds (default: %(default)s)",
    )
    parser.add_argument(
        "--round-timeout",
        type=positive_float,
        default=None,
        help="seconds a client may take per instruction (default: no limit)",
    )
    mark = "demo: " if app_only else ""
    for flag, kind, default, text in (
        ("--fraction-fit", fraction, defaults.fraction_fit, "share of clients trained per round"),
        (
            "--fraction-evaluate",
            fraction,
            defaults.fraction_evaluate,
            "share of clients evaluating per round",
        ),
        ("--local-epochs", positive_int, defaults.local_epochs, "local epochs per round"),
        ("--batch-size", positive_int, defaults.batch_size, "local mini-batch size"),
        ("--lr", positive_float, defaults.learning_rate, "local SGD learning rate"),
    ):
        parser.add_argument(
            flag, type=kind, default=default, help=f"{mark}{text} (default: %(default)s)"
        )


def add_app_option(parser: argparse.ArgumentParser, default_title: str) -> None:
    """Add `--app MODULE:ATTR`; `default_title` names the app run without it."""
    parser.add_argument(
        "--app",
        metavar="MODULE:ATTR",
        default=None,
        help=f"run your roost.App (or client_fn) instead of {default_title}; "
        "the demo options below are then ignored",
    )


def settings_from_args(args: argparse.Namespace, *, num_clients: int) -> RunSettings:
    """The `RunSettings` a command's parsed options describe, for `num_clients` clients."""
    return RunSettings(
        num_clients=num_clients,
        num_rounds=args.rounds,
        fraction_fit=args.fraction_fit,
        fraction_evaluate=args.fraction_evaluate,
        local_epochs=args.local_epochs,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        seed=args.seed,
        privacy=privacy_settings(args, num_clients=num_clients),
        secure_aggregation=secure_aggregation(args),
    )


_NOT_RESULT = frozenset(
    {
        # what a run shows, writes and records, and where it listens: not what it computes
        *("command", "handler", "out", "no_plot", "quiet", "verbose", "tensorboard", "mlflow"),
        *("client_metrics", "allow_failures", "state", "resume", "config", "directory"),
        *("address", "certificates", "client_ca", "auth_tokens", "wait_timeout"),
        *("max_message_mb",),
        "rounds",  # a resumed run may have more rounds: that is what resuming is for
    }
)


def result_settings(args: argparse.Namespace, leave_out: tuple[str, ...] = ()) -> dict[str, Any]:
    """Every option in `args` that the run's result depends on, by its flag (`{"--lr": 0.5}`):
    what `--state` records and `--resume` compares. `leave_out` names more options to skip."""
    return {
        "--" + name.replace("_", "-"): value
        for name, value in sorted(vars(args).items())
        if name not in _NOT_RESULT and name not in leave_out and _recordable(value)
    }


def _recordable(value: Any) -> bool:
    if isinstance(value, list | tuple):
        return all(_recordable(item) for item in value)
    return value is None or isinstance(value, bool | int | float | str)


def server_config(args: argparse.Namespace) -> ServerConfig:
    """The round loop's settings: the number of rounds and the per-instruction timeout."""
    return ServerConfig(num_rounds=args.rounds, round_timeout=args.round_timeout)


def server_deployment_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments `roost server`'s options give a gRPC server, whatever it serves.

    Both a plain `roost.App` and a Flower project are served with these, so they are read here once.
    """
    return {
        "seed": args.seed,
        "certificates": args.certificates,
        "client_ca": args.client_ca,
        "auth_tokens": args.auth_tokens,
        "state_dir": args.state,
        "resume": args.resume,
        "out_dir": args.out,
        "plot": not args.no_plot,
        "client_wait_timeout": args.wait_timeout,
        "max_message_bytes": int(args.max_message_mb * (1 << 20)),
    }


def client_connection_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments `roost client`'s options give a node, whatever it runs.

    Both a plain `roost.App`'s client (`start_client`) and a Flower project's ClientApp
    (`connect_project`) join with these, so they are read here once.
    """
    return {
        "server_address": args.server,
        "partition_id": args.partition_id,
        "num_partitions": args.num_partitions,
        "node_id": args.node_id,
        "root_certificates": args.root_certificate,
        "token": args.token or os.environ.get("ROOST_TOKEN") or None,
        "reconnect_timeout": args.reconnect_timeout,
    }
