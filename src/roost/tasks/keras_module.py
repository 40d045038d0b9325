"""A Keras 3 model (torch backend) as a torch module whose parameters are its weights.

The vectorized engine's machinery works on `torch.nn.Module`s through `torch.func.functional_call`.
`KerasModule` registers one parameter per Keras weight (in `get_weights()` order) and its forward
pass is Keras' stateless call with those parameters, so `functional_call` and `vmap` reach the
Keras computation without touching the Keras model's own variables.
"""

from __future__ import annotations

from typing import Any

import torch

from roost.errors import ConfigurationError, other_engines

_OTHER_ENGINES = f"use {other_engines('sequential', 'process', 'ray')}: the Keras adapter"


def check_keras_vectorizable(model: Any) -> None:
    """Raise `ConfigurationError` for Keras models the vectorized engine cannot train exactly."""
    import keras

    if keras.backend.backend() != "torch":
        raise ConfigurationError(
            "the vectorized engine runs Keras models on Keras' torch backend, but Keras uses "
            f"{keras.backend.backend()!r}: set KERAS_BACKEND=torch before Keras is imported, "
            f"or {_OTHER_ENGINES}"
        )
    if model.non_trainable_variables:
        names = ", ".join(variable.path for variable in model.non_trainable_variables[:3])
        raise ConfigurationError(
            f"the vectorized engine cannot train this Keras model: it has non-trainable "
            f"variables ({names}; e.g. BatchNormalization statistics or a random layer's seed) "
            f"that training changes per client or shares between them: {_OTHER_ENGINES}"
        )
    for layer in _all_layers(model):
        for name in ("kernel_regularizer", "bias_regularizer", "activity_regularizer"):
            if getattr(layer, name, None) is not None:
                raise ConfigurationError(
                    f"the vectorized engine does not add regularization losses ({layer.name}."
                    f"{name}): {_OTHER_ENGINES}"
                )


def _all_layers(model: Any) -> list[Any]:
    layers = []
    for layer in getattr(model, "layers", []):
        layers.append(layer)
        layers.extend(_all_layers(layer))
    return layers


class KerasModule(torch.nn.Module):
    """A built Keras model on the torch backend, called statelessly with this module's
    parameters (one per Keras weight, in `get_weights()` order)."""

    def __init__(self, keras_model: Any) -> None:
        super().__init__()
        check_keras_vectorizable(keras_model)
        # Kept off the module tree: the Keras model's own torch parameters are not ours.
        object.__setattr__(self, "keras_model", keras_model)
        self.names: list[str] = []
        for index, variable in enumerate(keras_model.trainable_variables):
            name = f"w{index}_" + variable.path.replace("/", "_").replace(".", "_")
            value = torch.as_tensor(variable.numpy()).clone()
            self.register_parameter(name, torch.nn.Parameter(value))
            self.names.append(name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = [getattr(self, name) for name in self.names]
        outputs, _ = self.keras_model.stateless_call(weights, [], x, training=self.training)
        if not torch.is_tensor(outputs):
            raise ConfigurationError(
                f"the vectorized engine trains Keras models with one output tensor: "
                f"{_OTHER_ENGINES}"
            )
        return outputs
