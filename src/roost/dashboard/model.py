"""What a run page shows, as plain data: one `RunView`, built from a live run's round reports
(`RunModel`, fed by `DashboardTracker`) or from a History a run wrote (`view_of_history`).

Both read only what the run's outputs show: a round that withholds client statistics (central
DP) arrives without its counts, and its failures are never kept (see `RunModel.failures`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from roost.server.history import History
from roost.tracking.base import RoundReport, Tracker, named_series, numeric, record_counts
from roost.tracking.failures import FailureGroup


@dataclass(frozen=True)
class RoundPoint:
    """One completed round: its values (named as `RoundReport.values`), the counts of phases
    other than fit and evaluate (`{phase: (results, failures)}`), and whether it was withheld."""

    server_round: int
    values: Mapping[str, float]
    phases: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    withheld: bool = False


@dataclass(frozen=True)
class Failure:
    """One distinct error of a run: how often, which nodes, in which rounds."""

    kind: str
    reason: str
    count: int
    node_ids: tuple[str, ...]
    rounds: tuple[int, ...]
    node_counts: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class RunView:
    """Everything a run page shows, read at one moment."""

    run_id: str
    title: str
    status: str
    num_rounds: int | None
    rounds: tuple[RoundPoint, ...]
    elapsed: float | None = None
    rounds_elapsed: float | None = None
    """Seconds from the first round's start to the last round's end (the pace of the ETA;
    None: `elapsed` is the pace)."""
    since_round: float | None = None
    """Seconds since the last round ended, when known: the ETA counts down between rounds."""
    message: str = ""
    failures: tuple[Failure, ...] = ()
    config: Mapping[str, Any] = field(default_factory=dict)

    @property
    def current_round(self) -> int:
        """The last completed round (0 before the first)."""
        return self.rounds[-1].server_round if self.rounds else 0

    @property
    def withheld(self) -> bool:
        """Whether the run withholds client statistics (central DP): no counts, no failures."""
        return any(point.withheld for point in self.rounds)

    @property
    def eta(self) -> float | None:
        """Seconds until the last round, at the pace so far (None when unknown or done)."""
        done = self.current_round
        pace = self.rounds_elapsed if self.rounds_elapsed is not None else self.elapsed
        if pace is None or not done or not self.num_rounds or self.status != "running":
            return None
        # The pace of the rounds this view holds: a resumed run's process saw only its own.
        left = pace / len(self.rounds) * max(self.num_rounds - done, 0)
        return max(left - (self.since_round or 0.0), 0.0)

    @property
    def target_epsilon(self) -> float | None:
        """The ε the run may spend at most (`--target-epsilon`), when it has one."""
        for key in ("target_epsilon", "--target-epsilon"):
            if (value := numeric(self.config.get(key))) is not None:
                return value
        return None

    def series(self, name: str) -> list[tuple[int, float]]:
        """`(round, value)` of one value name, for the rounds that have it."""
        return [(p.server_round, p.values[name]) for p in self.rounds if name in p.values]


class RunModel:
    """A live run, in memory: the rounds its reports brought, its status and its failures.

    Args:
        run_id: the run's name in the dashboard's URLs.
        title: what the page calls the run.
        num_rounds: the rounds the run is configured for (None when unknown).
        config: the run's settings, shown on the page (plain values only).
        failures: returns the run's failures so far (a `FailureDigest`'s groups).

    Thread-safe: the round loop writes, the web server's threads read. `version` grows with
    every change, so a reader knows when to render again.
    """

    def __init__(
        self,
        run_id: str = "run",
        title: str = "run",
        num_rounds: int | None = None,
        config: Mapping[str, Any] | None = None,
        failures: Callable[[], Iterable[FailureGroup]] | None = None,
    ) -> None:
        self.run_id = run_id
        self.title = title
        self.num_rounds = num_rounds
        self.config = dict(config or {})
        self._failures = failures
        self._lock = threading.Lock()
        self._rounds: list[RoundPoint] = []
        self._status = "running"
        self._message = ""
        self._started = time.monotonic()
        self._elapsed: float | None = None
        self._finished_at: float | None = None
        self._round_at: float | None = None
        self.version = 0

    def add_round(self, report: RoundReport) -> None:
        """Record one completed round."""
        point = RoundPoint(
            report.server_round,
            dict(report.values),
            {name: (int(r), int(f)) for name, (r, f) in report.phases.items()},
            report.withheld,
        )
        with self._lock:
            self._rounds.append(point)
            if report.num_rounds is not None:
                self.num_rounds = report.num_rounds
            self._elapsed = report.elapsed
            self._round_at = time.monotonic()
            self.version += 1

    def finish(self, status: str = "finished", message: str = "") -> None:
        """The run ended (`status`: "finished" or "failed", with `message` saying why)."""
        with self._lock:
            self._status, self._message = status, message
            self._finished_at = time.monotonic()
            self.version += 1

    def failures(self, withheld: bool) -> tuple[Failure, ...]:
        """The run's failures, most frequent first; none for a run that withholds client
        statistics (which node failed is a client statistic)."""
        if withheld or self._failures is None:
            return ()
        for _ in range(5):  # the run's thread may add a failure while this one copies
            try:
                return self._copy_failures(list(self._failures()))
            except RuntimeError:
                continue
        return ()

    @staticmethod
    def _copy_failures(groups: list[FailureGroup]) -> tuple[Failure, ...]:
        groups.sort(key=lambda g: -g.count)
        return tuple(
            Failure(
                g.kind,
                g.reason,
                g.count,
                tuple(g.client_ids),
                tuple(sorted(g.rounds)),
                dict(g.client_counts),
            )
            for g in groups
        )

    def view(self) -> RunView:
        """The run as the page shows it now."""
        with self._lock:
            rounds = tuple(self._rounds)
            status, message = self._status, self._message
            end = self._finished_at if self._finished_at is not None else time.monotonic()
            rounds_elapsed = self._elapsed
            since_round = None if self._round_at is None else end - self._round_at
        withheld = any(point.withheld for point in rounds)
        return RunView(
            run_id=self.run_id,
            title=self.title,
            status=status,
            num_rounds=self.num_rounds,
            rounds=rounds,
            elapsed=end - self._started,
            rounds_elapsed=rounds_elapsed,
            since_round=since_round,
            message=message,
            failures=self.failures(withheld),
            config=self.config,
        )


class DashboardTracker(Tracker):
    """A tracker that feeds a `RunModel` every round the run completes."""

    def __init__(self, model: RunModel) -> None:
        self.model = model

    def on_round_end(self, record: RoundReport) -> None:
        """Add the round to the model (the page updates within a second)."""
        self.model.add_round(record)


def history_points(history: History) -> tuple[RoundPoint, ...]:
    """Every round of `history` as `RoundPoint`s, with the values `round_values` would give
    (counts only for rounds that were not withheld), read in one pass."""
    by_round: dict[int, dict[str, float]] = {}
    phases: dict[int, dict[str, tuple[int, int]]] = {}
    withheld: set[int] = set()
    for record in history.rounds:
        values = by_round.setdefault(record.server_round, {})
        if record.withheld:
            withheld.add(record.server_round)
            continue
        values.update(record_counts(record))
        phases[record.server_round] = {k: (int(v[0]), int(v[1])) for k, v in record.phases.items()}
    for name, pairs in named_series(history):
        for server_round, value in pairs:
            if server_round > 0 and (number := numeric(value)) is not None:
                by_round.setdefault(server_round, {})[name] = number
    return tuple(
        RoundPoint(r, by_round[r], phases.get(r, {}), r in withheld) for r in sorted(by_round)
    )
