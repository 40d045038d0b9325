"""How a client's result becomes its update: trained parameters or a gradient."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from roost.core.types import Parameters
from roost.strategy.optimizers import subtract

UpdateFn = Callable[[Parameters, Parameters], Parameters]
"""`(client result parameters, global parameters) -> the client's update`."""


def parameter_delta(result: Parameters, global_parameters: Parameters) -> Parameters:
    """A client's update when it returns trained parameters: result − global."""
    return subtract(result, global_parameters)


def negative_gradient(result: Parameters, global_parameters: Parameters) -> Parameters:
    """A client's update when it returns a gradient (FedSGD): −gradient, a descent direction."""
    return [np.negative(gradient) for gradient in result]
