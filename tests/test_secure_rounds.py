"""Secure aggregation inside real runs: four phases per round on the sequential, process and gRPC
transports, the same model as plaintext FedAvg (to the quantization bound), dropouts, refusals."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest
from grpc_support import run_deployed

import roost
from roost.core.types import FitIns
from roost.engines.sequential import SequentialEngine
from roost.errors import ConfigurationError
from roost.server.phases import Round
from roost.strategy import (
    Aggregator,
    ClipL2,
    FedAvg,
    FedMedian,
    SecureAggregation,
    Strategy,
    TrimmedMean,
    UpdateTransform,
    WeightedMean,
    Weighting,
    chain,
    weight_by_num_examples,
)
from roost.strategy.base import FunctionWeighting
from roost.strategy.secure import PLAN

NUM_FEATURES = 6


class LinearClient(roost.Client):
    """Least squares by a few steps of gradient descent; a few clients can be made to fail."""

    def __init__(self, partition_id: int, fail_in: str = "") -> None:
        rng = np.random.default_rng(partition_id)
        self.partition_id = partition_id
        self.x = rng.normal(size=(20 + 3 * partition_id, NUM_FEATURES))
        self.y = self.x @ np.linspace(-1, 1, NUM_FEATURES) + 0.01 * rng.normal(size=len(self.x))
        self.fail_in = fail_in

    def get_parameters(self, config):
        return [np.zeros(NUM_FEATURES), np.zeros(1, np.float32)]

    def fit(self, parameters, config):
        if self.fail_in == "fit":
            raise RuntimeError("this client drops out while training")
        w = parameters[0].copy()
        for _ in range(5):
            w -= 0.05 * 2 * self.x.T @ (self.x @ w - self.y) / len(self.y)
        bias = parameters[1] + np.float32(0.01 * self.partition_id)
        return [w, bias], len(self.y), {"partition": self.partition_id}

    def evaluate(self, parameters, config):
        loss = float(np.mean((self.x @ parameters[0] - self.y) ** 2))
        return loss, len(self.y), {}


class ClientFn:
    """Picklable client_fn (the process engine sends it to its workers)."""

    def __init__(self, failing: frozenset[int] = frozenset()) -> None:
        self.failing = failing

    def __call__(self, context: roost.Context) -> LinearClient:
        pid = context.partition_id
        return LinearClient(pid, "fit" if pid in self.failing else "")


START = [np.zeros(NUM_FEATURES), np.zeros(1, np.float32)]


def strategy(secure: bool, **options) -> FedAvg:
    return FedAvg(
        min_fit_clients=5,
        min_available_clients=5,
        fraction_evaluate=0.0,
        initial_parameters=START,
        secure_aggregation=SecureAggregation(clip_range=4.0, bits=48) if secure else None,
        **options,
    )


def simulate(secure: bool, engine: str = "sequential", rounds: int = 2, failing=frozenset(), **o):
    return roost.run_simulation(
        ClientFn(frozenset(failing)),
        5,
        strategy=strategy(secure, **o),
        config=roost.ServerConfig(num_rounds=rounds),
        seed=0,
        engine=engine,
    )


def test_a_secure_round_gives_fedavgs_model_within_the_quantization_bound() -> None:
    plain = simulate(secure=False)
    secure = simulate(secure=True)
    for secured, clear in zip(secure.parameters, plain.parameters, strict=True):
        assert secured.dtype == clear.dtype
        np.testing.assert_allclose(secured, clear, atol=1e-6)
    # Four phases a round, the masked-input phase counted as the round's fit.
    for record in secure.rounds:
        assert record.fit_results == 5
        assert record.phases == {
            "secagg_advertise_keys": [5, 0],
            "secagg_share_keys": [5, 0],
            "secagg_unmask": [5, 0],
        }
    assert secure.measurements["secagg_survivors"] == [(1, 5.0), (2, 5.0)]


def test_the_process_engine_carries_each_clients_round_secrets_between_phases() -> None:
    sequential = simulate(secure=True, rounds=1)
    process = simulate(secure=True, engine="process", rounds=1)
    for a, b in zip(process.parameters, sequential.parameters, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-9)


def test_clients_dropping_while_training_leave_the_survivors_mean() -> None:
    secure = simulate(secure=True, rounds=1, failing={1})
    survivors = [p for p in range(5) if p != 1]
    weights = np.array([20 + 3 * p for p in survivors], dtype=np.float64)
    updates = np.array([LinearClient(p).fit(START, {})[0][0] for p in survivors])
    expected = weights @ updates / weights.sum()
    np.testing.assert_allclose(secure.parameters[0], expected, atol=1e-6)
    assert secure.rounds[0].fit_failures == 1
    assert secure.measurements["secagg_survivors"] == [(1, 4.0)]


def test_client_side_clipping_matches_server_side_clipping() -> None:
    plain = simulate(secure=False, rounds=1, update_transforms=[ClipL2(0.05)])
    secure = simulate(secure=True, rounds=1, update_transforms=[ClipL2(0.05)])
    for a, b in zip(secure.parameters, plain.parameters, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_what_needs_each_update_is_refused_with_a_clear_error() -> None:
    with pytest.raises(ConfigurationError, match="needs each update"):
        FedMedian(secure_aggregation=SecureAggregation())
    with pytest.raises(ConfigurationError, match="FedSGD"):
        roost.strategy.FedSGD(secure_aggregation=SecureAggregation())
    with pytest.raises(ConfigurationError, match="weighs clients"):
        Strategy(weight_fn=lambda cid, n, m: 2.0, secure_aggregation=SecureAggregation())
    with pytest.raises(ConfigurationError, match="vectorized engine"):
        simulate(secure=True, engine="vectorized")
    run = simulate
    with pytest.raises(ConfigurationError, match="secure aggregation hides"):
        run(secure=True, rounds=1, update_transforms=[roost.strategy.AdaptiveClipL2()])


def test_secure_rounds_over_grpc_need_no_client_flag() -> None:
    clients = {str(pid): LinearClient(pid) for pid in range(5)}
    deployed = run_deployed(strategy(secure=True), clients, num_rounds=2)
    plain = simulate(secure=False)
    for a, b in zip(deployed.parameters, plain.parameters, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert deployed.rounds[-1].phases["secagg_unmask"] == [5, 0]


class _Hostile:
    """An engine whose client "3" answers every secure-aggregation phase with garbage."""

    def __init__(self, inner, seed: int) -> None:
        self.inner = inner
        self.rng = np.random.default_rng(seed)

    def wait_for_clients(self, count, timeout=None):
        return self.inner.wait_for_clients(count, timeout)

    def run(self, cohort, timeout):
        from roost.core.types import PhaseRes

        for client_id, outcome in self.inner.run(cohort, timeout):
            if client_id == "3" and isinstance(outcome, PhaseRes):
                junk = [self.rng.integers(0, 2**32, size=int(self.rng.integers(1, 50)))]
                values = {key: self.rng.bytes(8) for key in outcome.values}
                outcome = PhaseRes(junk if self.rng.random() < 0.7 else outcome.arrays, values)
            yield client_id, outcome

    def close(self):
        self.inner.close()


@pytest.mark.parametrize("seed", range(6))
def test_garbled_secagg_replies_are_one_clients_failure_never_a_crash(seed) -> None:
    from roost.engines.sequential import SequentialEngine
    from roost.server.loop import ServerConfig, run_rounds

    engine = _Hostile(SequentialEngine(ClientFn(), 5), seed)
    history = run_rounds(strategy(secure=True), engine, ServerConfig(num_rounds=1), seed=0)
    survivors = [p for p in range(5) if p != 3]
    weights = np.array([20 + 3 * p for p in survivors], dtype=np.float64)
    updates = np.array([LinearClient(p).fit(START, {})[0][0] for p in survivors])
    np.testing.assert_allclose(history.parameters[0], weights @ updates / weights.sum(), atol=1e-6)


@pytest.mark.parametrize("noise_multiplier", [0.0, 0.5])
def test_central_dp_noise_is_added_after_unmasking(noise_multiplier) -> None:
    from roost.privacy import DPFedAvg

    def dp(secure: bool) -> roost.History:
        private = DPFedAvg(
            noise_multiplier=noise_multiplier,
            clip_norm=0.05,
            expected_clients=5,
            num_clients=5,
            sampling="fixed",
            seed=3,  # research seed: the same noise with and without secure aggregation
            fraction_evaluate=0.0,
            initial_parameters=START,
            secure_aggregation=SecureAggregation(clip_range=1.0, bits=48) if secure else None,
        )
        return roost.run_simulation(
            ClientFn(), 5, strategy=private, config=roost.ServerConfig(num_rounds=2), seed=0
        )

    clear, secure = dp(False), dp(True)
    for a, b in zip(secure.parameters, clear.parameters, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert secure.measurements["clip_norm"] == clear.measurements["clip_norm"]
    if noise_multiplier:
        assert secure.privacy.epsilon == clear.privacy.epsilon
    adaptive = DPFedAvg(
        noise_multiplier=1.0,
        clip_norm=0.1,
        expected_clients=5,
        num_clients=5,
        clip_quantile=0.5,
        count_noise_stddev=1.0,
        initial_parameters=START,
        secure_aggregation=SecureAggregation(),
    )
    with pytest.raises(ConfigurationError, match="adaptive clipping"):
        roost.run_simulation(
            ClientFn(), 5, strategy=adaptive, config=roost.ServerConfig(num_rounds=1), seed=0
        )


@dataclass(frozen=True)
class _Parts:
    """Not a Strategy: only what secure aggregation needs of one (`SecureParts`)."""

    aggregator: Aggregator = field(default_factory=WeightedMean)
    weight_fn: Weighting = field(default_factory=lambda: FunctionWeighting(weight_by_num_examples))
    update_transforms: UpdateTransform = field(default_factory=chain)


class _Recording:
    """A round context that notes each phase it runs, in order (the real `Round` runs them)."""

    def __init__(self, context: Round) -> None:
        self.context, self.server_round, self.rng = context, context.server_round, context.rng
        self.phases: list[str] = []

    def available(self, count):
        return self.context.available(count)

    def exchange(self, phase, cohort, template):
        self.phases.append(phase)
        return self.context.exchange(phase, cohort, template)


def test_secure_aggregation_is_a_plan_of_phases_over_the_strategys_parts() -> None:
    engine = SequentialEngine(ClientFn(), 5)
    context = _Recording(Round(1, engine, None, np.random.default_rng(0)))
    parts = _Parts()
    secure = SecureAggregation(clip_range=4.0, bits=48)
    secure.check(parts)
    cohort = [(client_id, FitIns(START, {})) for client_id in context.available(5)]
    state = {"transforms": parts.update_transforms.init(START), "optimizer": {}}
    partial = secure.aggregate(parts, context, cohort, START, state)
    context.context.close()
    # The plan's phases, in the protocol's order, each through the same `exchange`.
    assert context.phases == [phase.label for phase in PLAN]
    assert context.phases == ["secagg_advertise_keys", "secagg_share_keys", "fit", "secagg_unmask"]
    assert context.context.record.fit_results == 5  # the masked inputs are the round's fit
    assert partial.failures == 0 and partial.measurements == {"secagg_survivors": 5.0}
    assert sorted(m["partition"] for _, m in partial.fit_metrics) == [0, 1, 2, 3, 4]
    assert partial.state == state
    weights = np.array([20 + 3 * p for p in range(5)], dtype=np.float64)
    updates = np.array([LinearClient(p).fit(START, {})[0][0] for p in range(5)])
    np.testing.assert_allclose(partial.aggregate[0], weights @ updates / weights.sum(), atol=1e-6)
    assert secure.aggregate(parts, context, cohort[:1], START, state) is None  # too few to hide


def test_secure_aggregation_refuses_parts_it_cannot_sum_whatever_holds_them() -> None:
    with pytest.raises(ConfigurationError, match="needs each update"):
        SecureAggregation().check(_Parts(aggregator=TrimmedMean(0.2)))
    with pytest.raises(ConfigurationError, match="weighs clients"):
        SecureAggregation().check(_Parts(weight_fn=FunctionWeighting(lambda c, n, m: 2.0)))


def test_sixty_bit_rounds_with_updates_at_the_clip_range_decode_like_48_bit_ones() -> None:
    # Issue 22, hole 6: each client's weight at max_weight and coordinates at the clip range hit
    # the top level, which float64 rounding pushed one past Q at 60 bits: the sum wrapped.
    def run(bits: int) -> list[np.ndarray]:
        secure = SecureAggregation(clip_range=0.1, bits=bits, max_weight=20.0)
        return roost.run_simulation(
            ClientFn(),
            4,
            strategy=FedAvg(
                min_fit_clients=4,
                min_available_clients=4,
                fraction_evaluate=0.0,
                initial_parameters=START,
                secure_aggregation=secure,
            ),
            config=roost.ServerConfig(num_rounds=1),
            seed=0,
        ).parameters

    for wide, narrow in zip(run(60), run(48), strict=True):
        np.testing.assert_allclose(wide, narrow, atol=1e-9)
