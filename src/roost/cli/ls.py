"""`roost ls`: list your runs on a federation (all runs, for an operator).

roost ls --federation prod
"""

from __future__ import annotations

import argparse
import time

from roost.cli.federations import add_connection_options, federation_from_args
from roost.cli.options import CommandParser


def add_command(root: CommandParser) -> None:
    """Add `roost ls` to `root`."""
    parser = root.add_command("ls", __doc__)
    add_connection_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Print one line per run: id, status, project, owner, when, and why it ended."""
    runs = federation_from_args(args).client().runs()
    if not runs:
        print("no runs yet: submit one with `roost run DIR --federation NAME`")
        return 0
    print(f"{'RUN':>5}  {'STATUS':<10} {'PROJECT':<20} {'OWNER':<12} SUBMITTED")
    for run in runs:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(run["created"]))
        line = f"{run['run']:>5}  {run['status']:<10} {run['project'][:20]:<20} "
        line += f"{run['owner'][:12]:<12} {when}"
        if run["message"]:
            line += f"  {run['message']}"
        print(line)
    return 0
