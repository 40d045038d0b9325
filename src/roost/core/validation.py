"""Validation of everything a client sends back, before it can touch the global model.

One place, used by every transport: the round loop passes each result through
`validate_result`, which turns anything malformed into a `Failure` with a one-line reason
naming the client and the mismatch.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence

import numpy as np

from roost.core import compression, types
from roost.core.types import Failure, Instruction, Parameters, Result, Scalar
from roost.errors import InvalidMessageError

# A single client reporting more examples than this is almost certainly lying or broken;
# it would otherwise dominate an example-weighted mean.
MAX_NUM_EXAMPLES = 10**12


def check_parameters(
    parameters: object, template: Parameters | None = None, *, check_finite: bool = True
) -> Parameters:
    """Return `parameters` as a list of arrays, or raise `InvalidMessageError` saying what is wrong.

    With a `template` (the global model), the count, every shape and every dtype must match it,
    except that a float array of another width is cast to the model's float dtype.
    """
    if isinstance(parameters, np.ndarray) or not isinstance(parameters, Sequence):
        raise InvalidMessageError(
            f"parameters must be a list of NumPy arrays, got {type(parameters).__name__}"
        )
    arrays = list(parameters)
    for index, array in enumerate(arrays):
        if not isinstance(array, np.ndarray):
            raise InvalidMessageError(
                f"parameter {index} is a {type(array).__name__}, not a NumPy array"
            )
        if array.dtype.kind not in "iuf":
            raise InvalidMessageError(
                f"parameter {index} has dtype {array.dtype}; only integer and float "
                "arrays are accepted"
            )
    if template is not None:
        if len(arrays) != len(template):
            raise InvalidMessageError(
                f"expected {len(template)} arrays like the global model, got {len(arrays)}"
            )
        for index, (array, reference) in enumerate(zip(arrays, template, strict=True)):
            if array.shape != reference.shape:
                raise InvalidMessageError(
                    f"parameter {index} has shape {array.shape}, the global model has "
                    f"{reference.shape}"
                )
            if array.dtype != reference.dtype and array.dtype.kind == reference.dtype.kind == "f":
                # Another float width (scikit-learn answers float32 for a float64 model): cast,
                # as Flower accepts it; a value the model's width cannot hold fails below.
                with np.errstate(over="ignore"):
                    arrays[index] = array.astype(reference.dtype)
            elif array.dtype != reference.dtype:
                raise InvalidMessageError(
                    f"parameter {index} has dtype {array.dtype}, the global model has "
                    f"{reference.dtype}; cast it before returning it"
                )
    if check_finite:
        for index, array in enumerate(arrays):
            if array.dtype.kind == "f" and not np.isfinite(array).all():
                raise InvalidMessageError(f"parameter {index} contains NaN or Inf")
    return arrays


def check_scalar_dict(values: object, what: str, *, finite: bool = False) -> dict[str, Scalar]:
    """Return a copy of `values` with plain Python scalars, or raise `InvalidMessageError`.

    With `finite`, a float that is NaN or infinite is refused too: what clients report is
    averaged, recorded and written as JSON, and one NaN would spoil all three.
    """
    if values is None:
        return {}
    if not isinstance(values, Mapping):
        raise InvalidMessageError(f"{what} must be a dict, got {type(values).__name__}")
    checked: dict[str, Scalar] = {}
    for key, value in values.items():
        if not isinstance(key, str):
            raise InvalidMessageError(f"{what} keys must be strings, got {key!r}")
        scalar = to_scalar(value, f"{what}[{key!r}]")
        if finite and isinstance(scalar, float) and not math.isfinite(scalar):
            raise InvalidMessageError(f"{what}[{key!r}] is {scalar}; it must be finite")
        checked[key] = scalar
    return checked


def to_scalar(value: object, what: str) -> Scalar:
    """Convert NumPy scalars to Python ones; refuse anything but bool, int, float, str, bytes."""
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, str | bytes):
        return value
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return to_scalar(value.item(), what)
    raise InvalidMessageError(
        f"{what} is a {type(value).__name__}; values must be bool, int, float, str or bytes"
    )


def check_num_examples(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidMessageError(
            f"num_examples must be an int, got {type(value).__name__} {value!r}"
        )
    value = int(value)
    if not 0 <= value <= MAX_NUM_EXAMPLES:
        raise InvalidMessageError(f"num_examples={value} is outside [0, {MAX_NUM_EXAMPLES}]")
    return value


def check_loss(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidMessageError(f"loss must be a number, got {type(value).__name__}")
    loss = float(value)
    if not math.isfinite(loss):
        raise InvalidMessageError(f"loss is {loss}; it must be finite")
    return loss


# What answers each instruction, and the client method named when another kind comes back.
_ANSWERS: tuple[tuple[type, str, type], ...] = (
    (types.FitIns, "fit", types.FitRes),
    (types.EvaluateIns, "evaluate", types.EvaluateRes),
    (types.GetParametersIns, "get_parameters", types.GetParametersRes),
    (types.PhaseIns, "", types.PhaseRes),
)


def _check_answers(instruction: Instruction, result: object) -> None:
    for instruction_type, method, result_type in _ANSWERS:
        if not isinstance(instruction, instruction_type):
            continue
        if isinstance(result, result_type):
            return
        if isinstance(instruction, types.PhaseIns):
            method = f"{instruction.protocol} {instruction.phase}"
        raise InvalidMessageError(
            f"{method} returned {type(result).__name__}, not {result_type.__name__}"
        )
    raise InvalidMessageError(f"unknown instruction {type(instruction).__name__}")


def validate_result(
    client_id: str, instruction: Instruction, result: object, template: Parameters | None
) -> Result | Failure:
    """Check a client's `result` for `instruction`; return it cleaned, or a `Failure` saying why."""
    if isinstance(result, Failure):
        return result
    try:
        _check_answers(instruction, result)
        if isinstance(result, types.FitRes):
            return types.FitRes(
                check_parameters(result.parameters, template),
                check_num_examples(result.num_examples),
                check_scalar_dict(result.metrics, "metrics", finite=True),
            )
        if isinstance(result, types.EvaluateRes):
            return types.EvaluateRes(
                check_loss(result.loss),
                check_num_examples(result.num_examples),
                check_scalar_dict(result.metrics, "metrics", finite=True),
            )
        if isinstance(result, types.GetParametersRes):
            return types.GetParametersRes(check_parameters(result.parameters, template))
        assert isinstance(result, types.PhaseRes)
        # The protocol checks its own payload; here: arrays of numbers, scalar values.
        return types.PhaseRes(
            check_parameters(result.arrays),
            check_scalar_dict(result.values, "values", finite=True),
        )
    except InvalidMessageError as error:
        return Failure(client_id, str(error), kind="invalid")


def unpack_result(
    client_id: str, instruction: Instruction, outcome: Result | Failure
) -> Result | Failure:
    """What a validated result stands for, as the round loop hands it to the strategy.

    A compressed fit answer (`roost.core.compression`) becomes the `FitRes` it carries,
    validated against the model it was trained from like any fit result, so the strategy, the
    round's counts and its failures see fit results; a payload its codec does not send is that
    client's failure. Every other outcome is returned as it is. Only the round loop calls this:
    both ends of a transport validate the answer itself (`validate_result`)."""
    if not compression.is_compressed_fit(instruction) or isinstance(outcome, Failure):
        return outcome
    assert isinstance(instruction, types.PhaseIns) and isinstance(outcome, types.PhaseRes)
    try:
        result = compression.decode_fit(instruction, outcome)
    except InvalidMessageError as error:
        return Failure(client_id, f"compressed update: {error}", kind="invalid")
    model = instruction.parameters
    return validate_result(client_id, types.FitIns(model), result, model)
