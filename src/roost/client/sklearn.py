"""scikit-learn adapter: linear classifiers and MLPs as federated clients.

The model's coefficients are the parameters: `[coef_, intercept_]` for `LogisticRegression`,
`SGDClassifier` and other linear classifiers, `[W0, b0, W1, b1, …]` for `MLPClassifier`. Each round
the client loads the global coefficients into its model and trains on from them (warm start) for
`local_epochs` passes, then returns the new coefficients.

    from sklearn.linear_model import LogisticRegression
    from roost.client.sklearn import SklearnClient, initial_parameters

    client = SklearnClient(LogisticRegression(), x_train, y_train, x_val, y_val, classes=range(10))
    start = initial_parameters(LogisticRegression(), 64, range(10))
    strategy = roost.FedAvg(initial_parameters=start)

Every client must be given the same `classes` (all labels of the federation), so that a client whose
data lacks some labels still returns coefficients of the global shape; such labels enter its local
training as zero-weight samples and so only through the shape. scikit-learn is imported lazily.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from roost.client.client import Client
from roost.core.config_keys import LOCAL_EPOCHS
from roost.core.types import Config, Metrics, Parameters
from roost.errors import ConfigurationError


def _is_mlp(model: Any) -> bool:
    return hasattr(model, "hidden_layer_sizes")


def _check_supported(model: Any) -> None:
    if _is_mlp(model):
        return
    if not hasattr(model, "predict_proba") and not hasattr(model, "decision_function"):
        raise ConfigurationError(
            f"{type(model).__name__} is not supported: use a linear classifier with coef_ and "
            "intercept_ (LogisticRegression, SGDClassifier, …) or MLPClassifier"
        )


def _quiet_fit(model: Any, x: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None) -> None:
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        # A few local epochs per round never "converge"; that is the point of federated training.
        warnings.simplefilter("ignore", ConvergenceWarning)
        if sample_weight is None:
            model.fit(x, y)
        else:
            model.fit(x, y, sample_weight=sample_weight)


def _build_structure(model: Any, num_features: int, classes: np.ndarray) -> None:
    """Give an unfitted model its fitted attributes (shapes, classes_) with a one-step dummy fit."""
    saved = model.get_params()
    model.set_params(max_iter=1, warm_start=False)
    if "early_stopping" in saved:
        model.set_params(early_stopping=False)
    try:
        _quiet_fit(model, np.zeros((len(classes), num_features)), classes, None)
    finally:
        restored = ("max_iter", "warm_start", "early_stopping")
        model.set_params(**{key: saved[key] for key in restored if key in saved})


def get_model_parameters(model: Any) -> Parameters:
    """The fitted model's coefficients as a list of arrays (copies)."""
    if _is_mlp(model):
        return [
            np.array(array)
            for pair in zip(model.coefs_, model.intercepts_, strict=True)
            for array in pair
        ]
    return [np.array(model.coef_), np.array(np.atleast_1d(model.intercept_))]


def set_model_parameters(
    model: Any, parameters: Parameters, num_features: int, classes: Sequence[Any] | np.ndarray
) -> None:
    """Load `parameters` into `model`, first giving an unfitted model its structure."""
    classes = np.asarray(classes)
    fitted_classes = getattr(model, "classes_", None)
    if fitted_classes is None or not np.array_equal(fitted_classes, classes):
        _build_structure(model, num_features, classes)
    expected = get_model_parameters(model)
    if len(parameters) != len(expected) or any(
        p.shape != e.shape for p, e in zip(parameters, expected, strict=True)
    ):
        raise ConfigurationError(
            f"parameters with shapes {[p.shape for p in parameters]} do not fit "
            f"{type(model).__name__} with {num_features} features and {len(classes)} classes "
            f"(expected {[e.shape for e in expected]})"
        )
    if _is_mlp(model):
        model.coefs_ = [np.array(p, dtype=np.float64) for p in parameters[0::2]]
        model.intercepts_ = [np.array(p, dtype=np.float64) for p in parameters[1::2]]
    else:
        model.coef_ = np.array(parameters[0], dtype=np.float64)
        model.intercept_ = np.array(parameters[1], dtype=np.float64)


def initial_parameters(
    model: Any, num_features: int, classes: Sequence[Any] | np.ndarray, seed: int = 0
) -> Parameters:
    """A starting global model shaped for `model`: zeros for linear models; for an MLP, seeded
    Glorot-uniform weights (scikit-learn's own scheme) and zero biases, since zeros would leave
    every hidden unit identical."""
    from sklearn.base import clone

    _check_supported(model)
    probe = clone(model)
    _build_structure(probe, num_features, np.asarray(classes))
    shapes = [p.shape for p in get_model_parameters(probe)]
    if not _is_mlp(model):
        return [np.zeros(shape) for shape in shapes]
    rng = np.random.default_rng(seed)
    factor = 2.0 if getattr(model, "activation", "relu") == "logistic" else 6.0
    parameters: Parameters = []
    for weight_shape, bias_shape in zip(shapes[0::2], shapes[1::2], strict=True):
        bound = np.sqrt(factor / (weight_shape[0] + weight_shape[1]))
        parameters.append(rng.uniform(-bound, bound, size=weight_shape))
        parameters.append(np.zeros(bias_shape))
    return parameters


