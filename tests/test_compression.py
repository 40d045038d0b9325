"""Compressed updates: the codecs' arithmetic, the client's encoding and error feedback, the
loop's decoding and refusals, and what a compressed round records."""

from __future__ import annotations

import math

import numpy as np
import pytest

import roost
from roost.apps.digits.client import make_client_fn
from roost.apps.digits.strategy import strategy_knobs
from roost.client.client import Context
from roost.client.compression import STATE_KEY, answer_compressed_fit
from roost.client.protocols import PROTOCOLS
from roost.core import codecs
from roost.core.codecs import Codec
from roost.core.compression import decode_fit, fit_instruction
from roost.core.types import Failure, FitRes, PhaseRes
from roost.core.validation import unpack_result, validate_result
from roost.errors import ConfigurationError
from roost.privacy.preset import with_central_dp
from roost.settings import RunSettings
from roost.strategy.secure import SecureAggregation

SIZE = 650  # the digits model: 64 × 10 weights and 10 biases
ALL = ["none", "q8", "q4", "q2", "q1", "rot-q8", "rot-q4", "rot-q2", "topk:0.05", "topk:1"]


def encode(codec: Codec, vector: np.ndarray, seed: int = 7, stream: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(stream)
    return codec.encode(vector, seed=seed, rng=rng, dtype=np.dtype(np.float64))


def decode(codec: Codec, arrays: list[np.ndarray], size: int, seed: int = 7) -> np.ndarray:
    return codec.decode(arrays, size=size, seed=seed, dtype=np.dtype(np.float64))


# -- codecs -------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ALL)
@pytest.mark.parametrize("size", [1, 3, SIZE, 2 * codecs.BLOCK + 37])
def test_round_trip_sends_the_advertised_bytes_and_bounded_error(spec: str, size: int) -> None:
    codec = Codec.parse(spec)
    assert Codec.parse(codec.name) == codec
    vector = np.random.default_rng(size).normal(size=size) * np.linspace(0.1, 3, size)
    arrays = encode(codec, vector)
    assert sum(a.nbytes for a in arrays) == codec.payload_bytes(size)
    decoded = decode(codec, arrays, size)
    if codec.bits is None and codec.fraction in (None, 1.0):
        np.testing.assert_allclose(decoded, vector, rtol=1e-6)  # float32 values for top-k
    elif codec.bits is not None and not codec.rotate:
        # Each coordinate lands on one of the two levels around it: off by under one step.
        step = (vector.max() - vector.min()) / ((1 << codec.bits) - 1)
        # (Blocks' ranges are no wider than the whole's; float32 ranges add an ulp.)
        assert np.abs(decoded - vector).max() <= step + 1e-6 * np.abs(vector).max()
    elif codec.fraction is not None:
        kept = np.flatnonzero(decoded)
        assert len(kept) == codecs.top_k_count(size, codec.fraction)
        assert np.abs(vector[kept]).min() >= np.abs(np.delete(vector, kept)).max(initial=0)


@pytest.mark.parametrize("spec", ["q2", "rot-q2", "q1"])
def test_stochastic_quantization_is_unbiased(spec: str) -> None:
    # A decoded coordinate is x plus a sum of independent rounding errors whose ranges' squares
    # add up to at most step² (one term unrotated; rotated, the inverse rotation's row is a unit
    # vector), so by Hoeffding the mean of T draws strays more than 0.15·step (6·step/(2√T),
    # T = 400) with probability under 2·exp(−18) per coordinate: never by chance in 256. The
    # bias of deterministic rounding (up to half a step) fails it by far.
    codec, size, draws = Codec.parse(spec), 256, 400
    vector = np.random.default_rng(1).normal(size=size)
    rng = np.random.default_rng(2)
    total = np.zeros(size)
    for _ in range(draws):
        total += decode(codec, codec.encode(vector, seed=3, rng=rng, dtype=np.float64), size, 3)
    mean = total / draws
    # Rotated: the levels are those of the rotated vector, whose range bounds any coordinate's.
    spread = np.ptp(codecs._rotate(vector, 3)) if codec.rotate else np.ptp(vector)
    step = spread / ((1 << codec.bits) - 1)
    assert np.abs(mean - vector).max() < 6 * step / (2 * math.sqrt(draws))


@pytest.mark.parametrize("size", [1, 2, 5, SIZE, codecs.BLOCK, 3 * codecs.BLOCK + 5])
def test_rotation_is_orthonormal_and_inverted_exactly(size: int) -> None:
    vector = np.random.default_rng(size).normal(size=size)
    rotated = codecs._rotate(vector, 11)
    assert np.linalg.norm(rotated) == pytest.approx(np.linalg.norm(vector), rel=1e-12)
    np.testing.assert_allclose(codecs._rotate(rotated, 11, inverse=True), vector, atol=1e-12)
    assert not np.allclose(codecs._rotate(rotated, 12, inverse=True), vector) or size == 1


def test_rotation_narrows_the_range_of_a_spiky_update() -> None:
    vector = np.random.default_rng(0).normal(size=SIZE) * 0.01
    vector[[3, 300]] = 5.0  # two large coordinates: plain quantization spends its levels on them
    errors = {}
    for spec in ("q4", "rot-q4"):
        codec = Codec.parse(spec)
        errors[spec] = np.linalg.norm(decode(codec, encode(codec, vector), SIZE) - vector)
    assert errors["rot-q4"] < errors["q4"] / 2


@pytest.mark.parametrize(
    "spec, message",
    [
        ("q3", "unknown compression"),
        ("topk:0", "0 < F <= 1"),
        ("topk:2", "0 < F <= 1"),
        ("topk:x", "unknown compression"),
        ("rot-topk:0.1", "unknown compression"),
    ],
)
def test_unknown_codecs_are_refused_with_the_forms_to_use(spec: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Codec.parse(spec)


# -- the protocol: client encoding, server decoding ---------------------------------------------


class ShiftClient(roost.Client):
    """Trains by adding a fixed update to the model."""

    def __init__(self, update: list[np.ndarray]) -> None:
        self.update = update

    def fit(self, parameters, config):
        return [p + u for p, u in zip(parameters, self.update, strict=True)], 5, {"seen": 1.0}


def model(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(64, 10)), rng.normal(size=10)]


def test_top_k_carries_what_it_did_not_send_into_the_next_round() -> None:
    codec, parameters, update = Codec.parse("topk:0.05"), model(0), model(1)
    flat = np.concatenate([u.ravel() for u in update])
    context = Context.for_partition(0, 1)
    sent = np.zeros(SIZE)
    for round_seed in (1, 2, 3):
        instruction = fit_instruction(codec, parameters, {"lr": 0.1}, round_seed)
        answer = answer_compressed_fit(ShiftClient(update), instruction, context)
        result = decode_fit(instruction, answer)
        assert (result.num_examples, result.metrics) == (5, {"seen": 1.0})
        sent += np.concatenate(
            [(r - p).ravel() for r, p in zip(result.parameters, parameters, strict=True)]
        )
        residual = context.state[STATE_KEY]["residual"]
        # Nothing is lost: what was sent plus what is kept is every update so far.
        np.testing.assert_allclose(sent + residual, round_seed * flat, atol=1e-5)
    assert np.count_nonzero(residual) > SIZE // 2  # most of it still waits


def test_a_decoded_answer_is_validated_like_any_fit_result() -> None:
    codec, parameters = Codec.parse("q8"), model(0)
    instruction = fit_instruction(codec, parameters, {}, 5)
    answer = answer_compressed_fit(ShiftClient(model(1)), instruction, Context.for_partition(0, 1))
    outcome = accept(instruction, answer)
    assert isinstance(outcome, FitRes)
    assert [a.shape for a in outcome.parameters] == [(64, 10), (10,)]
    assert [a.dtype for a in outcome.parameters] == [np.float64, np.float64]


def accept(instruction, answer):
    """What the round loop makes of a client's answer: validated, then decoded."""
    return unpack_result("7", instruction, validate_result("7", instruction, answer, None))


def _honest() -> tuple:
    codec, parameters = Codec.parse("topk:0.05"), model(0)
    instruction = fit_instruction(codec, parameters, {}, 5)
    answer = answer_compressed_fit(ShiftClient(model(1)), instruction, Context.for_partition(0, 1))
    return instruction, answer


def _hostile(kind: str) -> PhaseRes:
    _, answer = _honest()
    indices, values = answer.arrays
    arrays = {
        "too few arrays": [indices],
        "wrong dtype": [indices.astype(np.int64), values],
        "wrong length": [indices[:-1], values[:-1]],
        "index past the model": [np.append(indices[:-1], np.uint32(SIZE)), values],
        "repeated index": [np.append(indices[:-1], indices[-2]), values],
        "NaN value": [indices, np.append(values[:-1], np.float32("nan"))],
        "not arrays": [indices.tolist(), values],
    }.get(kind, [indices, values])
    values_sent = dict(answer.values)
    if kind == "no num_examples":
        del values_sent["num_examples"]
    if kind == "negative num_examples":
        values_sent["num_examples"] = -3
    return PhaseRes(arrays, values_sent)


@pytest.mark.parametrize(
    "kind",
    [
        "too few arrays",
        "wrong dtype",
        "wrong length",
        "index past the model",
        "repeated index",
        "NaN value",
        "not arrays",
        "no num_examples",
        "negative num_examples",
    ],
)
def test_a_malformed_payload_is_that_clients_failure(kind: str) -> None:
    instruction, _ = _honest()
    outcome = accept(instruction, _hostile(kind))
    assert isinstance(outcome, Failure) and outcome.kind == "invalid", outcome


@pytest.mark.parametrize("broken", ["ranges", "codes"])
def test_malformed_quantized_payloads_are_refused(broken: str) -> None:
    codec, parameters = Codec.parse("rot-q4"), model(0)
    instruction = fit_instruction(codec, parameters, {}, 5)
    answer = answer_compressed_fit(ShiftClient(model(1)), instruction, Context.for_partition(0, 1))
    packed, scales = answer.arrays
    # a top below its bottom, or a byte of codes missing
    arrays = [packed, scales[:, ::-1].copy()] if broken == "ranges" else [packed[:-1], scales]
    outcome = accept(instruction, PhaseRes(arrays, answer.values))
    assert isinstance(outcome, Failure) and outcome.kind == "invalid", outcome


# -- strategies and runs ------------------------------------------------------------------------


def digits_strategy(compression, **knobs) -> roost.Strategy:
    settings = RunSettings(num_clients=6, num_rounds=2, fraction_evaluate=0.0)
    return roost.FedAvg(**{**strategy_knobs(settings), **knobs}, compression=compression)


def run(strategy, rounds=2, engine="sequential", **options) -> roost.History:
    return roost.run_simulation(
        make_client_fn(0),
        6,
        strategy=strategy,
        config=roost.ServerConfig(num_rounds=rounds),
        seed=0,
        engine=engine,
        **options,
    )


def test_a_compressed_run_is_reproducible_and_records_its_bytes() -> None:
    first, second = run(digits_strategy("rot-q4")), run(digits_strategy("rot-q4"))
    for a, b in zip(first.parameters, second.parameters, strict=True):
        np.testing.assert_array_equal(a, b)
    payload = Codec.parse("rot-q4").payload_bytes(SIZE)
    assert first.measurements["bytes_up"] == [(1, 6.0 * payload), (2, 6.0 * payload)]
    assert first.measurements["bytes_down"] == [(1, 6.0 * SIZE * 8), (2, 6.0 * SIZE * 8)]
    plain = run(digits_strategy(None))
    assert "bytes_up" not in plain.measurements
    compressed, uncompressed = (h.metrics_centralized["accuracy"][-1][1] for h in (first, plain))
    assert compressed > uncompressed - 0.05


def test_a_malformed_payload_fails_one_client_and_the_run_goes_on(monkeypatch) -> None:
    honest = PROTOCOLS["compress"]

    def lying(client, instruction, context):
        answer = honest(client, instruction, context)
        if context.node_id == "0":  # sends one array too many
            return PhaseRes([*answer.arrays, answer.arrays[0]], answer.values)
        return answer

    monkeypatch.setitem(PROTOCOLS, "compress", lying)
    history = run(digits_strategy("q8"))
    assert [(r.fit_results, r.fit_failures) for r in history.rounds] == [(5, 1), (5, 1)]
    assert history.measurements["bytes_up"][-1][1] == 5 * Codec.parse("q8").payload_bytes(SIZE)


def test_error_feedback_survives_a_resumed_run(tmp_path) -> None:
    strategy = digits_strategy("topk:0.02", fraction_fit=0.5)
    whole = run(strategy, rounds=4)
    state_dir = tmp_path / "state"
    run(digits_strategy("topk:0.02", fraction_fit=0.5), rounds=2, state_dir=state_dir)
    resumed = run(
        digits_strategy("topk:0.02", fraction_fit=0.5), rounds=4, state_dir=state_dir, resume=True
    )
    for a, b in zip(whole.parameters, resumed.parameters, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: digits_strategy("q4", secure_aggregation=SecureAggregation()), "not both"),
        (lambda: roost.FedSGD(compression="q4"), "gradients"),
        (lambda: digits_strategy("q5"), "unknown compression"),
        (lambda: digits_strategy(4), "codec name"),
        (lambda: digits_strategy(None).replace(compression="q3"), "unknown compression"),
    ],
)
def test_combinations_that_cannot_work_are_refused(build, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        build()


def test_the_vectorized_engine_is_refused_in_one_line() -> None:
    with pytest.raises(ConfigurationError, match="cannot compress updates"):
        run(digits_strategy("q8"), engine="vectorized")


def test_central_dp_keeps_the_compression() -> None:
    private = with_central_dp(
        digits_strategy("q8"),
        noise_multiplier=0.5,
        clip_norm=1.0,
        expected_clients=6,
        num_clients=6,
    )
    assert private.compression == Codec.parse("q8")


# -- the command line ---------------------------------------------------------------------------


def test_simulate_compress_runs_the_demo_compressed_and_records_its_bytes(tmp_path, capsys):
    from roost.cli import main

    out = tmp_path / "out"
    args = ["simulate", "--compress", "q2", "--rounds", "2", "--no-plot", "--out", str(out)]
    assert main(args) == 0
    history = roost.History.from_json((out / "history.json").read_text())
    payload = Codec.parse("q2").payload_bytes(SIZE)
    assert history.measurements["bytes_up"] == [(1, 10.0 * payload), (2, 10.0 * payload)]
    assert "q2: each client sends 195 bytes per round instead of 5,200" in capsys.readouterr().out


def test_server_compress_tells_its_clients_through_the_strategy() -> None:
    from roost.apps.digits.commands import DigitsApp
    from roost.cli import build_parser
    from roost.cli.settings import settings_from_args

    args = build_parser().parse_args(["server", "--compress", "topk:0.01"])
    settings = settings_from_args(args, num_clients=2)
    assert DigitsApp().server_strategy(settings).compression == Codec(fraction=0.01)
    plain = settings_from_args(build_parser().parse_args(["server"]), num_clients=2)
    assert DigitsApp().server_strategy(plain).compression is None


def test_the_demo_falls_back_from_the_vectorized_engine_and_says_why(capsys) -> None:
    from roost.cli import main

    args = ["simulate", "--engine", "vectorized", "--compress", "q8", "--rounds", "1", "--no-plot"]
    assert main(args) == 0
    assert "compressed updates (the vectorized engine trains" in capsys.readouterr().out


@pytest.mark.parametrize("spec, payload", [("none", SIZE * 4), ("q8", 682), ("topk:0.1", 65 * 8)])
def test_a_float32_model_keeps_its_dtype_and_none_sends_four_bytes_a_coordinate(
    spec: str, payload: int
) -> None:
    codec = Codec.parse(spec)
    parameters = [a.astype(np.float32) for a in model(0)]
    update = [a.astype(np.float32) for a in model(1)]
    instruction = fit_instruction(codec, parameters, {}, 5)
    answer = answer_compressed_fit(ShiftClient(update), instruction, Context.for_partition(0, 1))
    assert sum(a.nbytes for a in answer.arrays) == codec.payload_bytes(SIZE, np.float32)
    assert codec.payload_bytes(SIZE, np.float32) == payload
    outcome = accept(instruction, answer)
    assert isinstance(outcome, FitRes)
    assert [a.dtype for a in outcome.parameters] == [np.float32, np.float32]


@pytest.mark.parametrize("spec", ["q8", "rot-q8"])
def test_an_integer_counter_is_rounded_to_nearest_not_truncated(spec: str) -> None:
    """A model's counter (BatchNorm's batches seen) moves by whole steps; its decoded update
    carries rounding noise, which truncation toward zero turned into a lost step."""
    # One block of 1,024: the counters' step (7) lies inside the weights' range, off the grid.
    parameters = [np.zeros(1020), np.full(4, 100, np.int64)]
    step = [np.linspace(-10.0, 10.0, 1020), np.full(4, 7, np.int64)]
    instruction = fit_instruction(Codec.parse(spec), parameters, {}, 5)
    answer = answer_compressed_fit(ShiftClient(step), instruction, Context.for_partition(0, 1))
    decoded = decode_fit(instruction, answer).parameters[1]
    assert decoded.dtype == np.int64 and decoded.tolist() == [107] * 4
