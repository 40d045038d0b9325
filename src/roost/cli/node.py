"""`roost node`: a long-lived node that runs a federation's runs on this machine's data.

    roost node --init hospital-a --name hospital-a      # key pair + node.toml; prints the key
    roost node --config hospital-a/node.toml            # serve until Ctrl-C or SIGTERM

`--init` writes DIR/node.pem (secret), DIR/node.pub (for the federation's operator to register
under NAME) and DIR/node.toml, whose comments say what to set: the coordinator's address, the
publishers whose signed bundles may run here, this node's data partition and data paths. The node
then reconnects to its coordinator forever, runs each run's client app in a subprocess of its own
(runs/RUN_ID/ next to node.toml) and refuses bundles no trusted publisher signed.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path

from roost.cli.options import CommandParser
from roost.errors import ConfigurationError
from roost.log import ensure_logging

DEFAULT_COORDINATOR = "https://127.0.0.1:9443"
"""The coordinator address `--init` writes when none is given."""


def add_command(root: CommandParser) -> None:
    """Add `roost node` to `root`."""
    parser = root.add_command("node", __doc__)
    parser.add_argument(
        "--config",
        metavar="NODE.toml",
        dest="node_config",  # not `config`: that one names `roost simulate`'s option files
        default=None,
        help="serve with this node config",
    )
    parser.add_argument(
        "--init",
        metavar="DIR",
        default=None,
        help="write a key pair and a node.toml skeleton into DIR, then stop",
    )
    parser.add_argument("--name", default=None, help="with --init: the node's name")
    parser.add_argument(
        "--coordinator",
        default=None,
        help=f"with --init: the control API's address (default: {DEFAULT_COORDINATOR})",
    )
    parser.add_argument("--quiet", action="store_true", help="log warnings and errors only")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """`--init`, or serve until SIGTERM / SIGINT."""
    if args.init is not None:
        return init(Path(args.init), args.name, args.coordinator or DEFAULT_COORDINATOR)
    if args.node_config is None:
        raise ConfigurationError(
            "roost node needs --config NODE.toml (make one with roost node --init DIR --name NAME)"
        )
    if args.name or args.coordinator:
        raise ConfigurationError("--name and --coordinator go with --init; set them in the config")
    from roost.federation.node import Node
    from roost.federation.node_config import load_node_config

    ensure_logging(logging.WARNING if args.quiet else logging.INFO)
    node = Node(load_node_config(args.node_config))
    stop = threading.Event()

    def request_stop(signum: int, frame: object) -> None:
        logging.getLogger(__name__).info("node stopping (signal %d)", signum)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    node.serve(stop)
    return 0


def init(directory: Path, name: str | None, coordinator: str) -> int:
    """Write DIR/node.pem, node.pub and node.toml; print what to hand the operator."""
    from roost.federation.keys import fingerprint, generate_key_pair, public_key_line
    from roost.federation.node_config import node_config_text

    if not name:
        raise ConfigurationError("roost node --init DIR needs --name NAME, the node's name")
    config = directory / "node.toml"
    if config.exists():
        raise ConfigurationError(f"{config} already exists: edit it, or --init another directory")
    text = node_config_text(name, coordinator)  # checks the name and address before any write
    key = generate_key_pair(directory / "node.pem")
    config.write_text(text)
    (directory / "runs").mkdir(exist_ok=True)
    print(f"wrote {directory / 'node.pem'} (secret), {directory / 'node.pub'} and {config}")
    print(f"node {name} key {fingerprint(key)}: {public_key_line(key)}")
    print(
        f"next: the operator registers {directory / 'node.pub'} under the name {name}; set the "
        f"coordinator, trusted_publishers, partition and [data] in {config}; then "
        f"roost node --config {config}"
    )
    return 0
