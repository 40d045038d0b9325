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
    _add_training_options(simulate, defaults)
    simulate.add_argument("--seed", type=int, default=defaults.seed,
                          help="seed for data split, sampling and local shuffling "
                          "(default: %(default)s)")
    simulate.add_argument("--out", metavar="DIR", default=None,
                          help="write DIR/history.json, model.npz, history.csv and plot.png")
    simulate.add_argument("--quiet", action="store_true", help="only print the final summary")
    simulate.add_argument("--config", metavar="FILE", default=None,
                          help="read options from a TOML file (keys as the long options, e.g. "
                          "rounds = 10); flags given on the command line override it")
    from roost.engines import ENGINES

    simulate.add_argument("--engine", choices=ENGINES, default=None,
                          help="how clients run (default: vectorized when torch is installed, "
                          "else sequential)")
    from roost.strategy.options import add_strategy_arguments

    add_strategy_arguments(simulate)
    simulate.set_defaults(handler=_simulate)
    _add_deploy_commands(commands, defaults)
    _add_plot_command(commands)
    return parser


def _simulate(args: argparse.Namespace) -> int:
    from rich.console import Console

    from roost.apps.digits import DemoSettings, check_settings
    from roost.apps.strategies import demo_client_fn_and_strategy
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
    client_fn, strategy = demo_client_fn_and_strategy(args, settings)
    from roost.tasks.digits import demo_engine

    plain = getattr(args, "attack", None) is None and getattr(args, "strategy", None) != "fedsgd"
    engine, client_fn, notice = demo_engine(args.engine, client_fn, settings, plain=plain)
    if notice:
        console.print(notice, soft_wrap=True, markup=False)
    history = run_simulation(
        client_fn,
        settings.num_clients,
        strategy=strategy,
        config=ServerConfig(num_rounds=settings.num_rounds, round_timeout=args.round_timeout),
        seed=settings.seed,
        engine=engine,
    )
    console.print(history_table(history))
    if args.out:
        for path in save_run(args.out, history):
            console.print(f"wrote {path}")
    return 0


# -- roost server / roost client: deployment over gRPC ---------------------------------------------


def _add_deploy_commands(commands: argparse._SubParsersAction, defaults) -> None:
    server = commands.add_parser(
        "server",
        help="serve a federated run over the network (default: the bundled digits demo)",
        description="Serve a federated run over gRPC. Clients started with `roost client` "
        "connect to it; the run starts once --min-clients are connected.",
    )
    server.add_argument("--address", default="0.0.0.0:8080",
                        help="host:port to listen on (default: %(default)s)")
    server.add_argument("--min-clients", type=_positive_int, default=None,
                        help="clients that must be connected before a round starts "
                        "(default: 2, or the app's strategy setting)")
    server.add_argument("--out", metavar="DIR", default=None,
                        help="write DIR/history.json, model.npz, history.csv and plot.png")
    server.add_argument("--state", metavar="DIR", default=None,
                        help="record every completed round in DIR so the run survives a restart")
    server.add_argument("--resume", action="store_true",
                        help="continue the run recorded in --state DIR")
    server.add_argument("--certificates", nargs=2, metavar=("CERT", "KEY"), default=None,
                        help="serve TLS with this PEM certificate chain and private key")
    server.add_argument("--auth-tokens", metavar="FILE", default=None,
                        help="admit only clients with a token from FILE ('node-id token' lines)")
    server.add_argument("--wait-timeout", type=_positive_float, default=None,
                        help="give up after waiting this many seconds for enough clients "
                        "(default: wait forever)")
    server.add_argument("--max-message-mb", type=_positive_float, default=1024,
                        help="largest result accepted from a client, in MiB (default: %(default)s)")
    server.add_argument("--seed", type=int, default=defaults.seed,
                        help="seed for client sampling and the demo's data (default: %(default)s)")
    _add_app_arguments(server)
    _add_training_options(server, defaults, demo_only=True)
    server.add_argument("--quiet", action="store_true", help="only print the final summary")
    from roost.strategy.options import add_strategy_arguments

    add_strategy_arguments(server, attacks=False)
    server.set_defaults(handler=_server)

    client = commands.add_parser(
        "client",
        help="join a federated run served by `roost server`",
        description="Connect to a roost server, train on this partition when asked, and exit "
        "when the server ends the run. Reconnects when the server restarts.",
    )
    client.add_argument("--server", default="127.0.0.1:8080",
                        help="host:port of the server (default: %(default)s)")
    client.add_argument("--partition-id", type=int, required=True,
                        help="which data partition this client holds (0-based)")
    client.add_argument("--num-partitions", type=_positive_int, required=True,
                        help="how many partitions the data is split into")
    client.add_argument("--node-id", default=None,
                        help="the name this client joins under (default: the partition id)")
    client.add_argument("--root-certificate", metavar="PEM", default=None,
                        help="connect with TLS, trusting the server certificate this CA signed")
    client.add_argument("--token", default=None,
                        help="this node's token (default: the ROOST_TOKEN environment variable)")
    client.add_argument("--reconnect-timeout", type=_positive_float, default=600.0,
                        help="give up after this many seconds without a connection "
                        "(default: %(default)s)")
    client.add_argument("--max-message-mb", type=_positive_float, default=1024,
                        help="largest instruction accepted, in MiB (default: %(default)s)")
    client.add_argument("--seed", type=int, default=defaults.seed,
                        help="demo: seed of the data split, same as the server's "
                        "(default: %(default)s)")
    _add_app_arguments(client)
    client.add_argument("--quiet", action="store_true", help="log warnings and errors only")
    client.set_defaults(handler=_client)


