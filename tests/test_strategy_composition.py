"""Update transforms, weightings, and composing parts into a strategy without a new class."""

from __future__ import annotations

import io
import json
import logging

import numpy as np
import pytest

from roost.core.types import Failure, FitRes
from roost.errors import ConfigurationError
from roost.server.loop import tree_structure
from roost.server.state import decode_tree, encode_tree
from roost.strategy import (
    PRESETS,
    AdaptiveClipL2,
    ClipL2,
    FedAvg,
    FedWeightedAvg,
    PartialFit,
    ServerAdam,
    ServerSGD,
    Strategy,
    TrimmedMean,
    chain,
    parameter_delta,
    uniform_weight,
    weight_by_metric,
    weight_by_num_examples,
)
from roost.strategy.base import Chain, FunctionWeighting
from roost.strategy.tally import FitSteps, Returning, Tally, tally_updates

# -- clipping -----------------------------------------------------------------------------------


def test_clip_l2_by_hand() -> None:
    clip = ClipL2(max_norm=1.0)
    update = [np.array([3.0]), np.array([[4.0]])]
    state = clip.init(update)
    # ‖(3, 4)‖ = 5 over both arrays -> scaled by 1/5.
    clipped, state = clip.apply(update, state)
    np.testing.assert_allclose(clipped[0], [0.6])
    np.testing.assert_allclose(clipped[1], [[0.8]])
    short = [np.array([0.3, 0.4])]
    np.testing.assert_array_equal(clip.apply(short, state)[0][0], short[0])


def test_clip_l2_keeps_float32() -> None:
    clip = ClipL2(1.0)
    update = [np.full(4, 10.0, np.float32)]
    clipped, _ = clip.apply(update, clip.init(update))
    assert clipped[0].dtype == np.float32
    assert np.linalg.norm(clipped[0]) == pytest.approx(1.0, rel=1e-6)


def test_adaptive_clip_one_round_by_hand() -> None:
    clip = AdaptiveClipL2(initial_norm=1.0, target_quantile=0.5, learning_rate=0.2)
    state = clip.init([np.zeros(1)])
    norms = [0.5, 2.0, 3.0, 4.0]  # one of four at or under the bound: b = 0.25
    out = []
    for n in norms:
        clipped, state = clip.apply([np.array([n])], state)
        out.append(clipped)
    np.testing.assert_allclose([o[0][0] for o in out], [0.5, 1.0, 1.0, 1.0])
    _, state, measurements = clip.finish(None, state)
    assert state["clip_norm"] == pytest.approx(np.exp(-0.2 * (0.25 - 0.5)))
    assert measurements == {"clip_norm": 1.0, "unclipped_share": 0.25}


def test_adaptive_clip_settles_on_the_target_quantile() -> None:
    clip = AdaptiveClipL2(initial_norm=0.1, target_quantile=0.8, learning_rate=0.2)
    state = clip.init([np.zeros(1)])
    rng = np.random.default_rng(0)
    for _server_round in range(1, 300):
        for norm in rng.uniform(0.0, 10.0, size=50):
            _, state = clip.apply([np.array([norm])], state)
        _, state, _ = clip.finish(None, state)
    # The 0.8-quantile of U(0, 10) is 8.
    assert state["clip_norm"] == pytest.approx(8.0, rel=0.1)


def test_clip_settings_are_checked() -> None:
    with pytest.raises(ConfigurationError):
        ClipL2(0.0)
    with pytest.raises(ConfigurationError):
        AdaptiveClipL2(target_quantile=1.5)


# -- weighting ----------------------------------------------------------------------------------


def results(*triples):
    return [
        (cid, FitRes([np.array([float(value)])], n, metrics)) for cid, value, n, metrics in triples
    ]


def test_weight_by_quality_metric() -> None:
    strategy = FedWeightedAvg(weight_metric="quality")
    outcomes = results(("a", 1.0, 100, {"quality": 0.9}), ("b", 10.0, 1, {"quality": 0.1}))
    new, *_ = strategy.aggregate_fit(1, [np.zeros(1)], outcomes)
    np.testing.assert_allclose(new[0], [(0.9 * 1 + 0.1 * 10) / 1.0])


