"""Local DP: a wrapped client sends received + clip(update) + Gaussian noise, and nothing else."""

from __future__ import annotations

import logging
import pickle

import numpy as np
import pytest

import roost
from roost.apps.digits import DigitsClient, make_client_fn
from roost.errors import ConfigurationError
from roost.privacy import LocalDP, LocalDPClientFn, local_epsilon

RECEIVED = [np.full((300, 200), 0.5, np.float32), np.arange(100, dtype=np.float64)]


class FixedStepClient:
    """Adds a fixed step to every parameter and reports a metric."""

    def __init__(self, step: float) -> None:
        self.step = step

    def get_parameters(self, config):
        return [a.copy() for a in RECEIVED]

    def fit(self, parameters, config):
        return [p + np.asarray(self.step, p.dtype) for p in parameters], 42, {"train_loss": 0.25}

    def evaluate(self, parameters, config):
        return 1.5, 7, {"accuracy": 0.5}


def difference(sent, received) -> list[np.ndarray]:
    pairs = zip(sent, received, strict=True)
    return [np.asarray(s, np.float64) - np.asarray(r, np.float64) for s, r in pairs]


def norm(arrays) -> float:
    return float(np.sqrt(sum((a**2).sum() for a in arrays)))


def test_without_noise_the_sent_difference_is_the_update_clipped_to_c() -> None:
    sent, num_examples, metrics = LocalDP(FixedStepClient(0.01), 2.0, 0.0).fit(RECEIVED, {})
    sent_update = difference(sent, RECEIVED)
    true_norm = 0.01 * np.sqrt(sum(a.size for a in RECEIVED))  # about 2.45: gets clipped
    assert norm(sent_update) == pytest.approx(2.0, rel=1e-5)
    for array in sent_update:  # the direction is kept: every coordinate moved by the same step
        np.testing.assert_allclose(array, 0.01 * 2.0 / true_norm, rtol=1e-4)
    assert [s.dtype for s in sent] == [r.dtype for r in RECEIVED]
    # Neither the metrics nor the dataset's size are protected: not sent by default.
    assert num_examples == 1 and metrics == {}
    small, n, kept = LocalDP(FixedStepClient(1e-4), 2.0, 0.0, send_metrics=True).fit(RECEIVED, {})
    np.testing.assert_allclose(difference(small, RECEIVED)[1], 1e-4)
    assert n == 42 and kept == {"train_loss": 0.25}


def test_the_noise_a_wrapped_client_adds_has_std_sigma_times_c() -> None:
    sigma, clip = 0.7, 0.05
    sent, _, _ = LocalDP(FixedStepClient(0.0), clip, sigma).fit(RECEIVED, {})
    noise = np.concatenate([a.ravel() for a in difference(sent, RECEIVED)])
    # float32 rounding of 0.5 + noise adds at most 3e-8 per coordinate, far below the tolerance.
    assert abs(noise.mean()) < 6 * sigma * clip / np.sqrt(noise.size)
    assert abs(noise.std() / (sigma * clip) - 1.0) < 0.01  # about 5 standard errors


def test_gradients_are_clipped_and_noised_as_the_update_itself() -> None:
    class GradientClient(FixedStepClient):
        def fit(self, parameters, config):
            return [np.full(p.shape, 3.0, p.dtype) for p in parameters], 5, {}

    sent, _, _ = LocalDP(GradientClient(0.0), 1.0, 0.0).fit(RECEIVED, {"return_gradients": True})
    assert norm([np.asarray(s, np.float64) for s in sent]) == pytest.approx(1.0, rel=1e-5)


def test_integer_arrays_go_back_as_received() -> None:
    received = [np.zeros(4), np.array([5, 6], np.int64)]

    class Counting(FixedStepClient):
        def fit(self, parameters, config):
            return [parameters[0] + 1.0, parameters[1] + 1], 1, {}

    sent, _, _ = LocalDP(Counting(0.0), 1.0, 0.5).fit(received, {})
    assert sent[1].dtype == np.int64
    np.testing.assert_array_equal(sent[1], [5, 6])


def test_evaluate_is_refused_unless_asked_for_and_get_parameters_passes_through() -> None:
    wrapped = LocalDP(FixedStepClient(0.1), 1.0, 1.0)
    with pytest.raises(ConfigurationError, match="sends no evaluation results"):
        wrapped.evaluate(RECEIVED, {})
    unprotected = LocalDP(FixedStepClient(0.1), 1.0, 1.0, send_metrics=True)
    assert unprotected.evaluate(RECEIVED, {}) == (1.5, 7, {"accuracy": 0.5})
    np.testing.assert_array_equal(wrapped.get_parameters({})[1], RECEIVED[1])


