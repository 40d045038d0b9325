"""scikit-learn adapter: coefficients as parameters, warm start, federated accuracy on digits."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.neural_network import MLPClassifier

import roost
from roost.client.sklearn import (
    SklearnClient,
    get_model_parameters,
    initial_parameters,
    set_model_parameters,
)
from roost.data import dirichlet_partition, iid_partition
from roost.data.bundled_digits import load_digits_split
from roost.errors import ConfigurationError
from roost.metrics import weighted_average

CLASSES = np.arange(10)


def _federate(make_model, *, rounds: int, partitions: list[np.ndarray], epochs: int = 1):
    train, test = load_digits_split(seed=0)

    def client_fn(context: roost.Context) -> SklearnClient:
        part = partitions[context.partition_id]
        return SklearnClient(
            make_model(), train.x[part], train.y[part], classes=CLASSES, local_epochs=epochs
        )

    def evaluate(server_round, parameters, config):
        model = make_model()
        set_model_parameters(model, parameters, 64, CLASSES)
        return 0.0, {"accuracy": float((model.predict(test.x) == test.y).mean())}

    strategy = roost.FedAvg(
        initial_parameters=initial_parameters(make_model(), 64, CLASSES, seed=0),
        evaluate_fn=evaluate,
        fraction_evaluate=0.0,
        min_evaluate_clients=0,
        fit_metrics_aggregation_fn=weighted_average,
    )
    history = roost.run_simulation(
        client_fn, len(partitions), strategy=strategy, config=roost.ServerConfig(num_rounds=rounds)
    )
    return history, history.metrics_centralized["accuracy"]


def _iid(num_clients: int) -> list[np.ndarray]:
    train, _ = load_digits_split(seed=0)
    return iid_partition(len(train.y), num_clients, 0)


def test_logistic_regression_federated_on_digits_reaches_85_percent() -> None:
    _, accuracy = _federate(
        lambda: LogisticRegression(max_iter=1), rounds=5, partitions=_iid(5), epochs=5
    )
    assert accuracy[0] == (0, pytest.approx(0.1, abs=0.02))  # zeros predict one class: ~10 %
    assert accuracy[-1][1] >= 0.85


def test_sgd_classifier_on_label_skewed_clients_reaches_85_percent() -> None:
    train, _ = load_digits_split(seed=0)
    # Dirichlet(0.5): most clients lack some digits; zero-weight padding keeps shapes global.
    parts = dirichlet_partition(train.y, 5, 0.5, min_size=20, seed=0)
    assert any(len(np.unique(train.y[p])) < 10 for p in parts)
    _, accuracy = _federate(
        lambda: SGDClassifier(loss="log_loss", alpha=1e-4, random_state=0),
        rounds=8,
        partitions=parts,
        epochs=3,
    )
    assert accuracy[-1][1] >= 0.85


def test_mlp_federated_on_digits_reaches_85_percent() -> None:
    _, accuracy = _federate(
        lambda: MLPClassifier(hidden_layer_sizes=(32,), random_state=0, learning_rate_init=0.01),
        rounds=5,
        partitions=_iid(4),
        epochs=5,
    )
    assert accuracy[-1][1] >= 0.85
    assert accuracy[-1][1] > accuracy[0][1] + 0.5


def test_fit_starts_from_the_global_coefficients() -> None:
    """One client, one round: the result equals a plain warm-started fit from those coefficients."""
    train, _ = load_digits_split(seed=0)
    x, y = train.x[:300], train.y[:300]
    rng = np.random.default_rng(1)
    start = [rng.normal(0, 0.1, (10, 64)), rng.normal(0, 0.1, 10)]
    client = SklearnClient(LogisticRegression(max_iter=1), x, y, classes=CLASSES, local_epochs=3)
    updated, num_examples, metrics = client.fit([a.copy() for a in start], {})
    reference = LogisticRegression(max_iter=3, warm_start=True)
    reference.coef_, reference.intercept_ = start[0].copy(), start[1].copy()
    with pytest.warns(Warning):  # ConvergenceWarning: 3 iterations
        reference.fit(x, y)
    np.testing.assert_allclose(updated[0], reference.coef_, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(updated[1], reference.intercept_, rtol=1e-6, atol=1e-9)
    assert num_examples == 300
    # The reported accuracy is the share of correct predictions, counted here independently.
    predicted = np.argmax(x @ updated[0].T + updated[1], axis=1)
    assert metrics["train_accuracy"] == pytest.approx((predicted == y).mean())


def test_evaluate_returns_log_loss_computed_by_hand() -> None:
    train, _ = load_digits_split(seed=0)
    x, y = train.x[:200], train.y[:200]
    rng = np.random.default_rng(2)
    parameters = [rng.normal(0, 0.3, (10, 64)), rng.normal(0, 0.3, 10)]
    loss, n, metrics = SklearnClient(LogisticRegression(), x, y, classes=CLASSES).evaluate(
        parameters, {}
    )
    logits = x @ parameters[0].T + parameters[1]
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    assert n == 200
    assert loss == pytest.approx(-log_p[np.arange(200), y].mean(), rel=1e-9)
    assert metrics["accuracy"] == pytest.approx((logits.argmax(axis=1) == y).mean())


def test_parameter_layout_and_shape_errors() -> None:
    mlp = initial_parameters(MLPClassifier(hidden_layer_sizes=(16, 8)), 64, CLASSES, seed=3)
    assert [p.shape for p in mlp] == [(64, 16), (16,), (16, 8), (8,), (8, 10), (10,)]
    bound = np.sqrt(6 / (64 + 16))
    assert np.abs(mlp[0]).max() <= bound and np.abs(mlp[0]).max() > 0.8 * bound
    np.testing.assert_array_equal(
        mlp[0], initial_parameters(MLPClassifier((16, 8)), 64, CLASSES, seed=3)[0]
    )
    linear = initial_parameters(LogisticRegression(), 64, CLASSES)
    assert [p.shape for p in linear] == [(10, 64), (10,)] and not any(p.any() for p in linear)
    model = LogisticRegression()
    set_model_parameters(model, linear, 64, CLASSES)
    assert [p.shape for p in get_model_parameters(model)] == [(10, 64), (10,)]
    with pytest.raises(ConfigurationError, match="do not fit"):
        set_model_parameters(LogisticRegression(), [np.zeros((3, 64)), np.zeros(3)], 64, CLASSES)
    with pytest.raises(ConfigurationError, match="not in classes"):
        SklearnClient(LogisticRegression(), np.zeros((2, 4)), np.array([0, 7]), classes=[0, 1])