def test_weight_by_quality_times_num_examples() -> None:
    strategy = FedWeightedAvg(weight_metric="quality", times_num_examples=True)
    outcomes = results(("a", 1.0, 100, {"quality": 0.9}), ("b", 10.0, 10, {"quality": 0.1}))
    new, *_ = strategy.aggregate_fit(1, [np.zeros(1)], outcomes)
    np.testing.assert_allclose(new[0], [(90 * 1 + 1 * 10) / 91])


def test_without_a_metric_fedweightedavg_is_fedavg() -> None:
    outcomes = results(("a", 1.0, 1, {}), ("b", 4.0, 3, {}))
    new, *_ = FedWeightedAvg().aggregate_fit(1, [np.zeros(1)], outcomes)
    np.testing.assert_allclose(new[0], [(1 + 12) / 4])


def test_user_weight_function_of_id_examples_and_metrics() -> None:
    def weight(client_id, num_examples, metrics):
        return 0.0 if client_id == "untrusted" else num_examples * metrics["trust"]

    outcomes = results(
        ("a", 2.0, 10, {"trust": 1.0}),
        ("b", 5.0, 10, {"trust": 0.5}),
        ("untrusted", 1000.0, 10, {"trust": 1.0}),
    )
    new, *_ = FedWeightedAvg(weight_fn=weight).aggregate_fit(1, [np.zeros(1)], outcomes)
    np.testing.assert_allclose(new[0], [(10 * 2 + 5 * 5) / 15])


def test_uniform_weight_counts_every_client_once() -> None:
    outcomes = results(("a", 1.0, 1000, {}), ("b", 3.0, 0, {}))
    new, *_ = FedAvg(weight_fn=uniform_weight).aggregate_fit(1, [np.zeros(1)], outcomes)
    np.testing.assert_allclose(new[0], [2.0])


def test_clients_without_a_usable_weight_are_left_out(caplog) -> None:
    outcomes = results(
        ("missing", 100.0, 1, {}),
        ("negative", 100.0, 1, {"quality": -1.0}),
        ("text", 100.0, 1, {"quality": "high"}),
        ("ok", 3.0, 1, {"quality": 0.5}),
    )
    with caplog.at_level(logging.WARNING):
        new, *_ = FedWeightedAvg(weight_metric="quality").aggregate_fit(1, [np.zeros(1)], outcomes)
    np.testing.assert_allclose(new[0], [3.0])
    assert "client missing left out: fit metrics have no 'quality'" in caplog.text
    assert "client negative left out: weight_fn returned -1.0" in caplog.text
    assert "client text left out: metric 'quality' is 'high', not a number" in caplog.text


def test_a_weight_function_that_raises_drops_only_that_client(caplog) -> None:
    outcomes = results(("a", 1.0, 1, {"w": 2.0}), ("b", 9.0, 1, {}))
    strategy = FedAvg(weight_fn=lambda cid, n, m: m["w"])
    new, *_ = strategy.aggregate_fit(1, [np.zeros(1)], outcomes)
    np.testing.assert_allclose(new[0], [1.0])
    assert "client b left out: weight_fn raised KeyError" in caplog.text


def test_weight_metric_and_weight_fn_together_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="not both"):
        FedWeightedAvg(weight_metric="q", weight_fn=uniform_weight)
    assert weight_by_metric("q")("a", 3, {"q": 2}) == 2.0


# -- composition: trimmed mean + server Adam + clipping, no new class ---------------------------


def test_trimmed_mean_with_adam_and_clipping_composes() -> None:
    strategy = Strategy(
        aggregator=TrimmedMean(beta=0.2),
        server_optimizer=ServerAdam(learning_rate=0.1, beta_1=0.9, beta_2=0.99, tau=1e-3),
        update_transforms=[ClipL2(max_norm=1.0)],
    )
    rng = np.random.default_rng(7)
    x = np.zeros(3)
    m, v = np.zeros(3), np.full(3, 1e-6)
    parameters = [x.copy()]
    state = strategy.init(parameters)
    for server_round in range(1, 4):
        updates = rng.normal(0.0, 2.0, size=(5, 3))
        updates[4] = 100.0  # one attacker
        outcomes = [(str(k), FitRes([parameters[0] + u], 1)) for k, u in enumerate(updates)]
        parameters, _, state, _ = strategy.aggregate_fit(server_round, parameters, outcomes, state)

        # The same round in plain NumPy: clip, trimmed mean (cut 1 each end), Adam.
        norms = np.linalg.norm(updates, axis=1, keepdims=True)
        clipped = updates * np.minimum(1.0, 1.0 / norms)
        delta = np.sort(clipped, axis=0)[1:4].mean(axis=0)
        m = 0.9 * m + 0.1 * delta
        v = 0.99 * v + 0.01 * delta**2
        x = x + 0.1 * m / (np.sqrt(v) + 1e-3)
        np.testing.assert_allclose(parameters[0], x, rtol=1e-12)


