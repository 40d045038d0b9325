"""What trackers receive (`RoundReport`), what they are (`Tracker`), and the callback and
transport wrapper that feed them; see `roost.tracking`."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from roost.core.types import (
    ClientId,
    EvaluateIns,
    EvaluateRes,
    FitIns,
    FitRes,
    Instruction,
    Metrics,
    Outcome,
)
from roost.errors import ConfigurationError
from roost.server.history import History, RoundRecord

if TYPE_CHECKING:
    from roost.server.loop import ServerState
    from roost.transport.base import Transport


ClientMetrics = dict[str, dict[ClientId, Metrics]]
"""Per phase ("fit", "evaluate"): each client's own metrics."""


@dataclass(frozen=True)
class RoundReport:
    """What one completed round measured, as trackers receive it.

    Attributes:
        server_round: the round just completed (1-based).
        num_rounds: the rounds the run is configured for (None when unknown).
        elapsed: seconds since the run's first round started in this process.
        values: every numeric value History holds for this round, by name: `fit_results`,
            `fit_failures`, `evaluate_results`, `evaluate_failures`, `loss_distributed`,
            `loss_centralized`, `fit_<metric>`, `distributed_<metric>`, `centralized_<metric>`
            (as in `history.csv`) and `measured_<name>` for what the strategy's parts measured.
        client_metrics: per phase ("fit", "evaluate"), each client's metrics; empty unless
            per-client metrics were asked for.
        phases: `(results, failures)` of each phase other than fit and evaluate (a line
            search's probes, secure aggregation's steps: their failures are its dropouts).
        withheld: the round withholds client statistics (central DP): `values` has no counts
            and `phases` is empty, as in `history.json`.
    """

    server_round: int
    num_rounds: int | None
    elapsed: float
    values: Mapping[str, float]
    client_metrics: Mapping[str, Mapping[ClientId, Metrics]] = field(default_factory=dict)
    phases: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    withheld: bool = False


class Tracker:
    """Base class of trackers: override `on_round_end`, and `close` when there is a file to
    finish. Any object with these two methods works as a tracker too."""

    def on_round_end(self, record: RoundReport) -> None:
        """Called after every completed round."""
        raise NotImplementedError

    def close(self) -> None:
        """Called once when the run ends (also when it fails)."""


def numeric(value: object) -> float | None:
    """`value` as a finite float, or None for anything that is not a finite number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _value_at(pairs: Sequence[tuple[int, object]], server_round: int) -> float | None:
    for round_number, value in reversed(pairs):  # this round's values were appended last
        if round_number == server_round:
            return numeric(value)
        if round_number < server_round:
            break
    return None


def round_values(history: History, server_round: int) -> dict[str, float]:
    """Every numeric value `history` holds for `server_round`, named as `RoundReport.values`."""
    values: dict[str, float] = {}
    record = next((r for r in reversed(history.rounds) if r.server_round == server_round), None)
    if record is not None and not record.withheld:
        values.update(record_counts(record))
    for name, pairs in named_series(history):
        value = _value_at(pairs, server_round)
        if value is not None:
            values[name] = value
    return values


def record_counts(record: RoundRecord) -> dict[str, float]:
    """A round's result and failure counts (and its virtual and wall time on a simulated
    clock, as history.csv), named as `RoundReport.values`; for a round that was not withheld."""
    values = {
        name: float(getattr(record, name))
        for name in ("fit_results", "fit_failures", "evaluate_results", "evaluate_failures")
    }
    if record.virtual_time is not None:
        values.update(virtual_time=record.virtual_time, wall_time=float(record.wall_time or 0))
    return values


def named_series(history: History) -> list[tuple[str, Sequence[tuple[int, object]]]]:
    """Every per-round series of `history` under the name `RoundReport.values` gives it:
    the losses, and the metrics and measurements with their prefix."""
    series_by_name: list[tuple[str, Sequence[tuple[int, object]]]] = [
        ("loss_distributed", history.losses_distributed),
        ("loss_centralized", history.losses_centralized),
    ]
    for prefix, series in (
        ("fit_", history.metrics_distributed_fit),
        ("distributed_", history.metrics_distributed),
        ("centralized_", history.metrics_centralized),
        ("measured_", history.measurements),
    ):
        series_by_name.extend((prefix + name, pairs) for name, pairs in series.items())
    return series_by_name


def round_phases(history: History, server_round: int) -> tuple[dict[str, tuple[int, int]], bool]:
    """The `(results, failures)` of `server_round`'s phases other than fit and evaluate, and
    whether the round was withheld (then no counts: they would reveal who took part)."""
    record = next((r for r in reversed(history.rounds) if r.server_round == server_round), None)
    if record is None:
        return {}, False
    if record.withheld:
        return {}, True
    return {name: (int(r), int(f)) for name, (r, f) in record.phases.items()}, False


class ClientMetricsRecorder:
    """Keeps each client's fit and evaluate metrics of the current round, read from the
    outcomes a transport streams back (`observe` wraps the transport).

    `take()` returns what was recorded since the last call and forgets it, so memory holds one
    round's metrics at most.
    """

    def __init__(self) -> None:
        self._metrics: ClientMetrics = {}

    def observe(self, transport: Transport) -> Transport:
        """`transport`, recording the metrics of every fit and evaluate result it returns."""
        return _RecordingTransport(transport, self)

    def record(self, instruction: Instruction, outcome: object, client_id: ClientId) -> None:
        """Remember `client_id`'s metrics if `outcome` is a fit or evaluate result."""
        if isinstance(instruction, FitIns) and isinstance(outcome, FitRes):
            self._metrics.setdefault("fit", {})[client_id] = dict(outcome.metrics)
        elif isinstance(instruction, EvaluateIns) and isinstance(outcome, EvaluateRes):
            metrics = {"loss": outcome.loss, **outcome.metrics}
            self._metrics.setdefault("evaluate", {})[client_id] = metrics

    def take(self) -> ClientMetrics:
        """The metrics recorded since the last call; the recorder starts empty again."""
        taken, self._metrics = self._metrics, {}
        return taken


