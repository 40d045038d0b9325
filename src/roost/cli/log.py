"""`roost log RUN`: show a run's log; `--follow` keeps showing it until the run ends.

roost log 7 --federation prod --follow
"""

from __future__ import annotations

import argparse
import sys

from roost.cli.federations import add_connection_options, federation_from_args
from roost.cli.options import CommandParser


def add_command(root: CommandParser) -> None:
    """Add `roost log` to `root`."""
    parser = root.add_command("log", __doc__)
    parser.add_argument("run", help="the run id (`roost ls` lists them)")
    parser.add_argument("--follow", "-f", action="store_true", help="until the run ends")
    add_connection_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Print the log; with --follow, exit 0 when the run completed and 1 otherwise."""
    client = federation_from_args(args).client()
    last = client.follow_log(args.run, _write, follow=args.follow)
    if args.follow:
        print(f"run {args.run}: {last['status']}")
        return 0 if last["status"] == "completed" else 1
    return 0


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()
