"""The round and local-training options `roost simulate` and `roost server` share.

`add_run_options` adds them to a command; `settings_from_args` reads every option of a run once
into one `roost.settings.RunSettings` (defaults filled in, the strategy asked for as a
`StrategySpec`), which the command hands to its app; `server_config` is the round loop's part.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from roost.app import DEMO_OPTIONS
from roost.cli.dp_options import privacy_settings
from roost.cli.options import fraction, positive_float, positive_fraction, positive_int
from roost.cli.secagg_options import secure_aggregation
from roost.cli.strategy_options import strategy_spec
from roost.server.loop import ServerConfig
from roost.settings import RunSettings

APP_OPTIONS = "app_option_names"
"""Where the parsed arguments keep the names of the app's own options (`App.add_arguments`)."""


def resolved_options(args: argparse.Namespace, settings: RunSettings) -> dict[str, Any]:
    """Every parsed option, the round and training ones as `settings` resolved them (defaults
    filled in), by their names in the parsed namespace."""
    return {
        **vars(args),
        "rounds": settings.num_rounds,
        "fraction_fit": settings.fraction_fit,
        "fraction_evaluate": settings.fraction_evaluate,
        "local_epochs": settings.local_epochs,
        "batch_size": settings.batch_size,
        "lr": settings.learning_rate,
    }


def add_run_options(parser: argparse.ArgumentParser, *, app_only: bool = False) -> None:
    """Add the round and local-training options; `app_only` marks those only the app reads.

    Their parsed value is None when not given (so a command can tell `--rounds 5` from the
    default); `settings_from_args` fills in the defaults, once.
    """
    defaults = RunSettings()
    parser.add_argument(
        "--rounds",
        type=positive_int,
        default=None,
        help=f"number of federated rounds (default: {defaults.num_rounds})",
    )
    parser.add_argument(
        "--round-timeout",
        type=positive_float,
        default=None,
        help="seconds a client may take per instruction (default: no limit)",
    )
    mark = "demo: " if app_only else ""
    for flag, kind, default, text in (
        (
            "--fraction-fit",
            positive_fraction,
            defaults.fraction_fit,
            "share of clients trained per round",
        ),
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
            flag, type=kind, default=None, help=f"{mark}{text} (default: {default})"
        )


def add_app_option(parser: argparse.ArgumentParser, default_title: str) -> None:
    """Add `--app MODULE:ATTR`; `default_title` names the app run without it."""
    parser.add_argument(
        "--app",
        metavar="MODULE:ATTR",
        default=None,
        help=f"run your roost.App (or client_fn) instead of {default_title}; "
        "the demo's training options below are then refused",
    )


def settings_from_args(args: argparse.Namespace, *, num_clients: int) -> RunSettings:
    """The `RunSettings` a command's parsed options describe, for `num_clients` clients: the
    one place where an option not given takes its default."""
    defaults = RunSettings()

    def given(name: str, default: Any) -> Any:
        value = getattr(args, name, None)
        return default if value is None else value

    fraction_fit = given("fraction_fit", defaults.fraction_fit)
    return RunSettings(
        num_clients=num_clients,
        num_rounds=given("rounds", defaults.num_rounds),
        fraction_fit=fraction_fit,
        fraction_evaluate=given("fraction_evaluate", defaults.fraction_evaluate),
        local_epochs=given("local_epochs", defaults.local_epochs),
        batch_size=given("batch_size", defaults.batch_size),
        learning_rate=given("lr", defaults.learning_rate),
        seed=args.seed,
        round_timeout=args.round_timeout,
        engine=getattr(args, "engine", None),
        strategy=strategy_spec(
            args,
            privacy_settings(args, num_clients=num_clients, fraction_fit=fraction_fit),
            secure_aggregation(args),
        ),
        app_options={name: getattr(args, name) for name in getattr(args, APP_OPTIONS, ())},
        given=frozenset(
            name for name in ("rounds", *DEMO_OPTIONS) if getattr(args, name, None) is not None
        ),
    )


_NOT_RESULT = frozenset(
    {
        # what a run shows, writes and records, and where it listens: not what it computes
        *("command", "handler", "out", "no_plot", "quiet", "verbose", "tensorboard", "mlflow"),
        *("client_metrics", "allow_failures", "state", "resume", "config", "directory"),
        *("address", "certificates", "client_ca", "auth_tokens", "wait_timeout"),
        *("max_message_mb", APP_OPTIONS),
        *("dashboard", "keep_serving"),
        "rounds",  # a resumed run may have more rounds: that is what resuming is for
    }
)


def result_settings(
    args: argparse.Namespace,
    settings: RunSettings | None = None,
    leave_out: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Every option in `args` that the run's result depends on, by its flag (`{"--lr": 0.5}`),
    with the defaults `settings` resolved: what `--state` records and `--resume` compares.
    `leave_out` names more options to skip."""
    values = vars(args) if settings is None else resolved_options(args, settings)
    return {
        "--" + name.replace("_", "-"): value
        for name, value in sorted(values.items())
        if name not in _NOT_RESULT and name not in leave_out and _recordable(value)
    }


def _recordable(value: Any) -> bool:
    if isinstance(value, list | tuple):
        return all(_recordable(item) for item in value)
    return value is None or isinstance(value, bool | int | float | str)


def server_config(settings: RunSettings) -> ServerConfig:
    """The round loop's settings: the number of rounds and the per-instruction timeout."""
    return ServerConfig(num_rounds=settings.num_rounds, round_timeout=settings.round_timeout)


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
