"""History: what a run measured, round by round, with Flower's field names."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

from roost.core.types import Metrics, Parameters, Scalar

MetricSeries = dict[str, list[tuple[int, Scalar]]]

# The measurement names under which the privacy parts record what a run spent: `CentralDP`
# (roost.privacy.central) the ε of the whole federation, `LocalDPAccountant` (roost.privacy.local)
# each client's ε; both the δ it is reported at.
CENTRAL_EPSILON = "epsilon"
LOCAL_EPSILON = "local_epsilon"
DELTA = "delta"


@dataclass(frozen=True)
class Privacy:
    """The privacy a run spent: ε after each round, at one δ.

    Attributes:
        kind: "central": (ε, δ)-DP of everything the server releases, for any one client's
            participation (client-level DP, under the sampling the accountant assumed);
            "local": (ε, δ)-DP of each client's own messages, bounding what even the server can
            learn about that client's data (a bound for a client that took part in every round);
            "record": (ε, δ)-DP of each client's messages for any one of its examples
            (record-level DP-SGD): after each round, the largest ε a client reported that round,
            for everything that client has sent so far.
        delta: the δ every ε is reported at (None if the run did not record it).
        epsilon: `(round, ε)` pairs, ε after that round.
    """

    kind: str
    delta: float | None
    epsilon: list[tuple[int, float]]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data."""
        return {
            "kind": self.kind,
            "delta": self.delta,
            "epsilon": [[r, v] for r, v in self.epsilon],
        }


