"""The client's side of compressed updates, as the "compress" protocol run by `execute`.

The server's strategy names the codec in each fit instruction (`roost.core.compression`), so a
client needs no flag of its own: it trains (its own `fit`), encodes trained − global with the
instruction's codec and answers with the codec's arrays. With top-k's error feedback the node
keeps what it did not send in its `Context.state` (`STATE_KEY`: the codec's name and the
residual) and adds it to its next update; engines checkpoint that state with every round and a
deployed client keeps it for as long as its process runs, so a resumed simulation carries on
with the residual it had.
"""

from __future__ import annotations

import numpy as np

from roost.client.client import ClientLike, Context, call_client
from roost.core.compression import (
    client_rng,
    fit_answer,
    flat_update,
    model_dtype,
    read_instruction,
)
from roost.core.types import FitIns, FitRes, PhaseIns, PhaseRes
from roost.core.validation import check_parameters
from roost.errors import InvalidMessageError

STATE_KEY = "roost.compress"
"""The node state entry of error feedback: `{"codec": name, "residual": float64 vector}`."""


def _residual(context: Context, codec_name: str, size: int) -> np.ndarray | None:
    """What this node did not send last time with the same codec and model size (or None)."""
    kept = context.state.get(STATE_KEY)
    if not isinstance(kept, dict) or kept.get("codec") != codec_name:
        return None
    residual = kept.get("residual")
    if not isinstance(residual, np.ndarray) or residual.shape != (size,):
        return None
    return residual


def answer_compressed_fit(client: ClientLike, instruction: PhaseIns, context: Context) -> PhaseRes:
    """Train on the instruction's model and answer with the encoded update."""
    if instruction.phase != "fit":
        raise InvalidMessageError(f"the compress protocol has no phase {instruction.phase!r}")
    codec, seed, fit_config = read_instruction(instruction)
    parameters = instruction.parameters
    result = call_client(client, FitIns([a.copy() for a in parameters], fit_config))
    if not isinstance(result, FitRes):
        raise InvalidMessageError("fit did not return a fit result")
    trained = check_parameters(result.parameters, parameters)
    update = flat_update(trained, parameters)
    residual = _residual(context, codec.name, update.size) if codec.error_feedback else None
    if residual is not None:
        update = update + residual
    dtype = model_dtype(parameters)
    arrays = codec.encode(update, seed=seed, rng=client_rng(seed, context.node_id), dtype=dtype)
    if codec.error_feedback:
        sent = codec.decode(arrays, size=update.size, seed=seed, dtype=dtype)
        context.state[STATE_KEY] = {"codec": codec.name, "residual": update - sent}
    return fit_answer(arrays, result.num_examples, dict(result.metrics))