class _RecordingTransport:
    """A transport that passes everything through and shows results to a recorder."""

    def __init__(self, transport: Transport, recorder: ClientMetricsRecorder) -> None:
        self._transport = transport
        self._recorder = recorder

    def wait_for_clients(self, count: int, timeout: float | None = None) -> list[ClientId]:
        return self._transport.wait_for_clients(count, timeout)

    def run(
        self, cohort: Sequence[tuple[ClientId, Instruction]], timeout: float | None
    ) -> Iterator[Outcome]:
        instructions = dict(cohort)
        for client_id, outcome in self._transport.run(cohort, timeout):
            if client_id in instructions:
                self._recorder.record(instructions[client_id], outcome, client_id)
            yield client_id, outcome

    def close(self) -> None:
        self._transport.close()


class TrackRounds:
    """The round loop's `on_round_end` callback that hands each round to `trackers`.

    Args:
        trackers: objects with `on_round_end(record)` and `close()`.
        num_rounds: the rounds the run is configured for (shown as i/N; used for ETAs).
        client_metrics: also hand trackers each client's own fit and evaluate metrics, read
            from the transport that `observe` returns (the run must use that one).
        then: another `on_round_end` callback (a checkpoint, say), called first.
    """

    def __init__(
        self,
        trackers: Sequence[Tracker],
        *,
        num_rounds: int | None = None,
        client_metrics: bool = False,
        then: Callable[[ServerState], None] | None = None,
    ) -> None:
        self.trackers = list(trackers)
        self.num_rounds = num_rounds
        self.client_metrics = ClientMetricsRecorder() if client_metrics else None
        self._then = then
        self._started = time.perf_counter()

    def check(self, withheld: bool) -> None:
        """Refuse per-client metrics for a run whose strategy withholds client statistics."""
        if self.client_metrics is not None and withheld:
            raise ConfigurationError(
                "client metrics are client data that central DP does not protect, so its runs "
                "withhold them; drop client_metrics (--client-metrics)"
            )

    def observe(self, transport: Transport) -> Transport:
        """The transport for the run: `transport` itself, or with `client_metrics` one that
        records every client's metrics on their way to the round loop."""
        if self.client_metrics is None:
            return transport
        return self.client_metrics.observe(transport)

    def __call__(self, state: ServerState) -> None:
        if self._then is not None:
            self._then(state)
        taken = self.client_metrics.take() if self.client_metrics is not None else {}
        phases, withheld = round_phases(state.history, state.server_round)
        record = RoundReport(
            server_round=state.server_round,
            num_rounds=self.num_rounds,
            elapsed=time.perf_counter() - self._started,
            values=round_values(state.history, state.server_round),
            client_metrics=taken,
            phases=phases,
            withheld=withheld,
        )
        for tracker in self.trackers:
            tracker.on_round_end(record)

    def close(self) -> None:
        """Close every tracker (each one, even if an earlier one fails; the first error wins)."""
        errors = []
        for tracker in self.trackers:
            try:
                tracker.close()
            except Exception as error:
                errors.append(error)
        if errors:
            raise errors[0]
