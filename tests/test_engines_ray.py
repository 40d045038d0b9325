"""The Ray engine on a local Ray: the sequential model, actors reused, hung clients replaced."""

from __future__ import annotations

import os
import sys
import time

import numpy as np
import pytest
from process_probes import pid_recording_fedavg

import roost
from roost.apps.digits import make_client_fn, make_strategy
from roost.engines import make_engine
from roost.settings import RunSettings

ray = pytest.importorskip("ray")
cloudpickle = pytest.importorskip("cloudpickle")

# Starting Ray takes seconds: slow, and one group, so that --dist loadgroup runs every test of
# this file on one worker, with one Ray start.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray")]

# Ray workers cannot import this test module: send its classes by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def test_ray_engine_starts_and_stops_its_own_local_ray():
    # Runs before the module's shared Ray starts (tests run in file order).
    from roost.engines.ray import RayEngine

    assert not ray.is_initialized()
    transport = RayEngine(make_client_fn(0), 2, init_kwargs={"num_cpus": 1})
    try:
        assert ray.is_initialized() and transport.max_actors == 1
        outcomes = dict(
            transport.run([("0", roost.EvaluateIns([np.zeros((64, 10)), np.zeros(10)], {}))], None)
        )
        assert outcomes["0"].loss == pytest.approx(np.log(10))  # uniform over 10 classes
    finally:
        transport.close()
    assert not ray.is_initialized()


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        yield
    finally:
        ray.shutdown()


class SlowOnce(roost.Client):
    """Adds (1 + partition); partition 1 hangs in round 1."""

    def __init__(self, partition_id: int) -> None:
        self.partition_id = partition_id

    def fit(self, parameters, config):
        if self.partition_id == 1 and config.get("server_round") == 1:
            time.sleep(60)
        step = 1.0 + self.partition_id
        return [p + step for p in parameters], self.partition_id + 1, {"pid": os.getpid()}

    def evaluate(self, parameters, config):
        return float(parameters[0].sum()) + self.partition_id, 1, {"pid": os.getpid()}


def slow_once_client_fn(context: roost.Context) -> SlowOnce:
    return SlowOnce(context.partition_id)


def demo_run(engine: str, **options) -> roost.History:
    """Two rounds of the digits demo's NumPy clients, four of them, on `engine`."""
    return roost.run_simulation(
        make_client_fn(0),
        4,
        strategy=make_strategy(RunSettings(num_clients=4, num_rounds=2)),
        config=roost.ServerConfig(num_rounds=2),
        seed=0,
        engine=engine,
        **options,
    )


def test_ray_engine_reuses_actors_and_replaces_a_hung_one(local_ray):
    pids: list[int] = []
    strategy = pid_recording_fedavg(pids, 2)
    history = roost.run_simulation(
        slow_once_client_fn,
        4,
        strategy=strategy,
        config=roost.ServerConfig(num_rounds=3, round_timeout=5.0),
        engine="ray",
    )
    first, *later = history.rounds
    assert (first.fit_results, first.failed_clients) == (3, ["1"])
    assert all(r.fit_results == 4 for r in later)
    expected = (1 + 9 + 16) / 8 + 2 * (1 + 4 + 9 + 16) / 10
    np.testing.assert_allclose(history.parameters[0], np.full(2, expected))
    assert len(set(pids)) <= 3  # two actors, one of them replaced once


def test_ray_engine_takes_any_number_of_exchanges_per_round(local_ray):
    transport = make_engine("ray", slow_once_client_fn, 3)
    clients = transport.wait_for_clients(3)
    start = [np.zeros(2)]
    fit = [(c, roost.FitIns(start, {"server_round": 2})) for c in clients]
    evaluate = [(c, roost.EvaluateIns(start, {})) for c in clients]
    try:
        exchanges = [dict(transport.run(phase, 10.0)) for phase in (fit, evaluate, evaluate, fit)]
    finally:
        transport.close()
    kinds = [{c: type(r).__name__ for c, r in outcomes.items()} for outcomes in exchanges]
    expected = ("FitRes", "EvaluateRes", "EvaluateRes", "FitRes")
    assert kinds == [dict.fromkeys(clients, kind) for kind in expected]
    for client_id in clients:
        assert exchanges[1][client_id].loss == exchanges[2][client_id].loss == int(client_id)
        np.testing.assert_array_equal(
            exchanges[3][client_id].parameters[0], np.full(2, 1.0 + int(client_id))
        )
    pids = {r.metrics["pid"] for outcomes in exchanges for r in outcomes.values()}
    assert len(pids) <= 2 and os.getpid() not in pids  # the same actors every exchange


class Counting(roost.Client):
    """Adds 1; reports how many fits this object answered (what a warm client keeps)."""

    def __init__(self) -> None:
        self.fits = 0

    def fit(self, parameters, config):
        self.fits += 1
        return [p + 1 for p in parameters], 1, {"fits": self.fits}

    def evaluate(self, parameters, config):
        return 0.0, 1, {}


def counting_client_fn(context: roost.Context) -> Counting:
    return Counting()


def test_ray_engine_gives_the_sequential_model_and_keeps_warm_clients(local_ray):
    sequential, *on_ray = [
        demo_run(engine, warm_clients=warm)
        for engine, warm in (("sequential", False), ("ray", False), ("ray", True))
    ]
    for history in on_ray:
        for a, b in zip(sequential.parameters, history.parameters, strict=True):
            np.testing.assert_array_equal(a, b)  # the cohort's order: the same sums
    assert ray.is_initialized()  # the engine leaves a Ray it did not start running

    fits: list[int] = []
    strategy = roost.FedAvg(
        fraction_evaluate=0.0,
        initial_parameters=[np.zeros(2)],
        fit_metrics_aggregation_fn=lambda pairs: fits.extend(m["fits"] for _, m in pairs) or {},
    )
    roost.run_simulation(
        counting_client_fn,
        4,
        strategy=strategy,
        config=roost.ServerConfig(num_rounds=3),
        engine="ray",
        warm_clients=True,
    )
    assert fits[:4] == [1, 1, 1, 1] and max(fits) >= 2  # kept on their actors after round 1


def test_ray_engine_resumes_node_states_exactly(local_ray, tmp_path):
    """Warm clients: the stricter case (a restored state must reach the live client on its
    actor); cold and warm share the worker-pool code the process engine's tests cover both ways."""
    import test_node_state_resume

    cloudpickle.register_pickle_by_value(test_node_state_resume)  # its client, by value too
    test_node_state_resume.assert_resumes_exactly(tmp_path, engine="ray", warm_clients=True)
