"""`roost stop RUN`: stop a run (its server ends; its nodes stop their part).

roost stop 7 --federation prod
"""

from __future__ import annotations

import argparse

from roost.cli.federations import add_connection_options, federation_from_args
from roost.cli.options import CommandParser


def add_command(root: CommandParser) -> None:
    """Add `roost stop` to `root`."""
    parser = root.add_command("stop", __doc__)
    parser.add_argument("run", help="the run id (`roost ls` lists them)")
    add_connection_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Ask the coordinator to stop the run."""
    answer = federation_from_args(args).client().stop(args.run)
    print(f"run {answer['run']}: {answer['status']}")
    return 0
