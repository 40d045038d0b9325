"""`roost privacy epsilon | noise`: plan a private run: ε after R rounds, or σ for a target ε.

    roost privacy epsilon --noise-multiplier 1.0 --rounds 200 --q 0.01 --population 10000
    roost privacy noise --target-epsilon 3 --rounds 200 --cohort 100 --population 10000

For DP-FedAvg (central DP): `epsilon` is the ε spent after R rounds with noise multiplier σ,
sampling rate q (or m of N clients) and δ; `noise` is the σ that keeps ε within a target. Every
number comes from the `dp_accounting` library (`roost.privacy.accounting`); the options are
`roost.privacy.planning`'s.
"""

from __future__ import annotations

from roost.cli.options import CommandParser
from roost.privacy import planning


def add_command(root: CommandParser) -> None:
    """Add `roost privacy` to `root`."""
    parser = root.add_command("privacy", __doc__)
    planning.add_arguments(parser)
    parser.set_defaults(handler=planning.run)