def test_a_research_seed_repeats_by_round_and_client_and_warns(caplog) -> None:
    def send(partition_id, server_round):
        wrapped = LocalDP(FixedStepClient(0.0), 1.0, 1.0, partition_id=partition_id, seed=9)
        return wrapped.fit(RECEIVED, {"server_round": server_round})[0][1]

    with caplog.at_level(logging.WARNING, logger="roost"):
        first = send(0, 1)
    assert "NOT private" in caplog.text
    np.testing.assert_array_equal(first, send(0, 1))
    assert not np.array_equal(first, send(0, 2))
    assert not np.array_equal(first, send(1, 1))
    with pytest.raises(ConfigurationError, match="needs config\\['server_round'\\]"):
        LocalDP(FixedStepClient(0.0), 1.0, 1.0, seed=9).fit(RECEIVED, {})
    unseeded = LocalDP(FixedStepClient(0.0), 1.0, 1.0)
    assert not np.array_equal(unseeded.fit(RECEIVED, {})[0][1], unseeded.fit(RECEIVED, {})[0][1])


def test_the_per_round_epsilon_is_the_gaussian_mechanisms() -> None:
    wrapped = LocalDP(FixedStepClient(0.0), 1.0, 3.0)
    assert wrapped.epsilon_per_round(1e-5) == local_epsilon(3.0, 1e-5)
    assert wrapped.epsilon_per_round(1e-5, relation="add_remove") < wrapped.epsilon_per_round(1e-5)


@pytest.mark.parametrize(("clip", "sigma"), [(0.0, 1.0), (1.0, -0.5)])
def test_bad_settings_are_refused(clip, sigma) -> None:
    with pytest.raises(ConfigurationError):
        LocalDP(FixedStepClient(0.0), clip, sigma)


def test_the_demo_client_trains_under_local_dp() -> None:
    clip = 0.5
    received = DigitsClient(0, 5).get_parameters({})
    plain, _, _ = DigitsClient(0, 5).fit(received, {"server_round": 1})
    private, _, _ = LocalDP(DigitsClient(0, 5), clip, 0.0).fit(received, {"server_round": 1})
    assert norm(difference(plain, received)) > clip  # the demo's update really is clipped
    assert norm(difference(private, received)) == pytest.approx(clip, rel=1e-6)

    client_fn = LocalDPClientFn(make_client_fn(0), clip_norm=5.0, noise_multiplier=0.01)
    assert pickle.loads(pickle.dumps(client_fn)).clip_norm == 5.0  # the process engine can send it
    from roost.settings import RunSettings

    settings = RunSettings(num_clients=5, num_rounds=3)
    strategy = roost.apps.digits.make_strategy(settings)
    history = roost.run_simulation(
        client_fn, 5, strategy=strategy, config=roost.ServerConfig(num_rounds=3), seed=0
    )
    accuracies = [value for _, value in history.metrics_centralized["accuracy"]]
    assert accuracies[-1] > accuracies[0] + 0.2, accuracies


def test_the_servers_local_dp_accountant_records_each_clients_epsilon() -> None:
    from roost.errors import RunFinished
    from roost.privacy import LocalDPAccountant

    accountant = LocalDPAccountant(2.0, delta=1e-5)
    state = accountant.init([np.zeros(2)])
    update = [np.ones(2)]
    for server_round in (1, 2):
        state = accountant.start_round(state)
        assert accountant.apply(update, state) == (update, state)  # updates pass untouched
        _, state, measured = accountant.finish(update, state)
        expected = local_epsilon(2.0, 1e-5, rounds=server_round)
        assert measured["local_epsilon"] == pytest.approx(expected, rel=1e-3)
        assert measured["local_epsilon"] >= expected * (1 - 1e-9)  # never under-stated
        assert measured["delta"] == 1e-5
    limited = LocalDPAccountant(2.0, delta=1e-5, target_epsilon=local_epsilon(2.0, 1e-5) * 1.5)
    state = limited.start_round(limited.init(update))
    with pytest.raises(RunFinished, match="round 2 would raise a client's local ε"):
        limited.start_round(state)
    silent = LocalDPAccountant(0.0, delta=1e-5)
    assert silent.finish(update, silent.start_round(silent.init(update)))[2] == {}
    with pytest.raises(ConfigurationError, match="delta must be in"):
        LocalDPAccountant(1.0, delta=2.0)


def test_local_noise_multiplier_for_is_the_least_sigma_within_the_target() -> None:
    from roost.privacy import local_noise_multiplier_for

    sigma = local_noise_multiplier_for(8.0, 1e-5, rounds=5)
    assert local_epsilon(sigma, 1e-5, rounds=5) <= 8.0 + 1e-6
    assert local_epsilon(sigma * 0.98, 1e-5, rounds=5) > 8.0
    assert local_noise_multiplier_for(8.0, 1e-5, rounds=0) == 0.0
    with pytest.raises(ConfigurationError, match="target_epsilon must be a finite number"):
        local_noise_multiplier_for(0.0, 1e-5)
