"""`roost privacy epsilon | noise`: plan a private run before it starts.

    roost privacy epsilon --noise-multiplier 1.0 --rounds 200 --q 0.01 --population 10000
    roost privacy noise --target-epsilon 3 --rounds 200 --cohort 100 --population 10000

The questions and their options are `roost.privacy.planning`'s; every number comes from
`dp_accounting` (`roost.privacy.accounting`).
"""

from __future__ import annotations

from roost.cli.options import CommandParser
from roost.privacy import planning


def add_command(root: CommandParser) -> None:
    """Add `roost privacy` to `root`."""
    parser = root.add_command(
        "privacy",
        help="plan a private run: ε after R rounds, or the noise for a target ε",
        description="Answer the two questions of planning a DP-FedAvg run (central DP): "
        "`epsilon`, the ε spent after R rounds with noise multiplier σ, sampling rate q (or m "
        "of N clients) and δ; `noise`, the σ that keeps ε within a target.",
    )
    planning.add_arguments(parser)
    parser.set_defaults(handler=planning.run)
