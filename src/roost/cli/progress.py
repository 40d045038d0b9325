"""Live progress of a run: round i/N, elapsed time, ETA, results, failures and latest metrics.

On a terminal it is one line that rich keeps updating (logs print above it); elsewhere (a file,
CI) one plain, unwrapped line per round. Numbers are shown to 4 significant digits.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from roost.tracking.base import RoundReport, Tracker

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID

_COUNTS = ("fit_results", "fit_failures", "evaluate_results", "evaluate_failures")
_SHOWN_PREFIXES = ("loss_", "distributed_", "centralized_", "measured_epsilon")


def significant(value: float) -> str:
    """`value` to 4 significant digits (integers as they are)."""
    if float(value).is_integer() and abs(value) < 1e6:
        return str(int(value))
    return f"{value:.4g}"


def duration(seconds: float) -> str:
    """Seconds as "4.2 s", "3 min 05 s" or "1 h 02 min"."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def round_summary(record: RoundReport) -> str:
    """The round's results and failures, then its losses and metrics, in one line."""
    values = record.values
    parts = []
    if "fit_results" in values:
        parts.append(f"fit {significant(values['fit_results'])} ok")
        if values.get("fit_failures"):
            parts[-1] += f", {significant(values['fit_failures'])} failed"
    if values.get("evaluate_results") or values.get("evaluate_failures"):
        parts.append(f"evaluate {significant(values.get('evaluate_results', 0))} ok")
        if values.get("evaluate_failures"):
            parts[-1] += f", {significant(values['evaluate_failures'])} failed"
    shown = [
        f"{name} {significant(value)}"
        for name, value in values.items()
        if name not in _COUNTS and name.startswith(_SHOWN_PREFIXES)
    ]
    return " · ".join(parts + shown)


class ProgressTracker(Tracker):
    """Shows each round as it completes on `console` (live on a terminal, else plain lines).

    Call `start()` before the run so a terminal shows the running clock from the first round.
    """

    def __init__(self, console: Console, num_rounds: int | None, *, live: bool) -> None:
        self.console = console
        self.num_rounds = num_rounds
        self.live = live
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._started = time.perf_counter()
        self._first_round: int | None = None

    def start(self) -> None:
        """Start the clock (and, on a terminal, the live line)."""
        self._started = time.perf_counter()
        if not self.live:
            return
        from rich.progress import (
            BarColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.table import Column

        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("round {task.completed}/{task.total}"),
            BarColumn(bar_width=20),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            # The summary takes the width left over, cut short rather than squeezing the clock.
            TextColumn(
                "{task.fields[summary]}",
                table_column=Column(ratio=1, no_wrap=True, overflow="ellipsis"),
            ),
            console=self.console,
            expand=True,
        )
        self._progress.start()
        self._task = self._progress.add_task("run", total=self.num_rounds, summary="starting")

    def eta(self, server_round: int) -> float | None:
        """Seconds left, from the pace of the rounds run in this process so far."""
        if self.num_rounds is None or self._first_round is None:
            return None
        done = server_round - self._first_round + 1
        elapsed = time.perf_counter() - self._started
        return elapsed / done * max(self.num_rounds - server_round, 0)

    def on_round_end(self, record: RoundReport) -> None:
        """Show the round just completed."""
        if self._first_round is None:
            self._first_round = record.server_round
        summary = round_summary(record)
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=record.server_round, summary=summary)
            return
        total = f"/{self.num_rounds}" if self.num_rounds is not None else ""
        eta = self.eta(record.server_round)
        clock = duration(time.perf_counter() - self._started)
        timing = f"{clock} elapsed" + (f", ETA {duration(eta)}" if eta is not None else "")
        line = f"round {record.server_round}{total} ({timing}): {summary}"
        self.console.print(line, soft_wrap=True, markup=False, highlight=False)

    def close(self) -> None:
        """Stop the live line (it stays on screen as the last state)."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