def test_presets_take_other_parts_and_refuse_their_own() -> None:
    from roost.strategy import FedAdam, FedMedian

    strategy = FedAdam(aggregator=TrimmedMean(0.1), update_transforms=[ClipL2(2.0)])
    assert isinstance(strategy.aggregator, TrimmedMean)
    assert isinstance(strategy.server_optimizer, ServerAdam)
    with pytest.raises(ConfigurationError, match="FedAdam sets server_optimizer"):
        FedAdam(server_optimizer=ServerAdam())
    with pytest.raises(ConfigurationError, match="FedMedian sets aggregator"):
        FedMedian(aggregator=TrimmedMean())


# -- every preset resumes exactly from a serialised state tree ------------------------------------

PRESET_OPTIONS = {
    "fedprox": {"proximal_mu": 0.1},
    # A research seed makes the noise reproducible, so a resumed run can match bit for bit.
    "dpfedavg": {
        "noise_multiplier": 1.0,
        "clip_norm": 1.0,
        "expected_clients": 5,
        "num_clients": 50,
        "seed": 0,
    },
}


def preset_round(server_round: int, parameters):
    """Fixed results for a round: 5 clients around the global model, with a loss for q-FedAvg."""
    rng = np.random.default_rng(100 + server_round)
    return [
        (
            str(k),
            FitRes(
                [(p + rng.normal(0.3, 1.0 + k, size=p.shape)).astype(p.dtype) for p in parameters],
                10 + 3 * k,
                {"train_loss": float(0.5 + k)},
            ),
        )
        for k in range(5)
    ]


def serialised(state):
    """`state` through JSON and an .npz of its arrays (no pickle), and back."""
    arrays: list[np.ndarray] = []
    text = json.dumps(encode_tree(state, arrays))
    buffer = io.BytesIO()
    np.savez(buffer, *arrays)
    buffer.seek(0)
    with np.load(buffer, allow_pickle=False) as archive:
        loaded = [archive[f"arr_{i}"] for i in range(len(archive.files))]
    return decode_tree(json.loads(text), loaded)


@pytest.mark.parametrize("adaptive_clip", [False, True], ids=["plain", "adaptive-clip"])
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_resumes_bit_for_bit_from_a_serialised_state(name, adaptive_clip) -> None:
    def build():
        options = dict(PRESET_OPTIONS.get(name, {}))
        if adaptive_clip:
            options["update_transforms"] = [AdaptiveClipL2(initial_norm=0.5)]
        return PRESETS[name](**options)

    def rounds(strategy, parameters, state, server_rounds):
        for server_round in server_rounds:
            new, _, state, _ = strategy.aggregate_fit(
                server_round, parameters, preset_round(server_round, parameters), state
            )
            assert new is not None
            parameters = new
        return parameters, state

    start = [np.zeros((3, 2)), np.zeros(4, np.float32)]
    strategy = build()
    after_1, state_1 = rounds(strategy, start, strategy.init(start), [1])
    uninterrupted, _ = rounds(strategy, after_1, state_1, [2, 3])

    restored_state = serialised(state_1)
    assert tree_structure(restored_state) == tree_structure(state_1)
    if adaptive_clip:
        assert restored_state["transforms"][0]["clip_norm"] != 0.5  # the bound really moved
    resumed, _ = rounds(build(), after_1, restored_state, [2, 3])

    for a, b in zip(uninterrupted, resumed, strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)  # bit for bit


# -- one name per part, a pure tally, the partial fit ---------------------------------------------


