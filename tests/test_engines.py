"""Every engine gives the sequential engine's model; the process pool outlives hung clients."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest
from process_probes import LoadsNowhere, pid_recording_fedavg, probe_client_fn

import roost
from roost import ConfigurationError
from roost.apps.digits import make_client_fn
from roost.engines import ENGINES, make_engine
from roost.metrics import weighted_average

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from roost.engines.vectorized import VectorizedEngine  # noqa: E402
from roost.tasks import SGD, Adam, Task  # noqa: E402

# Unequal client sizes, including a client with a single example and one with none.
SIZES = (3, 17, 9, 1, 26, 12, 0, 8)


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))


class Blobs:
    """Picklable per-client data of unequal sizes."""

    def __call__(self, partition_id: int, num_partitions: int):
        rng = np.random.default_rng(100 + partition_id)
        n = SIZES[partition_id % len(SIZES)]
        return rng.normal(size=(n, 5)).astype(np.float32), rng.integers(0, 3, n)


def simulate(
    task: Task,
    engine: str,
    *,
    fraction_fit: float = 1.0,
    rounds: int = 2,
    num_clients: int = 8,
    **options,
) -> roost.History:
    strategy = roost.FedAvg(
        fraction_fit=fraction_fit,
        fraction_evaluate=0.5,
        initial_parameters=task.initial_parameters(),
        on_fit_config_fn=task.fit_config,
        evaluate_metrics_aggregation_fn=weighted_average,
    )
    return roost.run_simulation(
        task,
        num_clients,
        strategy=strategy,
        config=roost.ServerConfig(num_rounds=rounds),
        seed=3,
        engine=engine,
        engine_options=options,
    )


def assert_same_model(a: roost.History, b: roost.History, atol: float = 1e-5) -> None:
    assert a.parameters is not None and b.parameters is not None
    for x, y in zip(a.parameters, b.parameters, strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_allclose(x, y, atol=atol, rtol=0)


CASES = {
    "sgd": dict(optimizer=SGD(lr=0.2)),
    "momentum": dict(optimizer=SGD(lr=0.05, momentum=0.9, weight_decay=0.01)),
    "adam": dict(optimizer=Adam(lr=0.02)),
    "fedprox": dict(optimizer=SGD(lr=0.1), proximal_mu=0.3),
    # Only the first two batches of each epoch: the engine gathers just the examples used.
    "steps_per_epoch": dict(optimizer=Adam(lr=0.02), steps_per_epoch=2),
    "keras_adam": dict(optimizer=Adam(lr=0.02, eps=1e-7, eps_before_bias_correction=True)),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("fraction_fit", [1.0, 0.5], ids=["full", "partial"])
def test_vectorized_equals_sequential(case, fraction_fit):
    task = Task(model=mlp, data=Blobs(), epochs=2, batch_size=4, seed=1, **CASES[case])
    sequential = simulate(task, "sequential", fraction_fit=fraction_fit)
    vectorized = simulate(task, "vectorized", fraction_fit=fraction_fit)
    assert_same_model(sequential, vectorized)
    moved = max(
        np.abs(p - q).max()
        for p, q in zip(sequential.parameters, task.initial_parameters(), strict=True)
    )
    assert moved > 1e-2
    sampled = [r.fit_results for r in vectorized.rounds]
    assert sampled == [r.fit_results for r in sequential.rounds] == [int(8 * fraction_fit)] * 2
    for (r1, loss1), (r2, loss2) in zip(
        sequential.losses_distributed, vectorized.losses_distributed, strict=True
    ):
        assert r1 == r2 and loss1 == pytest.approx(loss2, rel=1e-5)
    accuracy = [value for _, value in sequential.metrics_distributed["accuracy"]]
    got = [value for _, value in vectorized.metrics_distributed["accuracy"]]
    assert got == pytest.approx(accuracy)


def test_chunks_give_the_same_model_as_one_batch():
    task = Task(model=mlp, data=Blobs(), optimizer=Adam(lr=0.02), epochs=2, batch_size=4)
    whole = simulate(task, "vectorized")
    chunked = simulate(task, "vectorized", chunk_size=3)
    tiny_budget = simulate(task, "vectorized", memory_budget=1)  # one client per chunk
    sequential = simulate(task, "sequential")
    assert_same_model(whole, chunked)
    assert_same_model(whole, tiny_budget)
    assert_same_model(whole, sequential)


def test_the_memory_probe_runs_once_not_every_round(monkeypatch):
    """Sizing chunks takes a forward pass; later rounds with the same batch shape reuse it."""
    from roost.engines import vectorized

    probes = []
    measure = vectorized._activation_bytes
    monkeypatch.setattr(
        vectorized, "_activation_bytes", lambda *args: probes.append(1) or measure(*args)
    )
    task = Task(model=mlp, data=Blobs(), optimizer=Adam(lr=0.02), batch_size=4)
    simulate(task, "vectorized", rounds=3)
    assert len(probes) == 1


def test_the_vectorized_engine_is_deterministic():
    task = Task(model=mlp, data=Blobs(), optimizer=SGD(lr=0.1, momentum=0.9), batch_size=4)
    first, second = simulate(task, "vectorized"), simulate(task, "vectorized")
    for a, b in zip(first.parameters, second.parameters, strict=True):
        np.testing.assert_array_equal(a, b)
    assert first.losses_distributed == second.losses_distributed


def test_fit_metrics_match_between_engines():
    task = Task(model=mlp, data=Blobs(), optimizer=SGD(lr=0.1), batch_size=4, fit_metrics=True)
    cohort = [
        (str(i), roost.FitIns(task.initial_parameters(), {"server_round": 1}))
        for i in range(len(SIZES))
    ]
    vectorized = dict(VectorizedEngine(task, len(SIZES)).run(cohort, None))
    for client_id, _ in cohort:
        reference = task.client(int(client_id), len(SIZES)).fit(
            task.initial_parameters(), {"server_round": 1}
        )
        result = vectorized[client_id]
        assert result.num_examples == reference[1] == SIZES[int(client_id)]
        assert result.metrics.keys() == reference[2].keys() == {"train_loss", "train_accuracy"}
        for name, value in reference[2].items():
            assert result.metrics[name] == pytest.approx(value, rel=1e-5, abs=1e-7)


def test_vectorized_refuses_what_it_cannot_batch():
    task = Task(model=mlp, data=Blobs())
    with pytest.raises(ConfigurationError, match="roost Task"):
        make_engine("vectorized", make_client_fn(0), 4)

    def with_batchnorm():
        return nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4), nn.Linear(4, 3))

    def with_dropout():
        return nn.Sequential(nn.Linear(5, 4), nn.Dropout(0.5), nn.Linear(4, 3))

    for model, message in ((with_batchnorm, "BatchNorm1d"), (with_dropout, "Dropout")):
        with pytest.raises(ConfigurationError, match=message):
            VectorizedEngine(Task(model=model, data=Blobs()), 4)
    assert isinstance(make_engine("vectorized", task, 4), VectorizedEngine)


def test_a_failing_batched_computation_fails_its_clients_not_the_run():
    def bad_loss(outputs, targets):
        raise RuntimeError("boom")

    task = Task(model=mlp, data=Blobs(), loss=bad_loss)
    history = simulate(task, "vectorized", rounds=1)
    assert history.rounds[0].fit_results == 0 and history.rounds[0].fit_failures == 8
    for a, b in zip(history.parameters, task.initial_parameters(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_unknown_engines_and_options_are_refused():
    with pytest.raises(ConfigurationError, match="unknown engine 'gpu'"):
        make_engine("gpu", make_client_fn(0), 4)
    with pytest.raises(ConfigurationError, match="max_workers"):
        make_engine("vectorized", Task(model=mlp, data=Blobs()), 4, max_workers=2)
    with pytest.raises(ConfigurationError, match="device for the sequential engine"):
        make_engine("sequential", make_client_fn(0), 4, device="cpu")
    assert ENGINES == ("sequential", "process", "ray", "vectorized")


# -- the process pool -----------------------------------------------------------------------------


def run_probe(num_clients: int, run_config: dict, rounds: int, pids: list, **options):
    strategy = pid_recording_fedavg(pids, 3)
    return roost.run_simulation(
        probe_client_fn,
        num_clients,
        strategy=strategy,
        run_config=run_config,
        config=roost.ServerConfig(num_rounds=rounds, round_timeout=options.pop("timeout", None)),
        engine="process",
        engine_options={"max_workers": 2, **options},
    )


def test_process_pool_reuses_its_workers_and_computes_fedavg():
    pids: list[int] = []
    history = run_probe(5, {}, rounds=3, pids=pids)
    # FedAvg of (1 + k) weighted by (1 + k), k = 0..4, added once per round.
    weights = np.arange(1, 6)
    expected = 3 * (weights * weights).sum() / weights.sum()
    np.testing.assert_allclose(history.parameters[0], np.full(3, expected))
    assert len(pids) == 15
    assert len(set(pids)) == 2  # two workers, started once, used by every round
    assert os.getpid() not in pids


def test_process_pool_replaces_hung_and_dead_workers():
    pids: list[int] = []
    started = time.monotonic()
    history = run_probe(4, {"hang": 1, "die": 2}, rounds=2, pids=pids, timeout=3.0)
    assert time.monotonic() - started < 50
    first, second = history.rounds
    assert (first.fit_results, first.fit_failures) == (2, 2)
    assert sorted(first.failed_clients) == ["1", "2"]
    assert (second.fit_results, second.fit_failures) == (4, 0)
    # round 1: clients 0 and 3 (weights 1 and 4); round 2: all four.
    expected = (1 * 1 + 4 * 4) / 5 + (1 + 4 + 9 + 16) / 10
    np.testing.assert_allclose(history.parameters[0], np.full(3, expected))


def test_process_engine_gives_the_sequential_model_for_any_client_fn():
    from roost.apps.digits import make_strategy
    from roost.settings import RunSettings

    settings = RunSettings(num_clients=4, num_rounds=2)
    histories = [
        roost.run_simulation(
            make_client_fn(0),
            4,
            strategy=make_strategy(settings),
            config=roost.ServerConfig(num_rounds=2),
            seed=0,
            engine=engine,
            engine_options={"max_workers": 2} if engine == "process" else None,
        )
        for engine in ("sequential", "process")
    ]
    # The same NumPy code, and results reach the running sum in the same order: the same bits.
    for a, b in zip(histories[0].parameters, histories[1].parameters, strict=True):
        np.testing.assert_array_equal(a, b)
    assert histories[0].losses_distributed == histories[1].losses_distributed


def test_process_engine_runs_a_task_like_the_sequential_engine():
    task = Task(model=mlp, data=Blobs(), optimizer=SGD(lr=0.1, momentum=0.9), batch_size=4)
    assert_same_model(simulate(task, "sequential"), simulate(task, "process", max_workers=2))


class Unpicklable:
    def __init__(self) -> None:
        self.lock = threading.Lock()

    def __call__(self, context):
        return probe_client_fn(context)


def test_process_engine_says_client_fn_must_be_picklable():
    with pytest.raises(ConfigurationError, match="must be picklable"):
        make_engine("process", Unpicklable(), 4)
    transport = make_engine("process", LoadsNowhere(), 4, max_workers=1)
    try:
        with pytest.raises(ConfigurationError, match="could not rebuild client_fn"):
            list(transport.run([("0", roost.FitIns([np.zeros(1)], {}))], None))
    finally:
        transport.close()


def small_cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 3))


class Images:
    def __call__(self, partition_id: int, num_partitions: int):
        rng = np.random.default_rng(200 + partition_id)
        n = SIZES[partition_id % len(SIZES)]
        return rng.normal(size=(n, 1, 6, 6)).astype(np.float32), rng.integers(0, 3, n)


def test_convolutions_give_the_sequential_model_batched_or_one_by_one():
    task = Task(
        model=small_cnn, data=Images(), optimizer=SGD(lr=0.1, momentum=0.9), epochs=2, batch_size=4
    )
    transport = VectorizedEngine(task, 8)
    assert transport._chunk_clients(task.recipe(), torch.zeros(4, 1, 6, 6), 4) == 1  # CPU
    sequential = simulate(task, "sequential")
    assert_same_model(sequential, simulate(task, "vectorized"), atol=0)  # the same code path
    assert_same_model(sequential, simulate(task, "vectorized", chunk_size=8))  # grouped convs
