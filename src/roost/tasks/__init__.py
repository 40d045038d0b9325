"""Training tasks: a PyTorch model, a loss, a local optimizer recipe and each client's data.

`Task`, `SGD` and `Adam` import no ML framework; torch is needed only once a task trains.
"""

from roost.tasks.recipe import (
    SGD,
    Adam,
    accuracy,
    cross_entropy,
    squared_error,
)
from roost.tasks.task import Task

__all__ = ["SGD", "Adam", "Task", "accuracy", "cross_entropy", "squared_error"]
