"""`roost server`: serve a federated run over gRPC to clients started with `roost client`."""

from __future__ import annotations

import argparse
import logging
import os

from roost.app import refuse_strategy_options
from roost.cli.app import App, add_run_config_option, finish_app_command, load_app
from roost.cli.compress_options import compression_line
from roost.cli.options import CommandParser, address, positive_float, positive_int
from roost.cli.report import (
    Reporter,
    add_output_options,
    history_table,
    run_params,
)
from roost.cli.secagg_options import secure_aggregation_line
from roost.cli.settings import (
    RunSettings,
    add_app_option,
    add_run_options,
    resolved_options,
    result_settings,
    server_deployment_options,
    settings_from_args,
)
from roost.errors import ConfigurationError

DEFAULT_MIN_CLIENTS = 2


def add_command(root: CommandParser, default_app: App) -> None:
    """Add `roost server` to `root`; `default_app` runs unless `--app` names another."""
    parser = root.add_command(
        "server",
        help=f"serve a federated run over the network (default: {default_app.title})",
        description="Serve a federated run over gRPC. Clients started with `roost client` "
        "connect to it; the run starts once --min-clients are connected.",
    )
    parser.add_argument(
        "--address",
        type=address,
        default="0.0.0.0:8080",
        help="host:port to listen on (default: %(default)s)",
    )
    parser.add_argument(
        "--min-clients",
        type=positive_int,
        default=None,
        help="clients that must be connected before a round starts "
        f"(default: {DEFAULT_MIN_CLIENTS}, or the app's strategy setting)",
    )
    add_output_options(parser)
    parser.add_argument(
        "--state",
        metavar="DIR",
        default=None,
        help="record every completed round in DIR so the run survives a restart",
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue the run recorded in --state DIR"
    )
    add_security_options(parser)
    parser.add_argument(
        "--wait-timeout",
        type=positive_float,
        default=None,
        help="give up after waiting this many seconds for enough clients (default: wait forever)",
    )
    add_node_options(
        parser,
        largest_message="largest result accepted from a client",
        seed_help="seed for client sampling and the demo's data",
        default_title=default_app.title,
    )
    add_run_options(parser, app_only=True)
    finish_app_command(parser, default_app, "server", run)


def add_security_options(parser: argparse.ArgumentParser) -> None:
    """TLS, mutual TLS and tokens: who may connect, and how."""
    add_certificate_and_key_option(
        parser, "--certificates", "serve TLS with this PEM certificate chain and private key"
    )
    parser.add_argument(
        "--client-ca",
        metavar="PEM",
        default=None,
        help="mutual TLS: admit only clients whose certificate this CA signed, each as the node "
        "its certificate's common name names (needs --certificates)",
    )
    parser.add_argument(
        "--auth-tokens",
        metavar="FILE",
        default=None,
        help="admit only clients with a token from FILE ('node-id token' lines)",
    )


def add_certificate_and_key_option(parser: argparse.ArgumentParser, flag: str, help: str) -> None:
    """Add `flag CERT KEY`: a PEM certificate (chain) and its private key, as two paths."""
    parser.add_argument(flag, nargs=2, metavar=("CERT", "KEY"), default=None, help=help)


def add_node_options(
    parser: argparse.ArgumentParser, *, largest_message: str, seed_help: str, default_title: str
) -> None:
    """The options `roost server` and `roost client` share: `--max-message-mb` (the largest
    message this end accepts, `largest_message` says which), `--seed` (`seed_help` says what it
    seeds), `--app` (`default_title` names the app run without it) and `--run-config`."""
    parser.add_argument(
        "--max-message-mb",
        type=positive_float,
        default=1024,
        help=f"{largest_message}, in MiB (default: %(default)s)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=RunSettings().seed,
        help=f"{seed_help} (default: %(default)s)",
    )
    add_app_option(parser, default_title)
    add_run_config_option(parser)


def quiet_grpc_core(verbose: bool = False) -> None:
    """Keep gRPC's own C-core log lines (`E… add_port.cc`, TLS handshake errors) off the
    terminal: roost reports what they mean itself. `--verbose`, or GRPC_VERBOSITY set in the
    environment, shows them. Must run before grpc is first imported."""
    if not verbose:
        os.environ.setdefault("GRPC_VERBOSITY", "NONE")


def run(args: argparse.Namespace, default_app: App) -> int:
    """Serve the run `args` describe until its last round; print the summary."""
    quiet_grpc_core(args.verbose)
    from roost.deploy import start_server
    from roost.outputs import check_out_dir

    if args.resume and not args.state:
        raise ConfigurationError("--resume needs --state DIR, the directory of the run to resume")
    if args.out:
        check_out_dir(args.out)
    app = load_app(args.app, args.run_config) if args.app else default_app
    settings = settings_from_args(args, num_clients=args.min_clients or DEFAULT_MIN_CLIENTS)
    if app.serves_whole_run:  # a Flower project serves its own ServerApp
        refuse_strategy_options(settings)
        with Reporter(args, None, run_params(vars(args)), logs=logging.INFO) as reporter:
            history = app.serve(args, reporter.track)
        reporter.console.print(history_table(history))
        return reporter.conclude(history)
    strategy = app.server_strategy(settings)
    if args.min_clients is not None and strategy.min_available_clients != args.min_clients:
        strategy = strategy.replace(min_available_clients=args.min_clients)  # an app's own
    config = app.server_config(settings)
    params = run_params(resolved_options(args, settings))
    with Reporter(args, config.num_rounds, params, logs=logging.INFO) as reporter:
        reporter.print(secure_aggregation_line(settings, strategy))
        reporter.print(compression_line(strategy))
        if (privacy := settings.privacy) is not None:
            reporter.print(privacy.describe())
            if privacy.mode == "local":
                reporter.print(
                    f"start every client with: roost client --dp local --noise-multiplier "
                    f"{privacy.params.noise_multiplier:g} --clip-norm {privacy.params.clip_norm:g}"
                )
        history = start_server(
            server_address=args.address,
            config=config,
            strategy=strategy,
            trackers=reporter.trackers,
            client_metrics=args.client_metrics,
            settings={
                **result_settings(args, settings, leave_out=("run_config",)),
                **app.run_settings(),
            },
            **server_deployment_options(args),
        )
        if privacy is not None:
            reporter.ended_early = privacy.stopped_early(history, config.num_rounds) or ""
    reporter.console.print(history_table(history))
    reporter.print(reporter.ended_early)
    return reporter.conclude(history)