def test_each_part_keeps_the_name_of_the_argument_it_is_given_as() -> None:
    strategy = Strategy(weight_fn=uniform_weight, update_transforms=[ClipL2(1.0)])
    assert strategy.weight_fn == FunctionWeighting(uniform_weight)
    assert isinstance(strategy.update_transforms, Chain)
    assert strategy.update_transforms.transforms == (ClipL2(1.0),)
    assert not hasattr(strategy, "weighting") and not hasattr(strategy, "transform")
    # A strategy's chain is a sequence of its members: it rebuilds a strategy, or extends one.
    extended = Strategy(update_transforms=[*strategy.update_transforms, ClipL2(0.5)])
    assert extended.update_transforms.transforms == (ClipL2(1.0), ClipL2(0.5))
    assert Strategy(update_transforms=strategy.update_transforms).update_transforms.transforms == (
        ClipL2(1.0),
    )


def _steps(template: list[np.ndarray]) -> FitSteps:
    clip = chain(AdaptiveClipL2(initial_norm=1.0, target_quantile=0.5, learning_rate=0.2))
    return FitSteps(FunctionWeighting(weight_by_num_examples), parameter_delta, clip, 1, template)


def test_a_tally_step_returns_the_next_tally_and_leaves_its_input_alone() -> None:
    template = [np.zeros(2)]
    steps = _steps(template)
    start = Tally((), steps.update_transforms.init(template))
    tally, weighted = steps.step(start, "a", FitRes([np.array([3.0, 4.0])], 4, {"x": 1.0}))
    assert start == Tally((), ({"clip_norm": 1.0, "seen": 0, "unclipped": 0},))
    assert tally.transforms == ({"clip_norm": 1.0, "seen": 1, "unclipped": 0},)
    assert tally.fit_metrics == ((4, {"x": 1.0}),) and tally.failures == 0
    update, weight = weighted
    np.testing.assert_allclose(update[0], [0.6, 0.8])  # clipped to norm 1
    assert weight == 4.0
    failed, nothing = steps.step(tally, "b", Failure("b", "timed out", kind="timeout"))
    assert nothing is None and failed == tally._replace(failures=1)


def test_the_tally_stream_returns_its_final_tally_as_a_value() -> None:
    template = [np.zeros(2)]
    steps = _steps(template)
    outcomes = [
        ("a", FitRes([np.array([0.3, 0.4])], 2, {})),
        ("b", Failure("b", "gone", kind="disconnected")),
        ("c", FitRes([np.array([6.0, 8.0])], 1, {})),
    ]
    start = Tally((), steps.update_transforms.init(template))
    stream = Returning(tally_updates(steps, outcomes, start))
    first = next(iter(stream))  # a consumer that stops early: the value still covers all
    np.testing.assert_allclose(first[0][0], [0.3, 0.4])
    final = stream.result()
    assert final.failures == 1 and final.fit_metrics == ((2, {}), (1, {}))
    assert final.transforms == ({"clip_norm": 1.0, "seen": 2, "unclipped": 1},)
    assert start.transforms[0]["seen"] == 0


def test_conclude_fit_takes_a_partial_fit() -> None:
    start = [np.zeros(2)]
    strategy = Strategy(
        server_optimizer=ServerSGD(learning_rate=0.5),
        update_transforms=[AdaptiveClipL2(initial_norm=1.0, target_quantile=0.5)],
        fit_metrics_aggregation_fn=lambda pairs: {"clients": len(pairs)},
        accept_failures=False,
    )
    state = strategy.init(start)
    _, clipped = strategy.update_transforms.apply([np.ones(2)], state["transforms"])
    state = {**state, "transforms": clipped}  # one update seen: the bound moves at finish
    partial = PartialFit([np.ones(2)], state, ((3, {}), (5, {})), {"secagg_survivors": 2.0})
    done = strategy.conclude_fit(1, start, partial)
    np.testing.assert_allclose(done.parameters[0], [0.5, 0.5])
    assert done.metrics == {"clients": 2}
    assert done.measurements["secagg_survivors"] == 2.0 and "clip_norm" in done.measurements
    refused = strategy.conclude_fit(1, start, PartialFit([np.ones(2)], state, failures=1))
    assert refused.parameters is None and refused.metrics == {}
    assert "clip_norm" in refused.measurements  # the transforms finished all the same
