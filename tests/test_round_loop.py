"""The round loop end to end through `run_simulation`: sampling, failures, timeouts, validation."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import roost
from roost.core.types import Parameters
from roost.core.validation import check_parameters
from roost.errors import InvalidMessageError


class ToyClient(roost.Client):
    """Moves every parameter by (partition_id + 1) and reports partition_id + 1 examples."""

    def __init__(self, partition_id: int, log: list | None = None) -> None:
        self.partition_id = partition_id
        self.log = log if log is not None else []

    def get_parameters(self, config):
        return [np.full(2, 100.0 + self.partition_id)]

    def fit(self, parameters: Parameters, config):
        self.log.append(("fit", self.partition_id, dict(config)))
        step = self.partition_id + 1
        return [p + step for p in parameters], step, {"step": step}

    def evaluate(self, parameters: Parameters, config):
        self.log.append(("evaluate", self.partition_id, dict(config)))
        return float(self.partition_id), self.partition_id + 1, {"pid": self.partition_id}


def toy_client_fn(log: list):
    return lambda context: ToyClient(context.partition_id, log)


def zeros() -> Parameters:
    return [np.zeros(2)]


def fit_cohorts(log: list) -> list[list[int]]:
    """Partition ids trained per round, reconstructed from the clients' own log."""
    rounds: dict[int, list[int]] = {}
    for kind, pid, config in log:
        if kind == "fit":
            rounds.setdefault(config["server_round"], []).append(pid)
    return [rounds[r] for r in sorted(rounds)]


def round_config(server_round: int) -> dict:
    return {"server_round": server_round}


def test_fedavg_rounds_match_hand_computation() -> None:
    log: list = []
    history = roost.run_simulation(
        toy_client_fn(log),
        num_clients=3,
        strategy=roost.FedAvg(initial_parameters=zeros(), fraction_evaluate=0.0),
        config=roost.ServerConfig(num_rounds=2),
        seed=1,
    )
    # Each round adds the example-weighted mean of the steps: (1*1 + 2*2 + 3*3) / 6 = 14/6.
    np.testing.assert_allclose(history.parameters[0], np.full(2, 2 * 14 / 6))
    assert [(r.fit_results, r.fit_failures) for r in history.rounds] == [(3, 0), (3, 0)]
    assert not [entry for entry in log if entry[0] == "evaluate"]


@pytest.mark.parametrize(
    ("fraction", "minimum", "expected"), [(0.3, 2, 3), (0.1, 4, 4), (1.0, 2, 10), (0.55, 1, 5)]
)
def test_sampling_honours_fraction_and_minimum(fraction, minimum, expected) -> None:
    log: list = []
    roost.run_simulation(
        toy_client_fn(log),
        num_clients=10,
        strategy=roost.FedAvg(
            initial_parameters=zeros(),
            fraction_fit=fraction,
            min_fit_clients=minimum,
            fraction_evaluate=0.0,
            on_fit_config_fn=round_config,
        ),
        config=roost.ServerConfig(num_rounds=3),
        seed=0,
    )
    cohorts = fit_cohorts(log)
    assert [len(c) for c in cohorts] == [expected] * 3
    assert all(len(set(c)) == len(c) for c in cohorts)


def test_sampling_is_reproducible_by_seed() -> None:
    def cohorts(seed: int) -> list[list[int]]:
        log: list = []
        roost.run_simulation(
            toy_client_fn(log),
            num_clients=20,
            strategy=roost.FedAvg(
                initial_parameters=zeros(),
                fraction_fit=0.25,
                fraction_evaluate=0.0,
                on_fit_config_fn=round_config,
            ),
            config=roost.ServerConfig(num_rounds=4),
            seed=seed,
        )
        return fit_cohorts(log)

    assert cohorts(7) == cohorts(7)
    assert cohorts(7) != cohorts(8)