def _add_training_options(
    parser: argparse.ArgumentParser, defaults, *, demo_only: bool = False
) -> None:
    """The round and local-training options `roost simulate` and `roost server` share."""
    demo = "demo: " if demo_only else ""
    parser.add_argument("--rounds", type=_positive_int, default=defaults.num_rounds,
                        help="number of federated rounds (default: %(default)s)")
    parser.add_argument("--round-timeout", type=_positive_float, default=None,
                        help="seconds a client may take per instruction (default: no limit)")
    parser.add_argument("--fraction-fit", type=_fraction, default=defaults.fraction_fit,
                        help=f"{demo}share of clients trained per round (default: %(default)s)")
    parser.add_argument("--fraction-evaluate", type=_fraction, default=defaults.fraction_evaluate,
                        help=f"{demo}share of clients evaluating per round (default: %(default)s)")
    parser.add_argument("--local-epochs", type=_positive_int, default=defaults.local_epochs,
                        help=f"{demo}local epochs per round (default: %(default)s)")
    parser.add_argument("--batch-size", type=_positive_int, default=defaults.batch_size,
                        help=f"{demo}local mini-batch size (default: %(default)s)")
    parser.add_argument("--lr", type=_positive_float, default=defaults.learning_rate,
                        help=f"{demo}local SGD learning rate (default: %(default)s)")


def _add_app_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--app", metavar="MODULE:ATTR", default=None,
                        help="run your roost.App (or client_fn) instead of the digits demo; "
                        "the demo options below are then ignored")


def _server(args: argparse.Namespace) -> int:
    from rich.console import Console

    from roost.apps.loading import load_app
    from roost.deploy import start_server
    from roost.errors import ConfigurationError
    from roost.log import ensure_logging
    from roost.report import history_table
    from roost.server.loop import ServerConfig

    console = Console(stderr=False)
    ensure_logging(logging.WARNING if args.quiet else logging.INFO, console=console)
    if args.resume and not args.state:
        raise ConfigurationError("--resume needs --state DIR, the directory of the run to resume")
    if args.app:
        from roost.strategy.options import strategy_options

        if args.strategy != "fedavg" or strategy_options(args):
            raise ConfigurationError(
                "--strategy configures the bundled demo; with --app, your roost.App's strategy "
                "is used: set the strategy there"
            )
        strategy = load_app(args.app).make_strategy()
        if strategy is None:
            raise ConfigurationError(
                f"{args.app} names no strategy; roost server needs roost.App(strategy=...)"
            )
    else:
        from roost.apps.digits import DemoSettings
        from roost.apps.strategies import demo_strategy

        min_clients = args.min_clients if args.min_clients is not None else 2
        strategy = demo_strategy(
            args,
            DemoSettings(
                num_clients=min_clients,
                num_rounds=args.rounds,
                fraction_fit=args.fraction_fit,
                fraction_evaluate=args.fraction_evaluate,
                local_epochs=args.local_epochs,
                batch_size=args.batch_size,
                learning_rate=args.lr,
                seed=args.seed,
            ),
        )
    if args.min_clients is not None or not args.app:
        strategy.min_available_clients = args.min_clients or 2
    history = start_server(
        server_address=args.address,
        config=ServerConfig(num_rounds=args.rounds, round_timeout=args.round_timeout),
        strategy=strategy,
        seed=args.seed,
        certificates=args.certificates,
        auth_tokens=args.auth_tokens,
        state_dir=args.state,
        resume=args.resume,
        out_dir=args.out,
        max_message_bytes=int(args.max_message_mb * (1 << 20)),
        client_wait_timeout=args.wait_timeout,
    )
    console.print(history_table(history))
    return 0


