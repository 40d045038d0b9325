"""What a command shows and records: logs, live progress, trackers, the failure summary, the
summary table, `--out`, and the exit status.

`Reporter` sets all of it up from the options `add_output_options` adds. Logs and progress go to
standard output: on a terminal through rich (one live progress line, logs above it); elsewhere as
plain lines that never wrap, so files and CI logs keep one record per line.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from roost.cli.dashboard import RunDashboard, add_dashboard_option, check_dashboard_options
from roost.cli.progress import ProgressTracker
from roost.errors import ConfigurationError
from roost.log import log_handler
from roost.server.history import History, RoundRecord
from roost.tracking.base import Tracker, TrackRounds
from roost.tracking.failures import ROOST_LOGGER, FailureDigest, spans

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

_HANDLER_NAMES = ("roost-cli", "roost-default")

EXIT_NOTHING_TRAINED = 1
"""The exit status of a run in which every fit of some round failed (without --allow-failures)."""


def add_output_options(parser: argparse.ArgumentParser) -> None:
    """`--out`, `--quiet`/`--verbose`, tracking and failure options of `roost simulate | run |
    server`."""
    parser.add_argument(
        "--out",
        metavar="DIR",
        default=None,
        help="write DIR/history.json, model.npz, history.csv and plot.png",
    )
    parser.add_argument(
        "--no-plot",
        action="store_true",
        help="write no plot.png with --out (skips matplotlib: about 1 s less per run)",
    )
    parser.add_argument("--quiet", action="store_true", help="only print the final summary")
    parser.add_argument(
        "--verbose", action="store_true", help="also log every phase of every round"
    )
    parser.add_argument(
        "--tensorboard",
        metavar="DIR",
        default=None,
        help="log every round's values to TensorBoard event files in DIR",
    )
    parser.add_argument(
        "--mlflow",
        metavar="URI",
        nargs="?",
        const="",
        default=None,
        help="log the run to MLflow at URI (default: the local store ./mlruns)",
    )
    parser.add_argument(
        "--client-metrics",
        action="store_true",
        help="with --tensorboard/--mlflow: also log every client's fit/evaluate metrics",
    )
    parser.add_argument(
        "--allow-failures",
        action="store_true",
        help="exit 0 even when every fit of a round failed",
    )
    add_dashboard_option(parser)


def configure_logging(console: Console, level: int) -> None:
    """Send roost's logs at `level` and above to `console`, as the command's own output.

    Leaves logging alone where the embedding program (or a test runner) configured it.
    """
    logger = logging.getLogger(ROOST_LOGGER)
    if logging.getLogger().handlers:
        return
    for handler in list(logger.handlers):
        if handler.get_name() in _HANDLER_NAMES:
            logger.removeHandler(handler)
    handler = log_handler(console)
    handler.set_name(_HANDLER_NAMES[0])
    handler.setLevel(level)
    logger.addHandler(handler)
    # Failures are logged at WARNING: the failure digest (summary, dashboard) must see them
    # even when --quiet shows only errors.
    logger.setLevel(min(level, logging.WARNING))


class Reporter:
    """What one `roost simulate | server` run shows and records, set up from its options.

    Use as a context manager around the run: on entry it starts the live progress and the
    failure digest; on exit it closes the trackers (TensorBoard, MLflow, progress). Pass
    `trackers` to the run (or `track` as its `on_round_end`), then `conclude(history)`.

    Args:
        args: the parsed options of `add_output_options`.
        num_rounds: the rounds the run is configured for.
        params: the run's settings, for MLflow's parameters.
        logs: the level of roost's logs shown without --quiet or --verbose (a server shows
            its INFO lines: who connected, TLS, resuming; a simulation its warnings only).
    """

    def __init__(
        self,
        args: argparse.Namespace,
        num_rounds: int | None,
        params: Mapping[str, Any] | None = None,
        *,
        logs: int = logging.WARNING,
    ) -> None:
        from rich.console import Console

        if args.quiet and args.verbose:
            raise ConfigurationError("--quiet and --verbose contradict each other: pick one")
        self.console = Console(stderr=False)
        if not self.console.is_terminal:  # a file or CI log: the table as wide as it needs
            self.console = Console(stderr=False, width=160)
        self.allow_failures: bool = args.allow_failures
        quiet_level = logging.ERROR if args.quiet else logs
        configure_logging(self.console, logging.INFO if args.verbose else quiet_level)
        self.digest = FailureDigest()
        self.trackers: list[Tracker] = []
        if not args.quiet:
            live = self.console.is_terminal
            self.trackers.append(ProgressTracker(self.console, num_rounds, live=live))
        self.trackers.extend(_writers(args, params))
        self.dashboard: RunDashboard | None = None
        check_dashboard_options(args)
        if getattr(args, "dashboard", None) is not None:
            self.dashboard = RunDashboard(args, num_rounds, params, self.digest)
            self.trackers.append(self.dashboard.tracker)
        self.track = TrackRounds(self.trackers, num_rounds=num_rounds)
        self.ended_early = ""
        """Why the run stopped before its last round (the privacy budget), for the dashboard."""

    def __enter__(self) -> Reporter:
        self.digest.install()
        if self.dashboard is not None:
            self.dashboard.start(self.print)
        for tracker in self.trackers:
            if isinstance(tracker, ProgressTracker):
                tracker.start()
        return self

    def __exit__(self, exc_type: object, error: BaseException | None, *_: object) -> None:
        try:
            self.track.close()
        finally:
            self.digest.uninstall()
            if self.dashboard is not None:
                self.dashboard.finish(error, self.ended_early)

    def print(self, line: str | None) -> None:
        """Print one plain line (nothing for None or "")."""
        if line:
            self.console.print(line, soft_wrap=True, markup=False, highlight=False)

    def conclude(self, history: History) -> int:
        """Print the failure summary; return the exit status (`EXIT_NOTHING_TRAINED` when every
        fit of a round failed, unless `--allow-failures`)."""
        try:
            return self._conclude(history)
        finally:
            if self.dashboard is not None:
                self.dashboard.wait(self.print)

    def _conclude(self, history: History) -> int:
        lines = self.digest.summary_lines()
        if lines:
            self.print(
                f"failure summary: {self.digest.total} failure(s), {len(lines)} distinct error(s)"
            )
            for line in lines:
                self.print(f"  {line}")
        starved = [r.server_round for r in history.rounds if r.fit_failures and not r.fit_results]
        if not starved or self.allow_failures:
            return 0
        print(
            f"roost: error: every fit failed in round(s) {spans(starved)}, so nothing was "
            "trained there; fix the clients (see the failure summary above) or pass "
            "--allow-failures to accept such a run",
            file=sys.stderr,
        )
        return EXIT_NOTHING_TRAINED


def _writers(args: argparse.Namespace, params: Mapping[str, Any] | None) -> list[Tracker]:
    writers: list[Tracker] = []
    if args.tensorboard:
        from roost.tracking.tensorboard_writer import TensorBoardTracker

        writers.append(TensorBoardTracker(args.tensorboard))
    if args.mlflow is not None:
        from roost.tracking.mlflow_writer import MLflowTracker

        writers.append(MLflowTracker(args.mlflow or None, params=params))
    return writers


def run_params(values: Mapping[str, Any]) -> dict[str, Any]:
    """The run's settings worth recording with it (MLflow's parameters): every option that has a
    plain value, from `values` (`vars(args)`, or `roost.cli.settings.resolved_options`)."""
    return {
        name: value
        for name, value in sorted(values.items())
        if isinstance(value, bool | int | float | str) and name not in ("command",)
    }


def _by_round(pairs: list[tuple[int, object]]) -> dict[int, object]:
    return dict(pairs)


def _format(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _counts(record: RoundRecord | None) -> tuple[str, str]:
    """The "fit ok/fail" and "eval ok/fail" cells of a round."""
    if record is None:
        return "-", "-"
    if record.withheld:  # central DP: the counts would reveal who took part
        return "withheld", "withheld"
    fit = f"{record.fit_results}/{record.fit_failures}"
    return fit, f"{record.evaluate_results}/{record.evaluate_failures}"


def _privacy_columns(history: History) -> tuple[str, dict[str, dict[int, Any]]]:
    """The table's title, with the δ of each ε shown, and its ε columns by round: client-level
    (central, or each client's with local DP), then record-level (DP-SGD clients' largest)."""
    title = "roost run summary (dist = clients, central = server)"
    columns: dict[str, dict[int, Any]] = {}
    privacy, record = history.privacy, history.record_privacy
    if privacy is not None:
        if privacy.delta is not None:
            title += f"; ε at δ = {privacy.delta:.3g}"
        columns["ε" if privacy.kind == "central" else "ε per client"] = _by_round(privacy.epsilon)
    if record is not None:
        title += f"; record ε at δ = {record.delta:.3g}"
        columns["record ε"] = _by_round(record.epsilon)
    return title, columns


def history_table(history: History, accuracy_key: str = "accuracy") -> Table:
    """One row per round: results/failures, distributed vs centralized loss and accuracy, the
    clients' training loss and accuracy (when their fits report `train_loss` / `train_accuracy`),
    and the ε spent so far for a private run (central, or each client's with local DP), with
    the largest record-level ε of DP-SGD clients beside it; on a simulated clock, each
    round's virtual time."""
    from rich.table import Table

    title, spent = _privacy_columns(history)
    table = Table(title=title)
    # On a simulated clock, each round's virtual time: what "time to accuracy" is read from.
    times = {
        r.server_round: f"{r.virtual_time:.2f}"
        for r in history.rounds
        if r.virtual_time is not None and not r.withheld
    }
    columns = [
        "round",
        *(["virtual s"] if times else []),
        "fit ok/fail",
        "eval ok/fail",
        "loss dist",
        "loss central",
        f"{accuracy_key[:3]} dist",
        f"{accuracy_key[:3]} central",
    ]
    # The clients' training metrics, when they report them (aggregated over each round's fits).
    training = {
        label: _by_round(history.metrics_distributed_fit[name])
        for name, label in (
            ("train_loss", "train loss"),
            (f"train_{accuracy_key}", f"train {accuracy_key[:3]}"),
        )
        if name in history.metrics_distributed_fit
    }
    columns.extend(training)
    columns.extend(spent)
    for column in columns:
        table.add_column(column, justify="right")
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
            *([times.get(server_round, "-")] if times else []),
            *_counts(record),
            _format(loss_d.get(server_round)),
            _format(loss_c.get(server_round)),
            _format(acc_d.get(server_round)),
            _format(acc_c.get(server_round)),
            *(_format(values.get(server_round)) for values in training.values()),
            *(_format(values.get(server_round)) for values in spent.values()),
        ]
        table.add_row(*cells)
    return table