def test_evaluation_sampling_and_config_reach_clients() -> None:
    log: list = []
    roost.run_simulation(
        toy_client_fn(log),
        num_clients=10,
        strategy=roost.FedAvg(
            initial_parameters=zeros(),
            fraction_evaluate=0.5,
            min_evaluate_clients=2,
            on_evaluate_config_fn=lambda r: {"eval_round": r},
        ),
        config=roost.ServerConfig(num_rounds=2),
    )
    evaluations = [entry for entry in log if entry[0] == "evaluate"]
    assert len(evaluations) == 10
    assert sorted({config["eval_round"] for _, _, config in evaluations}) == [1, 2]


def test_too_few_clients_is_a_clear_error() -> None:
    with pytest.raises(roost.NotEnoughClientsError, match="min_available_clients"):
        roost.run_simulation(
            toy_client_fn([]),
            num_clients=3,
            strategy=roost.FedAvg(initial_parameters=zeros(), min_available_clients=5),
            config=roost.ServerConfig(num_rounds=1),
        )


def test_metrics_and_losses_land_in_history() -> None:
    def evaluate_fn(server_round, parameters, config):
        return float(parameters[0][0]), {"central": server_round * 10}

    history = roost.run_simulation(
        toy_client_fn([]),
        num_clients=2,
        strategy=roost.FedAvg(
            initial_parameters=zeros(),
            evaluate_fn=evaluate_fn,
            fit_metrics_aggregation_fn=lambda pairs: {"steps": sum(m["step"] for _, m in pairs)},
            evaluate_metrics_aggregation_fn=lambda pairs: {"n": sum(n for n, _ in pairs)},
        ),
        config=roost.ServerConfig(num_rounds=2),
    )
    # Steps 1 and 2 weighted by 1 and 2 examples: each round adds 5/3.
    assert history.losses_centralized == [
        (0, 0.0),
        (1, pytest.approx(5 / 3)),
        (2, pytest.approx(10 / 3)),
    ]
    assert history.metrics_centralized == {"central": [(0, 0), (1, 10), (2, 20)]}
    assert history.metrics_distributed_fit == {"steps": [(1, 3), (2, 3)]}
    assert history.metrics_distributed == {"n": [(1, 3), (2, 3)]}
    # Client losses 0 and 1 weighted by 1 and 2 examples.
    assert history.losses_distributed == [(1, pytest.approx(2 / 3)), (2, pytest.approx(2 / 3))]


def test_initial_parameters_come_from_one_client_when_absent(caplog) -> None:
    history = roost.run_simulation(
        toy_client_fn([]),
        num_clients=4,
        strategy=roost.FedAvg(fraction_evaluate=0.0),
        config=roost.ServerConfig(num_rounds=0),
        seed=3,
    )
    # ToyClient.get_parameters returns 100 + partition_id: the model came from one of the clients.
    value = float(history.parameters[0][0])
    assert value in {100.0, 101.0, 102.0, 103.0}
    assert "requesting initial parameters from one random client" in caplog.text


class RaisingClient(ToyClient):
    def fit(self, parameters, config):
        if self.partition_id == 1:
            raise RuntimeError("disk full")
        return super().fit(parameters, config)


def test_a_raising_client_is_a_logged_failure(caplog) -> None:
    history = roost.run_simulation(
        lambda context: RaisingClient(context.partition_id),
        num_clients=3,
        strategy=roost.FedAvg(initial_parameters=zeros(), fraction_evaluate=0.0),
        config=roost.ServerConfig(num_rounds=1),
    )
    record = history.rounds[0]
    assert (record.fit_results, record.fit_failures, record.failed_clients) == (2, 1, ["1"])
    assert "client 1: error: RuntimeError: disk full" in caplog.text
    # The two healthy clients (steps 1 and 3, weights 1 and 3) still make the round.
    np.testing.assert_allclose(history.parameters[0], np.full(2, 10 / 4))


