"""Compressed updates, the server's side: a fit phase whose clients send encoded updates.

`Strategy(compression="rot-q4")` (or a `roost.core.codecs.Codec`) is a setting of the fit phase,
like secure aggregation, and not an update transform: transforms run on the server, on updates
it already holds, while a codec changes what each client sends. So the strategy tells the
cohort (`roost.core.compression.fit_instruction`), every client encodes its own update, and
the loop's validation decodes each answer back into a `FitRes` before the strategy sees it
(`roost.core.validation`). From there the round is an ordinary one: weighting, update
transforms (clipping and central DP act on the decoded updates), aggregator, server optimizer.

Each round records what its fit phase moved, in array bytes (what the wire's chunk frames
carry): `bytes_down` (the model sent to every member of the cohort) and `bytes_up` (the
compressed updates accepted), as measurements in `History.measurements`. Runs without a
compression record neither, so their history is what it always was.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from roost.core.codecs import Codec
from roost.core.compression import fit_instruction, model_dtype
from roost.core.types import (
    ClientId,
    FitIns,
    FitRes,
    Outcome,
    Parameters,
    PhaseIns,
    payload_bytes,
)
from roost.errors import ConfigurationError
from roost.strategy.base import FitAggregate, Measurements, RoundContext, State
from roost.strategy.optimizers import UpdateFn, parameter_delta


class Compressing(Protocol):
    """What a compressed fit phase needs of its strategy (`roost.strategy.Strategy`)."""

    compression: Codec | None
    secure_aggregation: object | None
    update_fn: UpdateFn

    @property
    def withholds_client_statistics(self) -> bool: ...

    def aggregate_fit(
        self,
        server_round: int,
        parameters: Parameters,
        outcomes: Iterable[Outcome],
        state: dict[str, State] | None = None,
    ) -> FitAggregate: ...


CompressionSpec = Codec | str
"""A compression: a `Codec`, or its name ("q8", "rot-q4", "topk:0.01", …)."""


def as_codec(compression: CompressionSpec | None) -> Codec | None:
    """The codec a strategy's `compression` argument names (None: updates uncompressed)."""
    if compression is None or isinstance(compression, Codec):
        return compression
    if isinstance(compression, str):
        return Codec.parse(compression)
    raise ConfigurationError(
        f"compression must be a codec name such as 'q8' or a Codec, got {compression!r}"
    )


@dataclass
class Traffic:
    """A fit phase's array bytes: down (instructions sent) and up (updates accepted)."""

    down: int = 0
    up: int = 0

    def measurements(self) -> Measurements:
        return {"bytes_down": float(self.down), "bytes_up": float(self.up)}


def compressed_cohort(
    codec: Codec,
    cohort: Sequence[tuple[ClientId, FitIns]],
    rng: np.random.Generator,
    traffic: Traffic,
) -> list[tuple[ClientId, PhaseIns]]:
    """The cohort's fit instructions as compressed-fit ones, with this round's seed (drawn from
    the run's generator: a seeded run rounds and rotates the same way again); counts the bytes
    they send into `traffic`."""
    seed = int(rng.integers(1 << 63))
    compressed = []
    instructions: dict[int, PhaseIns] = {}
    for client_id, instruction in cohort:
        key = id(instruction)  # one instruction object per cohort: its model is sent once built
        if key not in instructions:
            instructions[key] = fit_instruction(
                codec, instruction.parameters, instruction.config, seed
            )
        compressed.append((client_id, instructions[key]))
        traffic.down += payload_bytes(instructions[key])
    return compressed


def count_uploads(
    codec: Codec, parameters: Parameters, outcomes: Iterable[Outcome], traffic: Traffic
) -> Iterator[Outcome]:
    """`outcomes` as they stream, adding each accepted update's payload to `traffic.up`.

    The loop accepted an answer only if its arrays are exactly the codec's layout for this
    model, so its size is the codec's `payload_bytes`, whatever the client."""
    size = sum(int(np.size(p)) for p in parameters)
    payload = codec.payload_bytes(size, model_dtype(parameters))
    for outcome in outcomes:
        if isinstance(outcome[1], FitRes):
            traffic.up += payload
        yield outcome


def check_compression(strategy: Compressing) -> None:
    """Refuse, in one line, what compressed updates cannot work with."""
    if strategy.secure_aggregation is not None:
        raise ConfigurationError(
            "secure aggregation quantizes and masks each update itself, and a compressed "
            "update cannot be masked: use compression or secure aggregation, not both"
        )
    if strategy.update_fn is not parameter_delta:
        raise ConfigurationError(
            "compression encodes a trained model's update; clients that return gradients "
            "(FedSGD) are not supported with it: drop compression or use FedAvg"
        )


def compressed_fit(
    strategy: Compressing,
    context: RoundContext,
    cohort: Sequence[tuple[ClientId, FitIns]],
    parameters: Parameters,
    state: dict[str, State],
) -> FitAggregate:
    """A fit phase with compressed updates. The loop decodes and validates each answer, so the
    strategy aggregates fit results as in any round; the round's traffic joins its
    measurements (except under central DP: the bytes up count the cohort's answers)."""
    assert strategy.compression is not None
    traffic = Traffic()
    compressed = compressed_cohort(strategy.compression, cohort, context.rng, traffic)
    outcomes = context.exchange("fit", compressed, parameters)
    counted = count_uploads(strategy.compression, parameters, outcomes, traffic)
    fit = strategy.aggregate_fit(context.server_round, parameters, counted, state)
    if strategy.withholds_client_statistics:
        return fit
    return fit._replace(measurements={**fit.measurements, **traffic.measurements()})
