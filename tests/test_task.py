"""The PyTorch task: its per-client training is checked against plain `torch.optim` loops."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from roost import ConfigurationError  # noqa: E402
from roost.apps.digits import (  # noqa: E402
    DigitsClient,
    DigitsData,
    digits_task,
)
from roost.client.client import client_rng  # noqa: E402
from roost.client.torch import TorchClient  # noqa: E402
from roost.client.training import batch_plan  # noqa: E402
from roost.tasks import SGD, Adam, Task  # noqa: E402


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))


def bn_model() -> nn.Module:
    return nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 3))


class Blobs:
    """Picklable per-client data: `size(partition)` examples of 5 features, 3 classes."""

    def __init__(self, sizes: tuple[int, ...] = (37,)) -> None:
        self.sizes = sizes

    def __call__(self, partition_id: int, num_partitions: int):
        rng = np.random.default_rng(100 + partition_id)
        n = self.sizes[partition_id % len(self.sizes)]
        return rng.normal(size=(n, 5)).astype(np.float32), rng.integers(0, 3, n)


def load(model: nn.Module, arrays) -> None:
    names = model.state_dict()
    model.load_state_dict({k: torch.tensor(a) for k, a in zip(names, arrays, strict=True)})


def torch_optim_reference(task: Task, arrays, x, y, server_round: int, partition_id: int):
    """Independent arithmetic: nn.Module + torch.optim + loss.backward(), batch by batch."""
    model = task.model()
    load(model, arrays)
    global_params = [p.detach().clone() for p in model.parameters()]
    opt = task.optimizer
    if isinstance(opt, SGD):
        optimizer = torch.optim.SGD(
            model.parameters(),
            lr=opt.lr,
            momentum=opt.momentum,
            weight_decay=opt.weight_decay,
            nesterov=opt.nesterov,
        )
    else:
        optimizer = torch.optim.Adam(
            model.parameters(),
            lr=opt.lr,
            betas=opt.betas,
            eps=opt.eps,
            weight_decay=opt.weight_decay,
        )
    rng = np.random.default_rng([task.seed, server_round, partition_id])
    for _ in range(task.epochs):
        order = rng.permutation(len(y))
        for start in range(0, len(y), task.batch_size):
            batch = order[start : start + task.batch_size]
            optimizer.zero_grad()
            outputs = model(torch.tensor(x[batch]))
            loss = nn.functional.cross_entropy(outputs, torch.tensor(y[batch]))
            if task.proximal_mu:
                loss = loss + task.proximal_mu / 2 * sum(
                    ((p - g) ** 2).sum()
                    for p, g in zip(model.parameters(), global_params, strict=True)
                )
            loss.backward()
            optimizer.step()
    return [v.detach().numpy() for v in model.state_dict().values()]


@pytest.mark.parametrize(
    "optimizer",
    [
        SGD(lr=0.1),
        SGD(lr=0.05, momentum=0.9, weight_decay=0.01),
        SGD(lr=0.05, momentum=0.9, nesterov=True),
        Adam(lr=0.01),
        Adam(lr=0.01, betas=(0.8, 0.99), weight_decay=0.1),
    ],
    ids=["sgd", "momentum-wd", "nesterov", "adam", "adam-wd"],
)
@pytest.mark.parametrize("proximal_mu", [0.0, 0.5])
def test_per_client_training_matches_torch_optim(optimizer, proximal_mu):
    task = Task(
        model=mlp,
        data=Blobs(),
        optimizer=optimizer,
        epochs=3,
        batch_size=8,
        proximal_mu=proximal_mu,
        seed=4,
    )
    x, y = task.data(0, 1)
    start = task.initial_parameters()
    trained, num_examples, metrics = task.client(0, 1).fit(start, {"server_round": 2})
    expected = torch_optim_reference(task, start, x, y, server_round=2, partition_id=0)
    assert num_examples == 37 and metrics == {}
    for got, want in zip(trained, expected, strict=True):
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, want, atol=1e-6)
    moved = max(np.abs(a - b).max() for a, b in zip(trained, start, strict=True))
    assert moved > 1e-3  # it did train


def test_batch_plan_covers_every_example_once_per_epoch_and_is_seeded():
    plan = batch_plan(23, 2, 5, client_rng(1, 3, 7))
    assert [len(batch) for batch in plan] == [5, 5, 5, 5, 3] * 2
    for epoch in (plan[:5], plan[5:]):
        assert sorted(np.concatenate(epoch).tolist()) == list(range(23))
    again = batch_plan(23, 2, 5, client_rng(1, 3, 7))
    assert all((a == b).all() for a, b in zip(plan, again, strict=True))
    other_round = batch_plan(23, 2, 5, client_rng(1, 4, 7))
    assert any((a != b).any() for a, b in zip(plan, other_round, strict=True))


def test_config_overrides_the_recipe_for_a_round():
    task = Task(
        model=mlp, data=Blobs(), optimizer=SGD(lr=0.1, momentum=0.5), epochs=1, batch_size=4
    )
    recipe = task.recipe({"lr": 0.3, "local_epochs": 2, "batch_size": 16, "proximal_mu": 0.2})
    assert recipe.optimizer == SGD(lr=0.3, momentum=0.5)
    assert (recipe.epochs, recipe.batch_size, recipe.proximal_mu) == (2, 16, 0.2)
    assert task.recipe({}).optimizer == SGD(lr=0.1, momentum=0.5)
    with pytest.raises(ConfigurationError, match="local_epochs"):
        task.recipe({"local_epochs": 0})


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"optimizer": "sgd"}, "roost.SGD"),
        ({"epochs": 0}, "epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"proximal_mu": -1.0}, "proximal_mu"),
        ({"dtype": "float16"}, "dtype"),
        ({"model": 3}, "nn.Module"),
    ],
)
def test_bad_task_settings_are_refused_with_a_clear_error(kwargs, message):
    with pytest.raises(ConfigurationError, match=message):
        Task(**{"model": mlp, "data": Blobs(), **kwargs})


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: SGD(lr=0), "lr"),
        (lambda: Adam(lr=float("inf")), "Adam lr must be a finite number > 0, got inf"),
        (lambda: SGD(weight_decay=float("nan")), "SGD weight_decay must be a finite number"),
        (lambda: SGD(lr=0.1, nesterov=True), "nesterov"),
        (lambda: Adam(betas=(0.9, 1.0)), "betas"),
    ],
)
def test_bad_optimizer_settings_are_refused(make, message):
    with pytest.raises(ConfigurationError, match=message):
        make()


def test_a_task_is_picklable_and_is_a_client_fn():
    task = Task(model=mlp, data=Blobs(), optimizer=Adam(lr=0.01))
    copy = pickle.loads(pickle.dumps(task))
    assert copy.optimizer == task.optimizer
    start = task.initial_parameters()
    for a, b in zip(start, copy.initial_parameters(), strict=True):
        np.testing.assert_array_equal(a, b)  # the seed fixes the initial model


def test_parameters_keep_the_dtype_the_server_sent():
    task = Task(model=mlp, data=Blobs(), dtype="float32")
    start = [a.astype(np.float64) for a in task.initial_parameters()]
    trained, _, _ = task.client(0, 1).fit(start, {})
    assert all(a.dtype == np.float64 for a in trained)


def test_wrong_shapes_from_the_server_are_a_configuration_error():
    task = Task(model=mlp, data=Blobs())
    bad = [np.zeros((2, 2), np.float32), *task.initial_parameters()[1:]]
    with pytest.raises(ConfigurationError, match="do not fit this model"):
        task.client(0, 1).fit(bad, {})


def test_loss_must_be_per_example():
    task = Task(
        model=mlp, data=Blobs(), loss=lambda out, y: nn.functional.cross_entropy(out, y)
    )  # a mean: wrong
    with pytest.raises(ConfigurationError, match="one loss per example"):
        task.client(0, 1).fit(task.initial_parameters(), {})


def test_torch_client_evaluates_loss_and_accuracy_like_a_plain_forward_pass():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(50, 5)).astype(np.float32), rng.integers(0, 3, 50)
    xv, yv = rng.normal(size=(20, 5)).astype(np.float32), rng.integers(0, 3, 20)
    model = mlp()
    client = TorchClient(model, (x, y), eval_data=(xv, yv), optimizer=SGD(lr=0.1))
    parameters = client.get_parameters({})
    loss, num_examples, metrics = client.evaluate(parameters, {})
    with torch.no_grad():
        logits = model(torch.tensor(xv))
    assert num_examples == 20
    assert loss == pytest.approx(
        float(nn.functional.cross_entropy(logits, torch.tensor(yv))), rel=1e-5
    )
    expected_accuracy = float((logits.argmax(1).numpy() == yv).mean())
    assert metrics == {"accuracy": pytest.approx(expected_accuracy)}


def test_fit_metrics_report_the_new_model_on_the_training_data():
    task = Task(model=mlp, data=Blobs(), optimizer=SGD(lr=0.2), fit_metrics=True)
    client = task.client(0, 1)
    trained, _, metrics = client.fit(task.initial_parameters(), {"server_round": 1})
    loss, _, evaluated = client.evaluate(trained, {})  # no eval_data: the training data
    assert metrics == {
        "train_loss": pytest.approx(loss),
        "train_accuracy": pytest.approx(evaluated["accuracy"]),
    }


def test_models_with_batchnorm_train_per_client():
    task = Task(model=bn_model, data=Blobs(), optimizer=SGD(lr=0.1), batch_size=8)
    start = task.initial_parameters()
    # linear (2) + batch norm weight, bias, running mean, running var, batch count + linear (2)
    assert len(start) == 9 and start[6].dtype == np.int64
    trained, _, _ = task.client(0, 1).fit(start, {})
    running_mean, count = trained[4], trained[6]
    assert count == 5  # five batches of 37 examples
    assert np.abs(running_mean).max() > 0


def test_evaluate_fn_scores_the_global_model_on_the_server():
    task = Task(model=mlp, data=Blobs())
    x, y = Blobs((80,))(9, 10)
    evaluate = task.evaluate_fn(x, y)
    parameters = task.initial_parameters()
    loss, metrics = evaluate(0, parameters, {})
    model = mlp()
    load(model, parameters)
    with torch.no_grad():
        logits = model(torch.tensor(x))
    assert loss == pytest.approx(
        float(nn.functional.cross_entropy(logits, torch.tensor(y))), rel=1e-5
    )
    assert metrics["accuracy"] == pytest.approx(float((logits.argmax(1).numpy() == y).mean()))


def test_digits_task_trains_exactly_like_the_numpy_demo_client():
    """Same data, recipe and batch order in float64: the same model to float rounding."""
    from roost.settings import RunSettings

    settings = RunSettings(num_clients=5, local_epochs=2, batch_size=16, learning_rate=0.5)
    task = digits_task(settings)
    start = [np.random.default_rng(1).normal(size=(64, 10)) * 0.01, np.zeros(10)]
    config = {"server_round": 3, "local_epochs": 2, "batch_size": 16, "lr": 0.5}
    numpy_params, numpy_n, numpy_metrics = DigitsClient(2, 5, seed=0).fit(start, config)
    torch_params, torch_n, torch_metrics = task.client(2, 5).fit(start, config)
    assert torch_n == numpy_n
    for a, b in zip(torch_params, numpy_params, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-10)
    assert torch_metrics["train_loss"] == pytest.approx(numpy_metrics["train_loss"], abs=1e-10)
    assert torch_metrics["train_accuracy"] == numpy_metrics["train_accuracy"]
    _, y = DigitsData(0, validation=True)(2, 5)
    assert len(y) == DigitsClient(2, 5).evaluate(start, {})[1]