def test_accept_failures_false_leaves_the_model_unchanged(caplog) -> None:
    history = roost.run_simulation(
        lambda context: RaisingClient(context.partition_id),
        num_clients=3,
        strategy=roost.FedAvg(
            initial_parameters=zeros(), fraction_evaluate=0.0, accept_failures=False
        ),
        config=roost.ServerConfig(num_rounds=2),
    )
    np.testing.assert_array_equal(history.parameters[0], np.zeros(2))
    assert "accept_failures=False: global model unchanged" in caplog.text


def test_a_slow_client_past_the_round_timeout_is_a_failure(caplog) -> None:
    release = threading.Event()

    class SlowClient(ToyClient):
        def fit(self, parameters, config):
            if self.partition_id == 0:
                release.wait(10)
            return super().fit(parameters, config)

    try:
        history = roost.run_simulation(
            lambda context: SlowClient(context.partition_id),
            num_clients=2,
            strategy=roost.FedAvg(initial_parameters=zeros(), fraction_evaluate=0.0),
            config=roost.ServerConfig(num_rounds=1, round_timeout=0.3),
        )
    finally:
        release.set()
    record = history.rounds[0]
    assert (record.fit_results, record.fit_failures, record.failed_clients) == (1, 1, ["0"])
    assert "client 0: timeout" in caplog.text
    np.testing.assert_allclose(history.parameters[0], np.full(2, 2.0))


class MalformedClient(ToyClient):
    def __init__(self, partition_id: int, bad) -> None:
        super().__init__(partition_id)
        self.bad = bad

    def fit(self, parameters, config):
        if self.partition_id == 0:
            return self.bad(parameters)
        return super().fit(parameters, config)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (lambda p: ([p[0], p[0]], 1, {}), "expected 1 arrays like the global model, got 2"),
        (lambda p: ([np.zeros(3)], 1, {}), "parameter 0 has shape (3,), the global model has (2,)"),
        (
            lambda p: ([np.zeros(2, np.int64)], 1, {}),
            "dtype int64, the global model has float64",
        ),
        (lambda p: ([np.array([np.nan, 0.0])], 1, {}), "NaN or Inf"),
        (lambda p: (p, -5, {}), "num_examples=-5"),
        (lambda p: (p, 1.5, {}), "num_examples must be an int"),
        (lambda p: (p, 1, {"x": [1, 2]}), "metrics['x'] is a list"),
        (lambda p: (p, 1), "fit must return a tuple (parameters, num_examples, metrics)"),
        (lambda p: "nonsense", "fit must return a tuple"),
    ],
)
def test_malformed_results_are_failures_naming_client_and_mismatch(bad, message, caplog) -> None:
    history = roost.run_simulation(
        lambda context: MalformedClient(context.partition_id, bad),
        num_clients=2,
        strategy=roost.FedAvg(initial_parameters=zeros(), fraction_evaluate=0.0),
        config=roost.ServerConfig(num_rounds=1),
    )
    assert history.rounds[0].failed_clients == ["0"]
    failure_lines = [r.getMessage() for r in caplog.records if "client 0" in r.getMessage()]
    assert any(message in line for line in failure_lines), failure_lines
    # Only the honest client (step 2) counted: the global model is intact and finite.
    np.testing.assert_allclose(history.parameters[0], np.full(2, 2.0))


def test_clients_cannot_modify_the_global_model_in_place() -> None:
    class InPlaceClient(ToyClient):
        def fit(self, parameters, config):
            parameters[0] += 1000.0  # a careless client
            return parameters, 1, {}

    seen: list[float] = []

    def evaluate_fn(server_round, parameters, config):
        seen.append(float(parameters[0][0]))
        return 0.0, {}

    roost.run_simulation(
        lambda context: InPlaceClient(context.partition_id),
        num_clients=2,
        strategy=roost.FedAvg(
            initial_parameters=zeros(), fraction_evaluate=0.0, evaluate_fn=evaluate_fn
        ),
        config=roost.ServerConfig(num_rounds=1),
    )
    assert seen == [0.0, 1000.0]