def _client(args: argparse.Namespace) -> int:
    import os

    from roost.apps.loading import load_app
    from roost.deploy import start_client
    from roost.errors import ConfigurationError
    from roost.log import ensure_logging

    ensure_logging(logging.WARNING if args.quiet else logging.INFO)
    if not 0 <= args.partition_id < args.num_partitions:
        raise ConfigurationError(
            f"--partition-id must be in [0, {args.num_partitions - 1}], got {args.partition_id}"
        )
    if args.app:
        client_fn = load_app(args.app).client_fn
        if client_fn is None:
            raise ConfigurationError(f"{args.app} names no client_fn; set roost.App(client_fn=...)")
    else:
        from roost.apps.digits import make_client_fn

        client_fn = make_client_fn(args.seed)
    start_client(
        server_address=args.server,
        client_fn=client_fn,
        partition_id=args.partition_id,
        num_partitions=args.num_partitions,
        node_id=args.node_id,
        root_certificates=args.root_certificate,
        token=args.token or os.environ.get("ROOST_TOKEN") or None,
        max_message_bytes=int(args.max_message_mb * (1 << 20)),
        reconnect_timeout=args.reconnect_timeout,
    )
    return 0


# -- roost plot, and option files for roost simulate --------------------------------------------


def _add_plot_command(commands: argparse._SubParsersAction) -> None:
    plot = commands.add_parser(
        "plot",
        help="draw accuracy and loss per round from a run's history.json",
        description="Draw plot.png from history.json (written by `roost simulate --out DIR`): "
        "accuracy and loss per round, distributed (clients) vs centralized (server).",
    )
    plot.add_argument("history", metavar="HISTORY",
                      help="a history.json, or the directory that holds one")
    plot.add_argument("-o", "--out", metavar="PNG", default=None,
                      help="where to write the chart (default: plot.png next to history.json)")
    plot.add_argument("--metric", default="accuracy",
                      help="metric to draw in the accuracy panel (default: %(default)s)")
    plot.add_argument("--title", default=None, help="a title above both panels")
    plot.set_defaults(handler=_plot)


def _plot(args: argparse.Namespace) -> int:
    from pathlib import Path

    from roost.plotting import plot_history

    source = Path(args.history)
    if source.is_dir():
        source = source / "history.json"
    target = Path(args.out) if args.out else source.with_name("plot.png")
    print(f"wrote {plot_history(source, target, accuracy_key=args.metric, title=args.title)}")
    return 0


def _reparse_with_config_file(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None, args: argparse.Namespace
) -> argparse.Namespace:
    """Use the TOML file's values as the command's defaults, then parse the flags again on top."""
    import tomllib

    from roost.errors import ConfigurationError

    subparser = next(
        action.choices[args.command]
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
    )
    try:
        with open(args.config, "rb") as file:
            data = tomllib.load(file)
    except OSError as error:
        raise ConfigurationError(f"cannot read --config {args.config}: {error}") from error
    except tomllib.TOMLDecodeError as error:
        raise ConfigurationError(f"--config {args.config} is not valid TOML: {error}") from error
    if isinstance(data.get(args.command), dict):  # a [simulate] table, or top-level keys
        data = data[args.command]
    options = {
        option[2:]: action
        for action in subparser._actions
        for option in action.option_strings
        if option.startswith("--") and option not in ("--help", "--config")
    }
    defaults = {}
    for key, value in data.items():
        action = options.get(key.replace("_", "-"))
        if action is None:
            raise ConfigurationError(
                f"{args.config}: unknown option {key!r}; known: {', '.join(sorted(options))}"
            )
        defaults[action.dest] = _config_value(action, value, f"{args.config}: {key}")
    subparser.set_defaults(**defaults)
    return parser.parse_args(argv)


def _config_value(action: argparse.Action, value: object, where: str) -> object:
    from roost.errors import ConfigurationError

    if isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction):
        if not isinstance(value, bool):
            raise ConfigurationError(f"{where} must be true or false, got {value!r}")
        return value
    many = action.nargs not in (None, "?")
    if not many and isinstance(value, list):
        raise ConfigurationError(f"{where} takes one value, got a list")
    items = value if isinstance(value, list) else [value]
    converted = []
    for item in items:
        if isinstance(item, dict | list):
            raise ConfigurationError(f"{where} must be a number or a string, got {item!r}")
        text = str(item).lower() if isinstance(item, bool) else str(item)
        try:
            result = action.type(text) if action.type else text
        except (argparse.ArgumentTypeError, ValueError) as error:
            raise ConfigurationError(f"{where}: {error}") from error
        if action.choices is not None and result not in action.choices:
            raise ConfigurationError(
                f"{where} must be one of {', '.join(map(str, action.choices))}, got {item!r}"
            )
        converted.append(result)
    return converted if many else converted[0]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `roost` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if getattr(args, "config", None):
            args = _reparse_with_config_file(parser, argv, args)
        return args.handler(args)
    except RoostError as error:
        print(f"roost: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("roost: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
