"""Server optimizers against Reddi et al. (2020)'s update rules written out in plain NumPy, and
checkpoint/restore of their state."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from roost.core.types import FitRes
from roost.engines.sequential import SequentialEngine
from roost.errors import ConfigurationError
from roost.server.loop import ServerConfig, ServerState, run_rounds
from roost.strategy import (
    AdaptiveClipL2,
    FedAdagrad,
    FedAdam,
    FedAvgM,
    FedYogi,
    ServerAdagrad,
    ServerAdam,
    ServerSGD,
    ServerYogi,
    Strategy,
    TrimmedMean,
)

DELTAS = [np.array([0.5, -2.0, 0.0, 1e-3]), np.array([-0.25, -1.0, 3.0, 1e-3])]
X0 = np.array([1.0, 2.0, -1.0, 0.0])


def run_optimizer(optimizer, rounds: int = 4):
    x = [X0.copy()]
    state = optimizer.init(x)
    history = []
    for r in range(rounds):
        x, state = optimizer.apply(x, [DELTAS[r % 2]], state)
        history.append(x[0].copy())
    return history, state


def reference_adaptive(kind: str, eta, beta_1, beta_2, tau, rounds: int = 4):
    x, m, v = X0.copy(), np.zeros(4), np.full(4, tau**2)
    history = []
    for r in range(rounds):
        d = DELTAS[r % 2]
        m = beta_1 * m + (1 - beta_1) * d
        if kind == "adagrad":
            v = v + d**2
        elif kind == "adam":
            v = beta_2 * v + (1 - beta_2) * d**2
        else:  # yogi
            v = v - (1 - beta_2) * d**2 * np.sign(v - d**2)
        x = x + eta * m / (np.sqrt(v) + tau)
        history.append(x.copy())
    return history


def test_sgd_by_hand() -> None:
    history, state = run_optimizer(ServerSGD(learning_rate=0.5), rounds=2)
    np.testing.assert_allclose(history[0], X0 + 0.5 * DELTAS[0])
    np.testing.assert_allclose(history[1], X0 + 0.5 * DELTAS[0] + 0.5 * DELTAS[1])
    assert state == {}


def test_momentum_by_hand() -> None:
    # v1 = Δ1, v2 = 0.9·Δ1 + Δ2; x2 = x0 + η·v1 + η·v2.
    history, state = run_optimizer(ServerSGD(learning_rate=0.5, momentum=0.9), rounds=2)
    v1 = DELTAS[0]
    v2 = 0.9 * DELTAS[0] + DELTAS[1]
    np.testing.assert_allclose(history[0], X0 + 0.5 * v1)
    np.testing.assert_allclose(history[1], X0 + 0.5 * v1 + 0.5 * v2)
    np.testing.assert_allclose(state["momentum"][0], v2)


@pytest.mark.parametrize(
    ("kind", "optimizer", "args"),
    [
        ("adagrad", ServerAdagrad(0.1, beta_1=0.0, tau=1e-9), (0.1, 0.0, 0.0, 1e-9)),
        ("adagrad", ServerAdagrad(0.3, beta_1=0.5, tau=1e-2), (0.3, 0.5, 0.0, 1e-2)),
        ("adam", ServerAdam(0.1, beta_1=0.9, beta_2=0.99, tau=1e-9), (0.1, 0.9, 0.99, 1e-9)),
        ("adam", ServerAdam(0.05, beta_1=0.5, beta_2=0.9, tau=1e-3), (0.05, 0.5, 0.9, 1e-3)),
        ("yogi", ServerYogi(0.01, beta_1=0.9, beta_2=0.99, tau=1e-3), (0.01, 0.9, 0.99, 1e-3)),
        ("yogi", ServerYogi(0.2, beta_1=0.0, beta_2=0.5, tau=1e-1), (0.2, 0.0, 0.5, 1e-1)),
    ],
)
def test_adaptive_optimizers_follow_reddi_et_al(kind, optimizer, args) -> None:
    history, _ = run_optimizer(optimizer)
    for got, expected in zip(history, reference_adaptive(kind, *args), strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15)


def test_adam_first_step_moves_each_coordinate_by_about_eta_times_sign() -> None:
    # m = 0.1·Δ, v ≈ 0.01·Δ², so m / √v ≈ sign(Δ): each coordinate moves by ≈ η.
    history, _ = run_optimizer(ServerAdam(0.1), rounds=1)
    step = history[0] - X0
    np.testing.assert_allclose(step[[0, 1, 3]], 0.1 * np.sign(DELTAS[0][[0, 1, 3]]), rtol=1e-5)
    assert step[2] == 0.0


def test_yogi_first_step_by_hand() -> None:
    # Δ = 0.5, v0 = τ² = 1e-6 < Δ²: v = 1e-6 + 0.01·0.25 = 0.002501; m = 0.05.
    yogi = ServerYogi()
    x, state = yogi.apply([np.zeros(1)], [np.array([0.5])], yogi.init([np.zeros(1)]))
    np.testing.assert_allclose(state["v"][0], [0.002501])
    np.testing.assert_allclose(x[0], [0.01 * 0.05 / (np.sqrt(0.002501) + 1e-3)])


def test_optimizers_keep_the_model_dtype_and_never_change_inputs() -> None:
    parameters = [np.ones(3, np.float32)]
    delta = [np.full(3, 0.5, np.float32)]
    for optimizer in (ServerSGD(1.0, 0.9), ServerAdagrad(), ServerAdam(), ServerYogi()):
        state = optimizer.init(parameters)
        snapshot = {k: [a.copy() for a in v] for k, v in state.items()}
        new, new_state = optimizer.apply(parameters, delta, state)
        assert new[0].dtype == np.float32
        np.testing.assert_array_equal(parameters[0], np.ones(3, np.float32))
        for key, arrays in snapshot.items():
            np.testing.assert_array_equal(state[key][0], arrays[0])
            assert new_state[key][0] is not state[key][0]


@pytest.mark.parametrize(
    "make",
    [
        lambda: ServerSGD(learning_rate=0.0),
        lambda: ServerSGD(momentum=1.0),
        lambda: ServerAdam(beta_1=-0.1),
        lambda: ServerAdam(tau=0.0),
        lambda: ServerYogi(learning_rate=-1.0),
    ],
)
def test_bad_settings_are_refused(make) -> None:
    with pytest.raises(ConfigurationError):
        make()


# -- checkpoint and restore ----------------------------------------------------------------------


def roundtrip(state):
    """Save a state the way a checkpoint store may (JSON + an .npz of arrays, no pickle) and load
    it back; fails on anything that is not a dict/list/tuple of arrays and Python scalars."""
    arrays: dict[str, np.ndarray] = {}

    def encode(value):
        if isinstance(value, dict):
            assert all(isinstance(k, str) for k in value)
            return {"dict": {k: encode(v) for k, v in value.items()}}
        if isinstance(value, list):
            return {"list": [encode(v) for v in value]}
        if isinstance(value, tuple):
            return {"tuple": [encode(v) for v in value]}
        if isinstance(value, np.ndarray):
            key = f"a{len(arrays)}"
            arrays[key] = value
            return {"array": key}
        assert type(value) in (int, float, bool, str), f"not a plain scalar: {value!r}"
        return {"scalar": value}

    text = json.dumps(encode(state))
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    buffer.seek(0)
    loaded = np.load(buffer, allow_pickle=False)

    def decode(node):
        if "dict" in node:
            return {k: decode(v) for k, v in node["dict"].items()}
        if "list" in node:
            return [decode(v) for v in node["list"]]
        if "tuple" in node:
            return tuple(decode(v) for v in node["tuple"])
        if "array" in node:
            return loaded[node["array"]]
        return node["scalar"]

    return decode(json.loads(text))


def synthetic_round(server_round: int, parameters):
    """Deterministic client results for a round: 5 clients around a round-dependent target."""
    rng = np.random.default_rng(server_round)
    return [
        (
            str(k),
            FitRes(
                [(p + rng.normal(0.5, 1.0 + k, size=p.shape)).astype(p.dtype) for p in parameters],
                10 + k,
            ),
        )
        for k in range(5)
    ]


def drive(strategy, parameters, rounds, state=None):
    """Run `rounds` of aggregation from `state` (None: the strategy's initial state), threading
    the state from round to round; return the final parameters and state."""
    if state is None:
        state = strategy.init(parameters)
    for server_round in rounds:
        new, _, state, _ = strategy.aggregate_fit(
            server_round, parameters, synthetic_round(server_round, parameters), state
        )
        parameters = new if new is not None else parameters
    return parameters, state


STRATEGIES = {
    "fedavgm": lambda: FedAvgM(server_learning_rate=0.7, server_momentum=0.9),
    "fedadagrad": lambda: FedAdagrad(eta=0.3, beta_1=0.5),
    "fedadam+clip": lambda: FedAdam(update_transforms=[AdaptiveClipL2(initial_norm=0.5)]),
    "fedyogi": lambda: FedYogi(eta=0.05),
    "trimmed+adam": lambda: Strategy(
        aggregator=TrimmedMean(0.2),
        server_optimizer=ServerAdam(0.1),
        update_transforms=[AdaptiveClipL2(initial_norm=1.0, target_quantile=0.3)],
    ),
}


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_a_restored_strategy_continues_exactly_like_an_uninterrupted_one(name) -> None:
    start = [np.zeros((3, 2)), np.zeros(2, np.float32)]
    uninterrupted, _ = drive(STRATEGIES[name](), start, range(1, 7))

    halfway, state = drive(STRATEGIES[name](), start, range(1, 4))
    saved = roundtrip(state)
    assert "optimizer" in saved
    restored = STRATEGIES[name]()  # a new strategy object, continued from the saved tree
    resumed, _ = drive(restored, halfway, range(4, 7), saved)

    for a, b in zip(uninterrupted, resumed, strict=True):
        np.testing.assert_array_equal(a, b)  # bit for bit
    # Without the saved state the continuation differs: the state really matters.
    fresh, _ = drive(STRATEGIES[name](), halfway, range(4, 7))
    assert not np.array_equal(fresh[0], uninterrupted[0])


def test_saved_state_stays_valid_while_the_strategy_moves_on() -> None:
    strategy = FedAdam()
    start = [np.zeros(3)]
    _, saved = drive(strategy, start, [1])
    copy = roundtrip(saved)
    _, later = drive(strategy, start, [2, 3], saved)  # steps take the saved state, never change it
    for key in ("m", "v"):
        np.testing.assert_array_equal(saved["optimizer"][key][0], copy["optimizer"][key][0])
        assert not np.array_equal(later["optimizer"][key][0], saved["optimizer"][key][0])


def test_adaptive_clip_bound_is_in_the_state() -> None:
    strategy = FedAvgM(update_transforms=[AdaptiveClipL2(initial_norm=0.1)])
    _, state = drive(strategy, [np.zeros(4)], [1])
    # Every update is longer than 0.1, so the bound grew by exp(0.2 · 0.5).
    assert state["transforms"][0]["clip_norm"] == pytest.approx(0.1 * np.exp(0.1))


def test_state_from_a_differently_built_strategy_is_refused() -> None:
    parameters = [np.zeros(3)]
    _, saved = drive(FedAdam(update_transforms=[AdaptiveClipL2()]), parameters, [1])
    resume_from = ServerState(1, parameters, saved, np.random.default_rng(0).bit_generator.state)
    transport = SequentialEngine(lambda context: None, 2)  # never reached: refused first
    with pytest.raises(ConfigurationError, match="built differently"):
        run_rounds(FedAdam(), transport, ServerConfig(num_rounds=2), resume_from=resume_from)