def test_clients_are_built_on_demand_and_released() -> None:
    alive = {"now": 0, "max": 0, "built": 0}

    class CountedClient(ToyClient):
        def __init__(self, partition_id: int) -> None:
            super().__init__(partition_id)
            alive["now"] += 1
            alive["built"] += 1
            alive["max"] = max(alive["max"], alive["now"])

        def __del__(self) -> None:
            alive["now"] -= 1

    roost.run_simulation(
        lambda context: CountedClient(context.partition_id),
        num_clients=50,
        strategy=roost.FedAvg(
            initial_parameters=zeros(),
            fraction_fit=0.2,
            fraction_evaluate=0.1,
            min_evaluate_clients=1,
        ),
        config=roost.ServerConfig(num_rounds=3),
    )
    assert alive["built"] == 3 * (10 + 5)
    assert alive["max"] == 1


def test_context_carries_partition_facts() -> None:
    contexts = []

    def client_fn(context: roost.Context):
        contexts.append(context)
        return ToyClient(context.partition_id)

    roost.run_simulation(
        client_fn,
        num_clients=3,
        strategy=roost.FedAvg(initial_parameters=zeros(), fraction_evaluate=0.0),
        config=roost.ServerConfig(num_rounds=1),
        run_config={"lr": 0.1},
    )
    assert sorted(c.partition_id for c in contexts) == [0, 1, 2]
    assert all(c.num_partitions == 3 for c in contexts)
    assert contexts[0].node_config["partition-id"] == contexts[0].partition_id
    assert contexts[0].run_config == {"lr": 0.1}


def test_any_object_with_the_three_methods_is_a_client() -> None:
    class Duck:  # no base class
        def get_parameters(self, config):
            return [np.ones(2)]

        def fit(self, parameters, config):
            return [p * 3 for p in parameters], 1, {}

        def evaluate(self, parameters, config):
            return 0.5, 1, {}

    history = roost.run_simulation(
        lambda context: Duck(), num_clients=2, config=roost.ServerConfig(num_rounds=1)
    )
    np.testing.assert_allclose(history.parameters[0], np.full(2, 3.0))
    assert history.losses_distributed == [(1, 0.5)]


def test_a_zero_dimensional_parameter_stays_an_array() -> None:
    # PyTorch's BatchNorm keeps its step count as a 0-d int64 tensor in the state_dict.
    class Counting(ToyClient):
        def fit(self, parameters, config):
            return [np.asarray(parameters[0] + 2.0), np.asarray(parameters[1] + 3)], 1, {}

    history = roost.run_simulation(
        lambda context: Counting(context.partition_id),
        num_clients=2,
        strategy=roost.FedAvg(
            initial_parameters=[np.zeros(()), np.zeros((), np.int64)], fraction_evaluate=0.0
        ),
        config=roost.ServerConfig(num_rounds=2),
    )
    assert [(a.shape, a.dtype) for a in history.parameters] == [
        ((), np.float64),
        ((), np.int64),
    ]
    assert [a.item() for a in history.parameters] == [4.0, 6]


def test_a_float_reply_of_another_width_is_cast_to_the_models_dtype() -> None:
    class Float32(ToyClient):
        def fit(self, parameters, config):
            return [(parameters[0] + 0.5).astype(np.float32)], 1, {}

    history = roost.run_simulation(
        lambda context: Float32(context.partition_id),
        num_clients=2,
        strategy=roost.FedAvg(initial_parameters=zeros(), fraction_evaluate=0.0),
        config=roost.ServerConfig(num_rounds=1),
    )
    assert history.rounds[0].fit_results == 2
    assert history.parameters[0].dtype == np.float64
    np.testing.assert_array_equal(history.parameters[0], np.full(2, 0.5))
    # a float64 the model's float32 cannot hold is refused, not cast to infinity
    with pytest.raises(InvalidMessageError, match="NaN or Inf"):
        check_parameters([np.full(2, 1e300)], [np.zeros(2, np.float32)])
