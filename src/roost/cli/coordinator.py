"""`roost coordinator`: keep a federation's nodes and runs, serving people and nodes on one API.

    roost coordinator --data fed --add-person ada --operator   # prints ada's token once
    roost coordinator --data fed --add-node hospital-a hospital-a.pub
    roost coordinator --data fed --address 0.0.0.0:9091 --public-host fl.example.org \\
        --certificates cert.pem key.pem
    roost coordinator --data fed --dashboard        # and its web dashboard on 127.0.0.1

The state lives in a database (`--db URL`, any SQLAlchemy URL; default: a SQLite file in --data),
upgraded to this roost's schema on start. A coordinator killed and started again resumes every
run it had running from the run's checkpoint; the nodes reconnect by themselves.
"""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path

from roost.cli.dashboard import add_dashboard_option, coordinator_dashboard
from roost.cli.options import CommandParser, address
from roost.cli.server import add_certificate_and_key_option


def add_command(root: CommandParser) -> None:
    """Add `roost coordinator` to `root`."""
    parser = root.add_command("coordinator", __doc__)
    parser.add_argument("--data", metavar="DIR", required=True, help="the federation's directory")
    parser.add_argument(
        "--db",
        metavar="URL",
        default=None,
        help="SQLAlchemy database URL, e.g. postgresql+psycopg://user@host/roost "
        "(default: sqlite in --data)",
    )
    parser.add_argument(
        "--address",
        type=address,
        default="127.0.0.1:9091",
        help="host:port of the control API (default: %(default)s)",
    )
    parser.add_argument(
        "--public-host",
        default=None,
        help="the host name nodes dial for run servers (default: --address's host)",
    )
    add_certificate_and_key_option(
        parser, "--certificates", "serve the API and every run over TLS with this PEM cert and key"
    )
    parser.add_argument(
        "--root-certificate",
        metavar="PEM",
        default=None,
        help="the CA certificate nodes should trust (default: --certificates' CERT)",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="allow plain HTTP off 127.0.0.1 (tokens travel in clear text)",
    )
    add_dashboard_option(parser, keep_serving=False)
    operators = parser.add_argument_group("operator actions (each runs and exits)")
    operators.add_argument("--add-person", metavar="NAME", help="add a person; prints their token")
    operators.add_argument(
        "--operator", action="store_true", help="with --add-person: may see and stop every run"
    )
    operators.add_argument(
        "--add-node",
        nargs=2,
        metavar=("NAME", "PUBLIC_KEY"),
        help="register a node by its public key (a .pub file or its ed25519:... line)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted, or carry out one operator action."""
    from roost.federation.coordinator import Coordinator, CoordinatorConfig

    config = CoordinatorConfig(
        data_dir=args.data,
        address=args.address,
        db=args.db,
        public_host=args.public_host,
        certificates=tuple(args.certificates) if args.certificates else None,
        root_certificate=args.root_certificate,
        insecure=args.insecure,
    )
    if args.add_person or args.add_node:
        return _operator_action(args, config)
    coordinator = Coordinator(config)
    stopped = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopped.set())
    coordinator.start()
    print(f"coordinator: serving on {coordinator.url} (data: {Path(args.data)})", flush=True)
    dashboard = None
    try:
        dashboard = coordinator_dashboard(args, coordinator.store, config.certificates)
        stopped.wait()
    finally:
        if dashboard is not None:
            dashboard.stop()
        coordinator.close()
    return 0


def _operator_action(args: argparse.Namespace, config) -> int:
    from roost.federation.auth import normalized_public_key
    from roost.federation.store import Store

    Path(config.data_dir).mkdir(parents=True, exist_ok=True)
    store = Store.open(config.database_url())
    try:
        if args.add_person:
            token = store.add_person(args.add_person, operator=args.operator)
            role = "operator" if args.operator else "person"
            print(f"added {role} {args.add_person}; their token (shown once): {token}")
        if args.add_node:
            name, key = args.add_node
            store.register_node(name, normalized_public_key(key))
            print(f"registered node {name}")
    finally:
        store.close()
    return 0
