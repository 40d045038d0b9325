"""What a command shows and writes: progress logs, the summary table, `--out` and `--quiet`."""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING

from roost.log import ensure_logging
from roost.server.history import History

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table


def add_output_options(parser: argparse.ArgumentParser) -> None:
    """`--out DIR` and `--quiet`, as `roost simulate` and `roost server` take them."""
    parser.add_argument(
        "--out",
        metavar="DIR",
        default=None,
        help="write DIR/history.json, model.npz, history.csv and plot.png",
    )
    parser.add_argument("--quiet", action="store_true", help="only print the final summary")


def start_console(quiet: bool) -> Console:
    """The console a command prints to; roost's progress logs go there too (not with `quiet`)."""
    from rich.console import Console

    console = Console(stderr=False)
    ensure_logging(logging.WARNING if quiet else logging.INFO, console=console)
    return console


def _by_round(pairs: list[tuple[int, object]]) -> dict[int, object]:
    return dict(pairs)


def _format(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def history_table(history: History, accuracy_key: str = "accuracy") -> Table:
    """One row per round: results/failures, distributed vs centralized loss and accuracy, and
    the ε spent so far for a private run (central, or each client's with local DP)."""
    from rich.table import Table

    privacy = history.privacy
    title = "roost run summary (dist = clients, central = server)"
    if privacy is not None and privacy.delta is not None:
        title += f"; ε at δ = {privacy.delta:.3g}"
    table = Table(title=title)
    columns = [
        "round",
        "fit ok/fail",
        "eval ok/fail",
        "loss dist",
        "loss central",
        f"{accuracy_key[:3]} dist",
        f"{accuracy_key[:3]} central",
    ]
    if privacy is not None:
        columns.append("ε" if privacy.kind == "central" else "ε per client")
    for column in columns:
        table.add_column(column, justify="right")
    spent = _by_round(privacy.epsilon) if privacy is not None else {}
    loss_d = _by_round(history.losses_distributed)
    loss_c = _by_round(history.losses_centralized)
    acc_d = _by_round(history.metrics_distributed.get(accuracy_key, []))
    acc_c = _by_round(history.metrics_centralized.get(accuracy_key, []))
    records = {record.server_round: record for record in history.rounds}
    rounds = sorted(set(loss_c) | set(records))
    for server_round in rounds:
        record = records.get(server_round)
        cells = [
            str(server_round),
            f"{record.fit_results}/{record.fit_failures}" if record else "-",
            f"{record.evaluate_results}/{record.evaluate_failures}" if record else "-",
            _format(loss_d.get(server_round)),
            _format(loss_c.get(server_round)),
            _format(acc_d.get(server_round)),
            _format(acc_c.get(server_round)),
        ]
        if privacy is not None:
            cells.append(_format(spent.get(server_round)))
        table.add_row(*cells)
    return table
