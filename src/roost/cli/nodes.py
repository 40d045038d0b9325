"""`roost nodes`: list a federation's nodes: online, last seen, runs served, failures.

roost nodes --federation prod
"""

from __future__ import annotations

import argparse
import time

from roost.cli.federations import add_connection_options, federation_from_args
from roost.cli.options import CommandParser


def add_command(root: CommandParser) -> None:
    """Add `roost nodes` to `root`."""
    parser = root.add_command("nodes", __doc__)
    add_connection_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Print one line per registered node."""
    nodes = federation_from_args(args).client().nodes()
    if not nodes:
        print("no nodes registered: roost coordinator --add-node NAME KEY.pub")
        return 0
    print(f"{'NODE':<20} {'ONLINE':<7} {'LAST SEEN':<20} {'RUNS':>5} {'FAILURES':>8}")
    for node in nodes:
        seen = (
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(node["last_seen"]))
            if node["last_seen"]
            else "never"
        )
        online = "yes" if node["online"] else "no"
        print(
            f"{node['name'][:20]:<20} {online:<7} {seen:<20} "
            f"{node['runs_served']:>5} {node['failures']:>8}"
        )
    return 0