@dataclass
class RoundRecord:
    """How many clients delivered in one round's phases, and which failed to train.

    Fit and evaluate have their own fields (Flower users look for them); any other phase (a line
    search's probes, secure aggregation's steps) is counted in `phases` as `[results, failures]`.
    A `withheld` round (central DP) records no counts: they would reveal who took part.
    """

    server_round: int
    fit_results: int = 0
    fit_failures: int = 0
    evaluate_results: int = 0
    evaluate_failures: int = 0
    failed_clients: list[str] = field(default_factory=list)
    phases: dict[str, list[int]] = field(default_factory=dict)
    withheld: bool = False
    # Record-level DP-SGD: the largest ε (and δ) the round's clients reported for their own data.
    record_epsilon: float | None = None
    record_delta: float | None = None
    # On a simulated clock only: the virtual seconds since the run began when this round (or
    # asynchronous aggregation) ended, and the wall-clock seconds this run process had spent.
    virtual_time: float | None = None
    wall_time: float | None = None

    def count(self, phase: str, results: int, failed_clients: list[str]) -> None:
        """Add one phase's outcome counts (a phase may run several times in a round)."""
        if phase == "fit":
            self.fit_results += results
            self.fit_failures += len(failed_clients)
            self.failed_clients.extend(failed_clients)
        elif phase == "evaluate":
            self.evaluate_results += results
            self.evaluate_failures += len(failed_clients)
        else:
            counts = self.phases.setdefault(phase, [0, 0])
            counts[0] += results
            counts[1] += len(failed_clients)

    def note_record_privacy(self, spent: list[tuple[float, float]]) -> None:
        """Keep the largest of the `(ε, δ)` pairs that DP-SGD clients reported this round.

        A client with (ε_i, δ_i)-DP also has (max ε, max δ)-DP, so the pair bounds every client.
        """
        if not spent:
            return
        epsilons = [epsilon for epsilon, _ in spent]
        deltas = [delta for _, delta in spent]
        if self.record_epsilon is not None:
            epsilons.append(self.record_epsilon)
            deltas.append(self.record_delta or 0.0)
        self.record_epsilon, self.record_delta = max(epsilons), max(deltas)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data; `phases` only when a phase other than fit/evaluate ran; the times
        only on a simulated clock; a withheld round only as its number and `"withheld": true`
        (its virtual time would tell whether a slow client took part)."""
        if self.withheld:
            return {"server_round": self.server_round, "withheld": True}
        data = vars(self).copy()
        del data["withheld"]
        if not self.phases:
            del data["phases"]
        if self.record_epsilon is None:
            del data["record_epsilon"], data["record_delta"]
        if self.virtual_time is None:
            del data["virtual_time"], data["wall_time"]
        return data


@dataclass
class History:
    """Losses and metrics per round.

    `losses_*` are lists of `(round, value)`; `metrics_*` map a metric name to such a list.
    Centralized entries include round 0 (the initial model) when the strategy has an `evaluate_fn`.
    """

    losses_distributed: list[tuple[int, float]] = field(default_factory=list)
    losses_centralized: list[tuple[int, float]] = field(default_factory=list)
    metrics_distributed_fit: MetricSeries = field(default_factory=dict)
    metrics_distributed: MetricSeries = field(default_factory=dict)
    metrics_centralized: MetricSeries = field(default_factory=dict)
    # What the strategy's parts measured per round (clip norms, line-search steps, privacy ε).
    measurements: MetricSeries = field(default_factory=dict)
    rounds: list[RoundRecord] = field(default_factory=list)
    # The final global model. Kept out of to_dict()/JSON: it is saved as model.npz instead.
    parameters: Parameters | None = field(default=None, repr=False, compare=False)

    def add_loss_distributed(self, server_round: int, loss: float) -> None:
        self.losses_distributed.append((server_round, loss))

    def add_loss_centralized(self, server_round: int, loss: float) -> None:
        self.losses_centralized.append((server_round, loss))

    def add_metrics_distributed_fit(self, server_round: int, metrics: Metrics) -> None:
        _append(self.metrics_distributed_fit, server_round, metrics)

    def add_metrics_distributed(self, server_round: int, metrics: Metrics) -> None:
        _append(self.metrics_distributed, server_round, metrics)

    def add_metrics_centralized(self, server_round: int, metrics: Metrics) -> None:
        _append(self.metrics_centralized, server_round, metrics)

    def add_measurements(self, server_round: int, measurements: Metrics) -> None:
        _append(self.measurements, server_round, measurements)

    @property
    def privacy(self) -> Privacy | None:
        """The privacy the run spent (None for a run without DP accounting).

        Derived from the measurements the privacy parts record each round (`epsilon` or
        `local_epsilon`, and `delta`), so it is kept in one place; central DP wins when a run
        records both.
        """
        for kind, name in (("central", CENTRAL_EPSILON), ("local", LOCAL_EPSILON)):
            spent = self.measurements.get(name)
            if spent:
                deltas = self.measurements.get(DELTA)
                delta = float(deltas[-1][1]) if deltas else None
                return Privacy(kind, delta, [(r, float(value)) for r, value in spent])
        return None

    @property
    def record_privacy(self) -> Privacy | None:
        """The record-level privacy DP-SGD clients reported (None when none did): per round, the
        largest ε of that round's clients, at the largest δ any of them reported."""
        spent = [r for r in self.rounds if r.record_epsilon is not None]
        if not spent:
            return None
        delta = max(float(r.record_delta or 0.0) for r in spent)
        return Privacy("record", delta, [(r.server_round, float(r.record_epsilon)) for r in spent])

    # -- serialization -------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data; pairs become `[round, value]` lists, bytes become base64 text.

        `measurements` appears only when some part measured something, `privacy` only for
        a run with DP accounting (its ε per round, read back from `measurements`), and
        `record_privacy` only when DP-SGD clients reported their ε (read back from `rounds`).
        """
        data: dict[str, Any] = {
            "losses_distributed": [[r, v] for r, v in self.losses_distributed],
            "losses_centralized": [[r, v] for r, v in self.losses_centralized],
            "metrics_distributed_fit": _series_to_lists(self.metrics_distributed_fit),
            "metrics_distributed": _series_to_lists(self.metrics_distributed),
            "metrics_centralized": _series_to_lists(self.metrics_centralized),
        }
        if self.measurements:
            data["measurements"] = _series_to_lists(self.measurements)
        if (privacy := self.privacy) is not None:
            data["privacy"] = privacy.to_dict()
        if (record := self.record_privacy) is not None:
            data["record_privacy"] = record.to_dict()
        data["rounds"] = [record.to_dict() for record in self.rounds]
        return data

    def to_json(self) -> str:
        """JSON text with one line per series, so files diff and read well."""
        lines = []
        for key, value in self.to_dict().items():
            if isinstance(value, dict):
                inner = [f"    {json.dumps(k)}: {_dumps(v)}" for k, v in value.items()]
                body = "{\n" + ",\n".join(inner) + "\n  }" if inner else "{}"
            elif key == "rounds":
                body = (
                    "[\n" + ",\n".join(f"    {_dumps(r)}" for r in value) + "\n  ]"
                    if value
                    else "[]"
                )
            else:
                body = _dumps(value)
            lines.append(f"  {json.dumps(key)}: {body}")
        return "{\n" + ",\n".join(lines) + "\n}\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> History:
        return cls(
            losses_distributed=[(int(r), float(v)) for r, v in data.get("losses_distributed", [])],
            losses_centralized=[(int(r), float(v)) for r, v in data.get("losses_centralized", [])],
            metrics_distributed_fit=_series_from_lists(data.get("metrics_distributed_fit", {})),
            metrics_distributed=_series_from_lists(data.get("metrics_distributed", {})),
            metrics_centralized=_series_from_lists(data.get("metrics_centralized", {})),
            measurements=_series_from_lists(data.get("measurements", {})),
            rounds=[RoundRecord(**record) for record in data.get("rounds", [])],
        )

    @classmethod
    def from_json(cls, text: str) -> History:
        return cls.from_dict(json.loads(text))

    def __str__(self) -> str:
        lines = ["History"]
        for title, values in (
            ("loss, distributed", self.losses_distributed),
            ("loss, centralized", self.losses_centralized),
        ):
            if values:
                lines.append(f"  {title}:")
                lines.extend(f"    round {r}: {v:.6g}" for r, v in values)
        for title, series in (
            ("metrics, distributed, fit", self.metrics_distributed_fit),
            ("metrics, distributed, evaluate", self.metrics_distributed),
            ("metrics, centralized", self.metrics_centralized),
            ("measurements", self.measurements),
        ):
            if series:
                lines.append(f"  {title}:")
                lines.extend(f"    {name}: {values}" for name, values in series.items())
        return "\n".join(lines)


def _append(series: MetricSeries, server_round: int, metrics: Metrics) -> None:
    for name, value in metrics.items():
        series.setdefault(name, []).append((server_round, value))


def _series_to_lists(series: MetricSeries) -> dict[str, list[list[Any]]]:
    return {name: [[r, v] for r, v in values] for name, values in series.items()}


def _series_from_lists(data: dict[str, list[list[Any]]]) -> MetricSeries:
    return {name: [(int(r), v) for r, v in values] for name, values in data.items()}


def _dumps(value: object) -> str:
    return json.dumps(value, default=_json_default, allow_nan=False)


def _json_default(value: object) -> object:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"cannot write {type(value).__name__} to history.json")
