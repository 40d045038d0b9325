"""The client's side of secure aggregation (SecAgg+), as a protocol run by `execute`.

The server drives four phases (advertise keys, share keys, masked input, unmask); this handler
answers each with the round's `roost.secagg.SecAggClient`, kept in the node's `Context.state`
between phases. In the masked-input phase the client trains (its own `fit`), turns the result into
an update, optionally clips its L2 norm, quantizes (w·update, w) and returns it masked: the server
learns only the cohort's sums. Fit metrics travel in the clear under `fit/…` keys.

Keys of the masked-input instruction's config: `fit/<key>` is the round's fit config;
`quant/clip`, `quant/max_weight`, `quant/max_clients`, `quant/bits` size the quantizer,
`quant/uniform` (weight every client 1 instead of its `num_examples`) and `quant/clip_norm` (clip
the update's L2 norm first) are optional, and so are distributed DP's `quant/noise_variance`
(add discrete Gaussian noise of this variance, in quantization levels, to every value after
quantizing) and `quant/min_survivors` (refuse to unmask a sum of fewer inputs: the noise was
calibrated for that many); with noise the client sends no fit metrics either. Everything else
is the secagg message itself.

With `quant/clip_norm` C the update is clipped to C less what rounding can add
(`WeightedQuantizer.rounding_norm`), so the quantized contribution itself has norm at most C: the
sensitivity central DP accounts for holds after quantization, whatever the rounding draws.
"""

from __future__ import annotations

import numpy as np

from roost.client.client import ClientLike, Context, call_client
from roost.core.types import FitIns, FitRes, Metrics, PhaseIns, PhaseRes
from roost.core.validation import check_parameters
from roost.errors import InvalidMessageError

STATE_KEY = "roost.secagg"
FIT_PREFIX = "fit/"
QUANT_PREFIX = "quant/"


def _split(config: dict) -> tuple[dict, dict, dict]:
    """(secagg message values, fit config, quantizer settings) from an instruction's config."""
    message, fit, quant = {}, {}, {}
    for key, value in config.items():
        if key.startswith(FIT_PREFIX):
            fit[key[len(FIT_PREFIX) :]] = value
        elif key.startswith(QUANT_PREFIX):
            quant[key[len(QUANT_PREFIX) :]] = value
        else:
            message[key] = value
    return message, fit, quant


def _train(client: ClientLike, instruction: PhaseIns, fit_config: dict) -> FitRes:
    result = call_client(client, FitIns([a.copy() for a in instruction.parameters], fit_config))
    if not isinstance(result, FitRes):
        raise InvalidMessageError("fit did not return a fit result")
    trained = check_parameters(result.parameters, instruction.parameters)
    return FitRes(trained, result.num_examples, result.metrics)


def _encode(result: FitRes, global_parameters: list[np.ndarray], quant: dict) -> np.ndarray:
    update = np.concatenate(
        [
            np.subtract(new, old, dtype=np.float64).ravel()
            for new, old in zip(result.parameters, global_parameters, strict=True)
        ]
    )
    from roost.secagg import WeightedQuantizer

    max_weight = float(quant["max_weight"])
    # The weight is capped at max_weight (documented on the server's SecureAggregation).
    weight = 1.0 if quant.get("uniform") else min(float(result.num_examples), max_weight)
    quantizer = WeightedQuantizer(
        clip=float(quant["clip"]),
        max_weight=max_weight,
        max_clients=int(quant["max_clients"]),
        bits=int(quant["bits"]),
    )
    if quant.get("clip_norm") is not None and weight > 0:
        margin = quantizer.rounding_norm(update.size) / weight
        _clip_within(update, float(quant["clip_norm"]), margin)
    encoded = quantizer.encode(update, weight)
    if quant.get("noise_variance") is not None:  # distributed DP: noise before the masks
        from roost.secagg.ddp import add_noise

        encoded = add_noise(encoded, float(quant["noise_variance"]), quantizer.bits, update.size)
    return encoded


def _clip_within(update: np.ndarray, clip_norm: float, margin: float) -> None:
    """Scale `update` in place to L2 norm at most C − `margin` (what rounding may add)."""
    bound = clip_norm - margin
    if bound <= 0:
        raise InvalidMessageError(
            f"rounding may move the update by {margin:.3g} in L2 norm, not less than the clip "
            f"norm {clip_norm:g}: the server must use more bits or a smaller clip range"
        )
    norm = float(np.linalg.norm(update))
    if norm > bound:
        update *= bound / norm


def answer_secure_aggregation(
    client: ClientLike, instruction: PhaseIns, context: Context
) -> PhaseRes:
    """Answer one secure-aggregation phase for the node `context` describes."""
    # Imported here: the protocol's code and `cryptography` load only where it runs.
    from roost.secagg import SecAggClient, SecAggError

    if instruction.phase == "advertise_keys":
        context.state[STATE_KEY] = SecAggClient()  # fresh keys and seeds every round
    secagg = context.state.get(STATE_KEY)
    if not isinstance(secagg, SecAggClient):
        raise InvalidMessageError(
            f"got a secure-aggregation {instruction.phase} instruction but this client has no "
            "round in progress (it missed the advertise_keys phase)"
        )
    message, fit_config, quant = _split(dict(instruction.config))
    quantized, metrics = None, {}
    try:
        if instruction.phase == "masked_input":
            result = _train(client, instruction, fit_config)
            quantized = _encode(result, instruction.parameters, quant)
            secagg.min_survivors = int(quant.get("min_survivors", 0))
            # Under distributed DP the server is not trusted with anything but the noised sum.
            metrics = {} if quant.get("noise_variance") is not None else result.metrics
        arrays, values = secagg.respond(list(instruction.arrays), message, quantized)
    except SecAggError:
        context.state.pop(STATE_KEY, None)  # this round is over for this client
        raise
    if instruction.phase == "unmask":
        context.state.pop(STATE_KEY, None)
    fit_metrics: Metrics = {f"{FIT_PREFIX}{key}": value for key, value in metrics.items()}
    return PhaseRes(list(arrays), {**values, **fit_metrics})
