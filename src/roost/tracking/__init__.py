"""Tracking: what a run measured, handed round by round to trackers you choose.

A tracker is any object with `on_round_end(record)` and `close()`; subclass `Tracker` to get a
`close` that does nothing. After every completed round each tracker receives a `RoundReport`: the
round number, the time since the run started, every value History holds for that round (named as
the columns of `history.csv`; measurements as `measured_<name>`) and, when asked, every client's
own fit and evaluate metrics.

    import roost
    from roost.tracking import TensorBoardTracker

    history = roost.run_simulation(
        client_fn, 10, config=roost.ServerConfig(num_rounds=5),
        trackers=[TensorBoardTracker("runs/fedavg")],
    )

`TensorBoardTracker` (package `tensorboard`) and `MLflowTracker` (package `mlflow-skinny` or
`mlflow`) write through those projects' own libraries, imported only when such a tracker is made.
"""

from __future__ import annotations

from roost.tracking.base import (
    ClientMetricsRecorder,
    RoundReport,
    Tracker,
    TrackRounds,
    round_values,
)

__all__ = [
    "ClientMetricsRecorder",
    "MLflowTracker",
    "RoundReport",
    "TensorBoardTracker",
    "TrackRounds",
    "Tracker",
    "round_values",
]


def __getattr__(name: str) -> object:
    # The writers import their libraries only when used: `import roost.tracking` stays light.
    if name == "TensorBoardTracker":
        from roost.tracking.tensorboard_writer import TensorBoardTracker

        return TensorBoardTracker
    if name == "MLflowTracker":
        from roost.tracking.mlflow_writer import MLflowTracker

        return MLflowTracker
    raise AttributeError(f"module 'roost.tracking' has no attribute {name!r}")
