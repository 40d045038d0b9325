"""`roost client`: join a run served by `roost server`, training one data partition."""

from __future__ import annotations

import argparse
import logging
from functools import partial

from roost.app import App
from roost.cli.app import load_app
from roost.cli.dp_options import add_privacy_arguments, client_privacy
from roost.cli.options import CommandParser, address, positive_float, positive_int
from roost.cli.server import add_certificate_and_key_option, add_node_options, quiet_grpc_core
from roost.cli.settings import client_connection_options
from roost.errors import ConfigurationError, ServerUnreachableError, TlsMismatchError
from roost.log import ensure_logging

RECONNECT_TIMEOUT_S = 60.0
"""`roost client`'s default `--reconnect-timeout`: about what a person at a terminal waits for
a server that is not there. The library's default (`ClientOptions`) stays long, for deployments
whose clients outlast a server's restart."""


def add_command(root: CommandParser, default_app: App) -> None:
    """Add `roost client` to `root`; `default_app` runs unless `--app` names another."""
    parser = root.add_command(
        "client",
        help="join a federated run served by `roost server`",
        description="Connect to a roost server, train on this partition when asked, and exit "
        "when the server ends the run. Reconnects when the server restarts.",
    )
    parser.add_argument(
        "--server",
        type=address,
        default="127.0.0.1:8080",
        help="host:port of the server (default: %(default)s)",
    )
    parser.add_argument(
        "--partition-id",
        type=int,
        required=True,
        help="which data partition this client holds (0-based)",
    )
    parser.add_argument(
        "--num-partitions",
        type=positive_int,
        required=True,
        help="how many partitions the data is split into",
    )
    parser.add_argument(
        "--node-id",
        default=None,
        help="the name this client joins under (default: the partition id)",
    )
    parser.add_argument(
        "--root-certificate",
        metavar="PEM",
        default=None,
        help="connect with TLS, trusting the server certificate this CA signed",
    )
    add_certificate_and_key_option(
        parser,
        "--certificate",
        "mutual TLS: this node's PEM certificate and key (its common name is the node id)",
    )
    parser.add_argument(
        "--token",
        default=None,
        help="this node's token (default: the ROOST_TOKEN environment variable)",
    )
    parser.add_argument(
        "--reconnect-timeout",
        metavar="SECONDS",
        type=positive_float,
        default=RECONNECT_TIMEOUT_S,
        help="give up after this many seconds without a connection, at the start or after the "
        "server went away (default: %(default)g; pass more where a server may take longer to "
        "come back)",
    )
    add_node_options(
        parser,
        largest_message="largest instruction accepted",
        seed_help="demo: seed of the data split, same as the server's",
        default_title=default_app.title,
    )
    parser.add_argument("--quiet", action="store_true", help="log warnings and errors only")
    parser.add_argument("--verbose", action="store_true", help="also show gRPC's own log lines")
    add_privacy_arguments(parser, client=True)
    default_app.add_arguments(parser, "client")
    parser.set_defaults(handler=partial(run, default_app=default_app))


def run(args: argparse.Namespace, default_app: App) -> int:
    """Connect, train when asked, and return once the server ends the run."""
    quiet_grpc_core(args.verbose)
    from roost.deploy import start_client

    ensure_logging(logging.WARNING if args.quiet else logging.INFO)
    if not 0 <= args.partition_id < args.num_partitions:
        raise ConfigurationError(
            f"--partition-id must be in [0, {args.num_partitions - 1}], got {args.partition_id}"
        )
    app = load_app(args.app, args.run_config) if args.app else default_app
    try:
        if app.connect(args):  # a Flower project runs its own ClientApp
            return 0
        client_fn = client_privacy(args, app.make_client_fn(args.seed), args.num_partitions)
        start_client(
            client_fn=client_fn,
            certificate=tuple(args.certificate) if args.certificate else None,
            max_message_bytes=int(args.max_message_mb * (1 << 20)),
            **client_connection_options(args),
        )
    except TlsMismatchError:
        raise  # waiting longer cannot fix it
    except ServerUnreachableError as error:
        raise ServerUnreachableError(
            f"{error}; to wait longer, pass --reconnect-timeout SECONDS "
            f"(now {args.reconnect_timeout:g})"
        ) from None
    return 0
