"""Attack wrappers, and robust aggregation holding up on the digits demo under attack."""

from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass

import numpy as np
import pytest

import roost
from roost.apps.digits import DigitsClient, make_client_fn, make_strategy
from roost.client.attacks import (
    GaussianNoise,
    LabelFlip,
    MaliciousClient,
    Scale,
    SignFlip,
    choose_malicious,
    with_attackers,
)
from roost.client.client import Context
from roost.errors import ConfigurationError
from roost.settings import RunSettings
from roost.strategy.presets import preset


class FixedStepClient:
    """Honest client whose trained model is always global + step."""

    def __init__(self, step) -> None:
        self.step = step
        self.labels = np.array([0, 1, 2, 3])

    def get_parameters(self, config):
        return [np.zeros(2, np.float32)]

    def fit(self, parameters, config):
        return [(parameters[0] + self.step).astype(parameters[0].dtype)], 4, {"m": 1.0}

    def evaluate(self, parameters, config):
        return 0.5, 4, {}


def fit_with(attack, step=(1.0, -2.0), global_model=(10.0, 10.0), config=None, seed=0):
    client = MaliciousClient(FixedStepClient(np.array(step)), [attack], partition_id=3, seed=seed)
    parameters = [np.array(global_model, np.float32)]
    return client.fit(parameters, config or {"server_round": 2})


def test_sign_flip_sends_minus_k_times_the_update() -> None:
    params, n, metrics = fit_with(SignFlip(scale=10))
    np.testing.assert_allclose(params[0], [10 - 10 * 1, 10 + 10 * 2])
    assert params[0].dtype == np.float32 and n == 4 and metrics == {"m": 1.0}


def test_scale_sends_k_times_the_update() -> None:
    params, _, _ = fit_with(Scale(3.0))
    np.testing.assert_allclose(params[0], [13.0, 4.0])


def test_gaussian_noise_is_seeded_by_seed_round_and_partition() -> None:
    a, _, _ = fit_with(GaussianNoise(std=0.5), step=(0.0, 0.0), global_model=(0.0, 0.0))
    b, _, _ = fit_with(GaussianNoise(std=0.5), step=(0.0, 0.0), global_model=(0.0, 0.0))
    c, _, _ = fit_with(
        GaussianNoise(std=0.5),
        step=(0.0, 0.0),
        global_model=(0.0, 0.0),
        config={"server_round": 3},
    )
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[0], c[0])
    expected = np.random.default_rng([0, 2, 3]).normal(0.0, 0.5, size=2)
    np.testing.assert_allclose(a[0], expected.astype(np.float32), rtol=1e-6)


def test_attacks_compose_in_order() -> None:
    client = MaliciousClient(FixedStepClient(np.array([1.0, 1.0])), [Scale(2.0), SignFlip()], 0)
    params, _, _ = client.fit([np.zeros(2, np.float32)], {})
    np.testing.assert_allclose(params[0], [-2.0, -2.0])


def test_label_flip_by_hand_and_with_a_mapping() -> None:
    y = np.array([0, 1, 2, 9])
    np.testing.assert_array_equal(LabelFlip(10).flip(y), [9, 8, 7, 0])
    np.testing.assert_array_equal(
        LabelFlip(mapping={1: 7, 7: 1}).flip(np.array([1, 7, 3])), [7, 1, 3]
    )
    with pytest.raises(ConfigurationError, match="num_classes"):
        LabelFlip()


@dataclass(frozen=True)
class FrozenData:
    x: np.ndarray
    y: np.ndarray


class KerasStyleClient(FixedStepClient):
    def __init__(self) -> None:
        super().__init__(np.zeros(2))
        self.y_train = np.array([0, 1, 1])
        self.train = FrozenData(np.zeros((3, 1)), np.array([2, 2, 0]))


def test_label_flip_rewrites_the_clients_own_data() -> None:
    client = KerasStyleClient()
    LabelFlip(3, labels="y_train").poison_client(client)
    np.testing.assert_array_equal(client.y_train, [2, 1, 1])
    LabelFlip(3).poison_client(client)  # default path train.y, through a frozen dataclass
    np.testing.assert_array_equal(client.train.y, [0, 0, 2])
    with pytest.raises(ConfigurationError, match=r"no training labels at client.labels_here"):
        LabelFlip(3, labels="labels_here").poison_client(client)


def test_label_flip_on_the_demo_client() -> None:
    fn = with_attackers(make_client_fn(0), LabelFlip(10), malicious=[1])
    honest = fn(Context(partition_id=1, num_partitions=5))
    assert isinstance(honest, MaliciousClient)
    original = DigitsClient(1, 5, 0)
    np.testing.assert_array_equal(honest.client.train.y, 9 - original.train.y)
    np.testing.assert_array_equal(honest.client.validation.y, original.validation.y)


def step_client_fn(context: Context) -> FixedStepClient:
    return FixedStepClient(np.ones(2))


def test_only_the_chosen_clients_are_malicious_and_the_wrapper_pickles() -> None:
    fn = with_attackers(make_client_fn(0), SignFlip(10), malicious=[0, "3"])
    kinds = [type(fn(Context(partition_id=k, num_partitions=5))).__name__ for k in range(5)]
    assert kinds == [
        "MaliciousClient",
        "DigitsClient",
        "DigitsClient",
        "MaliciousClient",
        "DigitsClient",
    ]
    picklable = with_attackers(step_client_fn, SignFlip(10), malicious=[0, "3"])
    restored = pickle.loads(pickle.dumps(picklable))
    assert restored.malicious == picklable.malicious
    assert type(restored(Context(partition_id=3, num_partitions=5))) is MaliciousClient
    with pytest.raises(ConfigurationError, match="not an attack"):
        with_attackers(make_client_fn(0), "signflip", malicious=[0])


def test_choose_malicious_is_seeded() -> None:
    assert choose_malicious(10, 3, seed=1) == choose_malicious(10, 3, seed=1)
    assert len(set(choose_malicious(10, 10, seed=0))) == 10
    with pytest.raises(ConfigurationError):
        choose_malicious(3, 4)


# -- robustness on the digits demo ---------------------------------------------------------------

ROUNDS = 10


def final_accuracy(name: str, attacked: bool, **options) -> float:
    settings = RunSettings(num_clients=10, num_rounds=ROUNDS, fraction_evaluate=0.0)
    client_fn = make_client_fn(0)
    if attacked:  # 2 of 10 clients send −10 × their honest update
        client_fn = with_attackers(client_fn, SignFlip(scale=10), malicious=[3, 7])
    history = roost.run_simulation(
        client_fn,
        10,
        strategy=preset(name, like=make_strategy(settings), **options),
        config=roost.ServerConfig(num_rounds=ROUNDS),
        seed=0,
    )
    return history.metrics_centralized["accuracy"][-1][1]


def test_fedavg_collapses_while_robust_aggregators_hold(caplog) -> None:
    caplog.set_level(logging.WARNING, logger="roost")
    clean = final_accuracy("fedavg", attacked=False)
    assert clean > 0.85
    assert final_accuracy("fedavg", attacked=True) < 0.3  # ten classes: chance is 0.1
    for name, options in [
        ("fedmedian", {}),
        ("krum", {"num_malicious_clients": 2}),
        ("fedtrimmedavg", {"beta": 0.2}),
        ("multikrum", {"num_malicious_clients": 2}),
        ("bulyan", {"num_malicious_clients": 1}),
    ]:
        accuracy = final_accuracy(name, attacked=True, **options)
        assert accuracy > clean - 0.05, (name, accuracy, clean)
