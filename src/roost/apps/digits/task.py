"""The digits demo as a `Task`, so `roost simulate` can train it on the vectorized engine.

Same model (softmax regression, NumPy layout), same data split, same local SGD recipe and the
same batch order as the NumPy demo client (`DigitsClient`), in float64: the two give the same
model to float rounding. This module imports no ML framework; torch is needed once the task
trains.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from roost.apps.digits.client import client_data
from roost.apps.digits.settings import NUM_CLASSES, NUM_FEATURES
from roost.client.client import ClientFn
from roost.engines import torch_available
from roost.settings import RunSettings
from roost.tasks import SGD, Task


@dataclass(frozen=True)
class DigitsData:
    """`(partition_id, num_partitions) -> (x, y)`: a client's digits (training or validation)."""

    seed: int = 0
    validation: bool = False

    def __call__(self, partition_id: int, num_partitions: int) -> tuple[Any, Any]:
        train, validation = client_data(partition_id, num_partitions, self.seed)
        split = validation if self.validation else train
        return split.x, split.y


def softmax_regression() -> Any:
    """The demo's model as a torch module: weights (64, 10) and biases (10,), zeros."""
    from roost.tasks.models import SoftmaxRegression

    return SoftmaxRegression(NUM_FEATURES, NUM_CLASSES)


def digits_task(settings: RunSettings) -> Task:
    """The digits demo's clients as one `Task` (local SGD, the demo's epochs, batch size and lr)."""
    return Task(
        model=softmax_regression,
        data=DigitsData(settings.seed),
        eval_data=DigitsData(settings.seed, validation=True),
        optimizer=SGD(lr=settings.learning_rate),
        epochs=settings.local_epochs,
        batch_size=settings.batch_size,
        fit_metrics=True,
        seed=settings.seed,
        dtype="float64",
    )


def demo_engine(
    engine: str | None, client_fn: ClientFn, settings: RunSettings, *, plain: bool
) -> tuple[str, ClientFn, str | None]:
    """The engine and client_fn `roost simulate` runs the demo with, and the line that says
    which engine runs and why (the run's first line).

    `engine` None means the default: the fastest engine for this work. The demo's NumPy clients
    on the sequential engine are: they train the digits in milliseconds, while a process that
    imports torch pays about 1.5 s before any arithmetic, more than the vectorized engine saves
    at any cohort the demo runs (docs/how-to/speed.md: 0.6 s against 3.5 s for 1,000
    clients). `--engine vectorized` trains the same model as a torch `Task`; `plain` says the
    demo's clients are the ordinary ones (no attackers, no gradient-returning or locally private
    clients), which the task reproduces. Otherwise it falls back to the sequential engine.
    """
    if engine is None:
        return (
            "sequential",
            client_fn,
            "engine: sequential (the default for the demo: its NumPy clients train fastest in "
            "this process, without importing torch; --engine vectorized batches them in torch)",
        )
    if engine != "vectorized":
        return engine, client_fn, f"engine: {engine} (--engine)"
    if not torch_available():
        return (
            "sequential",
            client_fn,
            (
                "torch is not installed: the NumPy demo runs on the sequential engine "
                "(pip install torch for the vectorized engine)"
            ),
        )
    if not plain:
        return (
            "sequential",
            client_fn,
            (
                "attacked and gradient-returning clients run on the sequential engine, and so "
                "do clients with local DP, secure aggregation or compressed updates (the "
                "vectorized engine trains the plain demo clients only)"
            ),
        )
    return "vectorized", digits_task(settings), "engine: vectorized (--engine)"
