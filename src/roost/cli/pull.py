"""`roost pull RUN`: download a run's results (model.npz, history.json/csv, plot.png).

roost pull 7 --federation prod --out results/7
"""

from __future__ import annotations

import argparse
from pathlib import Path

from roost.cli.federations import add_connection_options, federation_from_args
from roost.cli.options import CommandParser
from roost.errors import ConfigurationError


def add_command(root: CommandParser) -> None:
    """Add `roost pull` to `root`."""
    parser = root.add_command("pull", __doc__)
    parser.add_argument("run", help="the run id (`roost ls` lists them)")
    parser.add_argument(
        "--out", metavar="DIR", default=None, help="where to write them (default: run-RUN)"
    )
    add_connection_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Write every artifact of the run into --out."""
    client = federation_from_args(args).client()
    artifacts = client.artifacts(args.run)
    if not artifacts:
        status = client.run(args.run)["status"]
        raise ConfigurationError(
            f"run {args.run} has no results yet (it is {status}); pull it once it has completed"
        )
    out = Path(args.out or f"run-{args.run}")
    out.mkdir(parents=True, exist_ok=True)
    for artifact in artifacts:
        path = out / artifact["name"]
        path.write_bytes(client.artifact(args.run, artifact["name"]))
        print(f"wrote {path}")
    return 0
