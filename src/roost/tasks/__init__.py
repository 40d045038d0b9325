"""Training tasks: a model, a loss, a local optimizer recipe and each client's data.

`Task` (PyTorch), `KerasTask` (a compiled Keras 3 model), `SGD` and `Adam` import no ML framework;
torch (or Keras) is needed only once a task trains.
"""

from roost.client.recipe import (
    SGD,
    Adam,
    accuracy,
    cross_entropy,
    squared_error,
)
from roost.tasks.keras import KerasTask
from roost.tasks.task import Task

__all__ = ["SGD", "Adam", "KerasTask", "Task", "accuracy", "cross_entropy", "squared_error"]
