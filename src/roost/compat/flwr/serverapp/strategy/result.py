"""`flwr.serverapp.strategy.Result`: what a strategy's `start` returns."""

from __future__ import annotations

from dataclasses import dataclass, field

from roost.compat.flwr.records import ArrayRecord, MetricRecord


@dataclass
class Result:
    """The final arrays and the aggregated metrics of every round.

    `train_metrics_clientapp` and `evaluate_metrics_clientapp` map a round to the metrics
    aggregated over the nodes' replies; `evaluate_metrics_serverapp` maps a round (0 is the
    initial model) to what `evaluate_fn` returned.
    """

    arrays: ArrayRecord = field(default_factory=ArrayRecord)
    train_metrics_clientapp: dict[int, MetricRecord] = field(default_factory=dict)
    evaluate_metrics_clientapp: dict[int, MetricRecord] = field(default_factory=dict)
    evaluate_metrics_serverapp: dict[int, MetricRecord] = field(default_factory=dict)

    def __str__(self) -> str:
        lines = [f"Result: {len(self.arrays)} arrays"]
        series = {
            "train_metrics_clientapp": self.train_metrics_clientapp,
            "evaluate_metrics_clientapp": self.evaluate_metrics_clientapp,
            "evaluate_metrics_serverapp": self.evaluate_metrics_serverapp,
        }
        for name, records in series.items():
            for server_round, record in sorted(records.items()):
                lines.append(f"  {name}[{server_round}]: {dict(record)}")
        return "\n".join(lines)


__all__ = ["Result"]
