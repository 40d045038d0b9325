"""`roost plot`: draw accuracy and loss per round from a run's history.json.

    roost simulate --out out && roost plot out

Draws plot.png next to history.json (or where `--out` says): accuracy and loss per round,
distributed (the clients') beside centralized (the server's).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from roost.cli.options import CommandParser
from roost.errors import ConfigurationError


def add_command(root: CommandParser) -> None:
    """Add `roost plot` to `root`."""
    parser = root.add_command("plot", __doc__)
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
        default=None,
        help="metric to draw in the first panel (default: accuracy, or the run's first metric "
        "with 'acc' in its name)",
    )
    parser.add_argument("--title", default=None, help="a title above both panels")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Write the chart and say where."""
    from roost.plotting import load_history, metric_names, plot_history

    source = Path(args.history)
    if source.is_dir():
        source = source / "history.json"
    history = load_history(source)
    names = metric_names(history)
    if args.metric is not None and args.metric not in names:
        listed = ", ".join(names) if names else "none (the run recorded losses only)"
        raise ConfigurationError(f"{source} has no metric {args.metric!r}; its metrics: {listed}")
    target = Path(args.out) if args.out else source.with_name("plot.png")
    try:
        written = plot_history(
            history, target, accuracy_key=args.metric or "accuracy", title=args.title
        )
    except ImportError:
        raise ConfigurationError(
            "roost plot draws with matplotlib, which is not installed: pip install matplotlib"
        ) from None
    print(f"wrote {written}")
    return 0
