"""Compressed fit, both ends: the instruction's settings, the client's answer, the server's check.

A strategy with a compression (`Strategy(compression="q4")`) sends each member of a fit cohort a
`PhaseIns` of the "compress" protocol instead of a `FitIns`: the global model, the round's fit
config under `fit/…` keys, the codec's name (`compress/codec`) and the round's seed
(`compress/seed`). Any roost client answers it (`roost.client.compression`): it trains, encodes
its update (trained − global) with the codec, and returns the codec's arrays with
`num_examples` and its fit metrics (`fit/…`) as values. The server learns what to expect from
the instruction it sent, so `decode_fit` turns the answer back into the `FitRes` it stands for
before the answer reaches the strategy: the round loop validates every answer as sent
(`roost.core.validation.validate_result`, as both ends of gRPC do) and then unpacks it
(`unpack_result`), once; a payload that is not what the codec sends is that client's failure.
"""

from __future__ import annotations

import zlib

import numpy as np

from roost.core.codecs import Codec
from roost.core.types import Config, FitRes, Metrics, Parameters, PhaseIns, PhaseRes
from roost.errors import ConfigurationError, InvalidMessageError

PROTOCOL = "compress"
PHASE = "fit"
CODEC_KEY = "compress/codec"
SEED_KEY = "compress/seed"
FIT_PREFIX = "fit/"
NUM_EXAMPLES_KEY = "num_examples"


def fit_instruction(codec: Codec, parameters: Parameters, config: Config, seed: int) -> PhaseIns:
    """The compressed-fit instruction for a round's fit config and seed."""
    settings: Config = {CODEC_KEY: codec.name, SEED_KEY: int(seed)}
    fit = {f"{FIT_PREFIX}{key}": value for key, value in config.items()}
    return PhaseIns(PROTOCOL, PHASE, parameters, [], {**fit, **settings})


def read_instruction(instruction: PhaseIns) -> tuple[Codec, int, Config]:
    """(codec, round seed, fit config) of a compressed-fit instruction."""
    config = dict(instruction.config)
    seed = config.get(SEED_KEY)
    if CODEC_KEY not in config or isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InvalidMessageError(
            f"a compressed-fit instruction needs {CODEC_KEY} and a non-negative int {SEED_KEY}"
        )
    try:
        codec = Codec.parse(str(config[CODEC_KEY]))
    except ConfigurationError as error:  # a codec this client does not know: an older roost
        raise InvalidMessageError(f"{error}; update roost on the client") from None
    fit = {k[len(FIT_PREFIX) :]: v for k, v in config.items() if k.startswith(FIT_PREFIX)}
    return codec, seed, fit


def model_dtype(parameters: Parameters) -> np.dtype:
    """The float dtype an uncompressed update of this model has (float64 for a mixed model)."""
    dtypes = {np.dtype(p.dtype) for p in parameters if np.dtype(p.dtype).kind == "f"}
    return dtypes.pop() if len(dtypes) == 1 else np.dtype(np.float64)


def flat_update(trained: Parameters, parameters: Parameters) -> np.ndarray:
    """trained − global, all arrays as one flat float64 vector."""
    pieces = [
        np.subtract(new, old, dtype=np.float64).ravel()
        for new, old in zip(trained, parameters, strict=True)
    ]
    return np.concatenate(pieces) if pieces else np.zeros(0)


def client_rng(seed: int, node_id: str) -> np.random.Generator:
    """The rounding stream of one client in one round: reproducible, distinct per client."""
    return np.random.default_rng([seed, zlib.crc32(node_id.encode())])


def fit_answer(arrays: list[np.ndarray], num_examples: int, metrics: Metrics) -> PhaseRes:
    """A client's answer: the codec's arrays, its num_examples and fit metrics."""
    values = {f"{FIT_PREFIX}{key}": value for key, value in metrics.items()}
    return PhaseRes(arrays, {NUM_EXAMPLES_KEY: num_examples, **values})


def decode_fit(instruction: PhaseIns, result: PhaseRes) -> FitRes:
    """The fit result a client's compressed answer stands for: global + decoded update, in the
    model's dtypes (to be validated against the model like any fit result). Raises
    `InvalidMessageError` for a payload the instruction's codec does not send."""
    codec, seed, _ = read_instruction(instruction)
    parameters = instruction.parameters
    size = sum(int(np.size(p)) for p in parameters)
    update = codec.decode(list(result.arrays), size=size, seed=seed, dtype=model_dtype(parameters))
    trained, start = [], 0
    for reference in parameters:
        stop = start + int(np.size(reference))
        piece = update[start:stop].reshape(np.shape(reference))
        trained.append(_in_dtype(np.add(reference, piece, dtype=np.float64), reference.dtype))
        start = stop
    values = dict(result.values)
    if NUM_EXAMPLES_KEY not in values:
        raise InvalidMessageError(f"a compressed fit answer has no {NUM_EXAMPLES_KEY}")
    metrics = {k[len(FIT_PREFIX) :]: v for k, v in values.items() if k.startswith(FIT_PREFIX)}
    return FitRes(trained, values[NUM_EXAMPLES_KEY], metrics)  # type: ignore[arg-type]


def _in_dtype(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """`values` as `dtype`; an integer array (a counter) rounded to the nearest value it can
    hold, since the decoded update carries rounding noise that truncation would bias down."""
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        values = np.clip(np.rint(values), info.min, info.max)
    return values.astype(dtype)


def is_compressed_fit(instruction: object) -> bool:
    """Whether `instruction` asks for a compressed fit."""
    return isinstance(instruction, PhaseIns) and instruction.protocol == PROTOCOL