class SklearnClient(Client):
    """A federated client around a scikit-learn classifier and this client's data.

    Args:
        model: an unfitted (or fitted) `LogisticRegression`, `SGDClassifier`, another linear
            classifier with `coef_`/`intercept_`, or `MLPClassifier`.
        x_train, y_train: local training data.
        x_val, y_val: local evaluation data (defaults to the training data).
        classes: every label of the federation, the same on every client.
        local_epochs: passes over the local data per round (`max_iter` of the warm-started fit);
            the round config's `"local_epochs"` overrides it.

    `fit` reports `train_loss` and `train_accuracy`; `evaluate` returns the log-loss and reports
    `accuracy` (a model without `predict_proba`, such as a hinge-loss `SGDClassifier`, reports its
    error rate as the loss). FedProx's `proximal_mu` is not applied by this adapter.
    """

    def __init__(
        self,
        model: Any,
        x_train: np.ndarray,
        y_train: np.ndarray,
        x_val: np.ndarray | None = None,
        y_val: np.ndarray | None = None,
        *,
        classes: Sequence[Any] | np.ndarray,
        local_epochs: int = 1,
    ) -> None:
        _check_supported(model)
        self.model = model
        self.x_train, self.y_train = np.asarray(x_train), np.asarray(y_train)
        self.x_val = self.x_train if x_val is None else np.asarray(x_val)
        self.y_val = self.y_train if y_val is None else np.asarray(y_val)
        self.classes = np.asarray(classes)
        self.local_epochs = local_epochs
        unknown = np.setdiff1d(np.unique(self.y_train), self.classes)
        if len(unknown):
            raise ConfigurationError(
                f"training labels {unknown.tolist()} are not in classes; pass every label of "
                "the federation as classes"
            )

    @property
    def num_features(self) -> int:
        return int(self.x_train.shape[1])

    def get_parameters(self, config: Config) -> Parameters:
        if getattr(self.model, "classes_", None) is None:
            return initial_parameters(self.model, self.num_features, self.classes)
        return get_model_parameters(self.model)

    def set_parameters(self, parameters: Parameters) -> None:
        set_model_parameters(self.model, parameters, self.num_features, self.classes)

    def fit(self, parameters: Parameters, config: Config) -> tuple[Parameters, int, Metrics]:
        self.set_parameters(parameters)
        epochs = int(config.get(LOCAL_EPOCHS, self.local_epochs))
        # Labels this client lacks join as zero-weight samples: the fit then keeps every class's
        # row in coef_ (the global shape) without any of them pulling on the update.
        missing = np.setdiff1d(self.classes, np.unique(self.y_train))
        x, y, weights = self.x_train, self.y_train, None
        if len(missing):
            x = np.concatenate([x, np.zeros((len(missing), x.shape[1]), dtype=x.dtype)])
            y = np.concatenate([y, missing.astype(y.dtype)])
            weights = np.concatenate([np.ones(len(self.y_train)), np.zeros(len(missing))])
        self.model.set_params(warm_start=True, max_iter=epochs)
        if hasattr(self.model, "coef_") and not _is_mlp(self.model) and _takes_init(self.model):
            # SGD-type models take the starting point as arguments rather than via warm_start.
            self._fit_with_init(x, y, weights)
        else:
            _quiet_fit(self.model, x, y, weights)
        updated = [
            p.astype(reference.dtype, copy=False)
            for p, reference in zip(get_model_parameters(self.model), parameters, strict=True)
        ]
        loss, accuracy = self._loss_and_accuracy(self.x_train, self.y_train)
        return updated, len(self.y_train), {"train_loss": loss, "train_accuracy": accuracy}

    def evaluate(self, parameters: Parameters, config: Config) -> tuple[float, int, Metrics]:
        self.set_parameters(parameters)
        loss, accuracy = self._loss_and_accuracy(self.x_val, self.y_val)
        return loss, len(self.y_val), {"accuracy": accuracy}

    def _fit_with_init(self, x: np.ndarray, y: np.ndarray, weights: np.ndarray | None) -> None:
        from sklearn.exceptions import ConvergenceWarning

        coef, intercept = self.model.coef_.copy(), np.atleast_1d(self.model.intercept_).copy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            self.model.fit(x, y, coef_init=coef, intercept_init=intercept, sample_weight=weights)

    def _loss_and_accuracy(self, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        if len(y) == 0:
            return 0.0, 0.0
        accuracy = float((self.model.predict(x) == y).mean())
        if hasattr(self.model, "predict_proba"):
            try:
                probabilities = self.model.predict_proba(x)
            except AttributeError:  # e.g. SGDClassifier with hinge loss has no probabilities
                probabilities = None
            if probabilities is not None:
                return _log_loss(y, probabilities, self.model.classes_), accuracy
        return 1.0 - accuracy, accuracy


def _takes_init(model: Any) -> bool:
    import inspect

    return "coef_init" in inspect.signature(model.fit).parameters


def _log_loss(y: np.ndarray, probabilities: np.ndarray, classes: np.ndarray) -> float:
    columns = np.searchsorted(classes, y)
    picked = np.clip(probabilities[np.arange(len(y)), columns], 1e-15, 1.0)
    return float(-np.log(picked).mean())
