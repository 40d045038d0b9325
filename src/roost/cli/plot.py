"""`roost plot`: draw accuracy and loss per round from a run's history.json."""

from __future__ import annotations

import argparse
from pathlib import Path

from roost.cli.options import CommandParser


def add_command(root: CommandParser) -> None:
    """Add `roost plot` to `root`."""
    parser = root.add_command(
        "plot",
        help="draw accuracy and loss per round from a run's history.json",
        description="Draw plot.png from history.json (written by `roost simulate --out DIR`): "
        "accuracy and loss per round, distributed (clients) vs centralized (server).",
    )
    parser.add_argument(
        "history", metavar="HISTORY", help="a history.json, or the directory that holds one"
    )
    parser.add_argument(
        "-o",
        "--out",
        metavar="PNG",
        default=None,
        help="where to write the chart (default: plot.png next to history.json)",
    )
    parser.add_argument(
        "--metric",
        default="accuracy",
        help="metric to draw in the accuracy panel (default: %(default)s)",
    )
    parser.add_argument("--title", default=None, help="a title above both panels")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Write the chart and say where."""
    from roost.plotting import plot_history

    source = Path(args.history)
    if source.is_dir():
        source = source / "history.json"
    target = Path(args.out) if args.out else source.with_name("plot.png")
    print(f"wrote {plot_history(source, target, accuracy_key=args.metric, title=args.title)}")
    return 0
