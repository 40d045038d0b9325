"""A round of several phases (FedSGD's line search) on the sequential, process and gRPC engines."""

from __future__ import annotations

import numpy as np
import pytest
from grpc_support import run_deployed

import roost
from roost.core.types import FitIns, FitRes
from roost.strategy import FedSGD

NUM_FEATURES = 4
TRUE_WEIGHTS = np.array([3.0, -2.0, 1.0, 0.5])


class GradientClient(roost.Client):
    """Least squares; answers FedSGD's fit with its full-batch gradient and its loss there."""

    def __init__(self, partition_id: int) -> None:
        rng = np.random.default_rng(partition_id)
        self.x = rng.normal(size=(30 + 5 * partition_id, NUM_FEATURES))
        self.y = self.x @ TRUE_WEIGHTS + 0.01 * rng.normal(size=len(self.x))

    def get_parameters(self, config):
        return [np.zeros(NUM_FEATURES)]

    def fit(self, parameters, config):
        residual = self.x @ parameters[0] - self.y
        gradient = 2 * self.x.T @ residual / len(self.y)
        return [gradient], len(self.y), {"train_loss": float(np.mean(residual**2))}

    def evaluate(self, parameters, config):
        loss = float(np.mean((self.x @ parameters[0] - self.y) ** 2))
        return loss, len(self.y), {}


def client_fn(context: roost.Context) -> GradientClient:
    return GradientClient(context.partition_id)


def line_search_strategy(**options) -> FedSGD:
    # A server step of 2.0 overshoots badly on this problem: only backtracking makes progress.
    return FedSGD(
        learning_rate=2.0,
        line_search_probes=6,
        min_fit_clients=3,
        min_available_clients=3,
        fraction_evaluate=0.0,
        initial_parameters=[np.zeros(NUM_FEATURES)],
        **options,
    )


def simulate(engine: str, strategy: FedSGD, rounds: int = 4) -> roost.History:
    return roost.run_simulation(
        client_fn,
        3,
        strategy=strategy,
        config=roost.ServerConfig(num_rounds=rounds),
        seed=0,
        engine=engine,
    )


def test_line_search_backtracks_and_converges_where_the_plain_step_diverges() -> None:
    history = simulate("sequential", line_search_strategy())
    steps = [value for _, value in history.measurements["line_search_step"]]
    assert all(0 < step < 2.0 for step in steps)  # every round backtracked from the full step
    error = np.linalg.norm(history.parameters[0] - TRUE_WEIGHTS)
    assert error < 0.5 * np.linalg.norm(TRUE_WEIGHTS)
    # Each round ran the fit phase and at least two probes, counted per phase.
    for record in history.rounds:
        assert record.fit_results == 3
        assert record.phases["line_search"][0] >= 6 and record.phases["line_search"][1] == 0
    again = simulate("sequential", line_search_strategy())
    plain_strategy = FedSGD(
        learning_rate=2.0,
        min_fit_clients=3,
        min_available_clients=3,
        fraction_evaluate=0.0,
        initial_parameters=[np.zeros(NUM_FEATURES)],
    )
    diverged = simulate("sequential", plain_strategy)
    assert np.linalg.norm(diverged.parameters[0] - TRUE_WEIGHTS) > 10 * error
    np.testing.assert_array_equal(again.parameters[0], history.parameters[0])  # deterministic


class _Probes:
    """A fake round context: answers every phase with GradientClient results, logging phases."""

    def __init__(self, clients: dict[str, GradientClient]) -> None:
        self.server_round = 1
        self.rng = np.random.default_rng(0)
        self.clients = clients
        self.phases: list[str] = []

    def available(self, count):
        return list(self.clients)

    def exchange(self, phase, cohort, template):
        self.phases.append(phase)
        for client_id, instruction in cohort:
            assert isinstance(instruction, FitIns)
            yield client_id, FitRes(*self.clients[client_id].fit(instruction.parameters, {}))


def test_a_step_that_passes_at_once_takes_one_probe() -> None:
    clients = {str(i): GradientClient(i) for i in range(3)}
    context = _Probes(clients)
    strategy = FedSGD(learning_rate=0.05, line_search_probes=5, min_fit_clients=3)
    start = [np.zeros(NUM_FEATURES)]
    result = strategy.fit_round(context, start, strategy.init(start))
    assert context.phases == ["fit", "line_search"]
    assert result.measurements["line_search_step"] == pytest.approx(0.05)
    plain = FedSGD(learning_rate=0.05, min_fit_clients=3)
    expected = plain.fit_round(_Probes(clients), start, plain.init(start))
    np.testing.assert_allclose(result.parameters[0], expected.parameters[0])


def test_the_process_engine_runs_the_same_phases_to_the_same_model() -> None:
    sequential = simulate("sequential", line_search_strategy(), rounds=2)
    process = simulate("process", line_search_strategy(), rounds=2)
    np.testing.assert_allclose(process.parameters[0], sequential.parameters[0], rtol=1e-12)
    assert [r.phases for r in process.rounds] == [r.phases for r in sequential.rounds]


def test_the_phases_run_over_grpc_to_the_simulated_model() -> None:
    clients = {str(pid): GradientClient(pid) for pid in range(3)}
    deployed = run_deployed(line_search_strategy(), clients, num_rounds=2)
    simulated = simulate("sequential", line_search_strategy(), rounds=2)
    np.testing.assert_allclose(deployed.parameters[0], simulated.parameters[0], rtol=1e-9)
    assert deployed.measurements.keys() == simulated.measurements.keys()
    assert [r.phases for r in deployed.rounds] == [r.phases for r in simulated.rounds]
