"""Warm clients: kept between instructions, bounded, routed back to their worker, and exact."""

from __future__ import annotations

import time
from collections import deque

import numpy as np
import pytest

import roost
from roost import ConfigurationError, WarmClients
from roost.core.types import FitIns, FitRes
from roost.engines import make_engine
from roost.engines.federation import Federation
from roost.engines.pool import WorkerPool
from roost.engines.warm import ClientHost, estimate_bytes, warm_setting
from roost.strategy import FedAvg, SecureAggregation

NUM_FEATURES = 4


class StatelessClient(roost.Client):
    """Linear least squares by minibatch SGD; the batch order comes from the round and the
    partition only, so a kept object gives the same results as a fresh one. `fits` counts the
    fits this object answered: the one thing it keeps (reported, never used for training)."""

    def __init__(self, partition_id: int, nbytes: int = 0) -> None:
        rng = np.random.default_rng(partition_id)
        self.partition_id = partition_id
        self.x = rng.normal(size=(10 + 2 * partition_id, NUM_FEATURES))
        self.y = self.x @ np.linspace(-1, 1, NUM_FEATURES) + rng.normal(size=len(self.x))
        self.ballast = np.zeros(nbytes, np.uint8)
        self.fits = 0

    def get_parameters(self, config):
        return [np.zeros(NUM_FEATURES)]

    def fit(self, parameters, config):
        self.fits += 1
        w = parameters[0].copy()
        rng = np.random.default_rng([int(config.get("server_round", 0)), self.partition_id])
        for batch in np.array_split(rng.permutation(len(self.y)), 3):
            x, y = self.x[batch], self.y[batch]
            w -= 0.05 * 2 * x.T @ (x @ w - y) / len(y)
        return [w], len(self.y), {"fits_by_this_object": self.fits}

    def evaluate(self, parameters, config):
        loss = float(np.mean((self.x @ parameters[0] - self.y) ** 2))
        return loss, len(self.y), {}


class ClientFn:
    """Picklable client_fn (the process engine sends it to its workers)."""

    def __init__(self, nbytes: int = 0, fail_on_fit: int | None = None) -> None:
        self.nbytes = nbytes
        self.fail_on_fit = fail_on_fit

    def __call__(self, context: roost.Context) -> StatelessClient:
        client = StatelessClient(context.partition_id, self.nbytes)
        if context.partition_id == self.fail_on_fit:
            client.fit = _broken_fit
        return client


def _broken_fit(parameters, config):
    raise RuntimeError("this client's fit is broken")


def mean_fits(pairs) -> dict:
    return {"fits_by_this_object": float(np.mean([m["fits_by_this_object"] for _, m in pairs]))}


def strategy(**options) -> FedAvg:
    return FedAvg(
        fraction_evaluate=0.6,
        initial_parameters=[np.zeros(NUM_FEATURES)],
        on_fit_config_fn=lambda server_round: {"server_round": server_round},
        fit_metrics_aggregation_fn=mean_fits,
        **options,
    )


def simulate(engine: str, warm, rounds: int = 3, engine_options=None, **options):
    if engine == "process":
        engine_options = {"max_workers": 2}
    return roost.run_simulation(
        ClientFn(),
        5,
        strategy=strategy(**options),
        config=roost.ServerConfig(num_rounds=rounds),
        seed=1,
        engine=engine,
        engine_options=engine_options,
        warm_clients=warm,
    )


def assert_same_run(a: roost.History, b: roost.History) -> None:
    """The same model and losses, to the bit: a pool hands results on in the cohort's order,
    so the sums are made in the same order."""
    for x, y in zip(a.parameters, b.parameters, strict=True):
        np.testing.assert_array_equal(x, y)
    assert a.losses_distributed == b.losses_distributed


def fits_by_object(history: roost.History) -> list[float]:
    return [value for _, value in history.metrics_distributed_fit["fits_by_this_object"]]


@pytest.mark.parametrize("engine", ["sequential", "process"])
def test_a_stateless_client_gives_identical_results_warm_and_cold(engine):
    cold = simulate(engine, False)
    warm = simulate(engine, True)
    assert_same_run(cold, warm)
    # What the clients kept is the only difference: a fresh object answers one fit only.
    assert set(fits_by_object(cold)) == {1.0}
    assert max(fits_by_object(warm)) > 1.0


def test_warm_clients_keep_what_the_users_code_keeps_every_round_on_the_sequential_engine():
    history = simulate("sequential", True, rounds=3)
    # The per-round mean of the fits each object answered: all five clients train each round.
    assert fits_by_object(history) == [1.0, 2.0, 3.0]


def test_warm_clients_run_secure_aggregation_phases():
    strategy_options = {
        "min_fit_clients": 5,
        "min_available_clients": 5,
        "secure_aggregation": SecureAggregation(clip_range=8.0, bits=48),
    }
    plain = simulate("sequential", False, rounds=2)
    secure = simulate("sequential", True, rounds=2, **strategy_options)
    for a, b in zip(plain.parameters, secure.parameters, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


def host(**bounds) -> ClientHost:
    return ClientHost(Federation(ClientFn(nbytes=1000), 10), warm=WarmClients(**bounds))


def fit(host: ClientHost, client_id: str, ticket: int | None = None):
    result, _ = host.run(client_id, FitIns([np.zeros(NUM_FEATURES)], {}), {}, ticket)
    return result


def test_the_least_recently_used_clients_are_dropped_beyond_max_clients():
    clients = host(max_clients=2)
    for client_id in ["0", "1", "2", "1"]:
        fit(clients, client_id)
    assert clients.kept == ["2", "1"]
    assert fit(clients, "1").metrics["fits_by_this_object"] == 3  # kept since its first fit
    assert fit(clients, "0").metrics["fits_by_this_object"] == 1  # dropped, built afresh


def test_the_memory_budget_bounds_the_estimated_bytes_kept():
    sizes = [estimate_bytes(StatelessClient(p, nbytes=1000)) for p in range(4)]
    assert sizes[0] > 1000  # its ballast and its data
    clients = host(max_bytes=sizes[2] + sizes[3])
    for client_id in ["0", "1", "2", "3"]:
        fit(clients, client_id)
    assert clients.kept == ["2", "3"]


def test_a_client_larger_than_the_budget_is_rebuilt_every_time_and_a_warning_says_so(caplog):
    clients = host(max_bytes=100)
    fit(clients, "0")
    assert clients.kept == []
    assert fit(clients, "0").metrics["fits_by_this_object"] == 1
    assert "more than the warm-client budget" in caplog.text


def test_a_client_whose_instruction_failed_is_not_kept():
    clients = ClientHost(Federation(ClientFn(fail_on_fit=1), 3), warm=WarmClients())
    fit(clients, "0")
    failure = fit(clients, "1")
    assert failure.kind == "error" and "broken" in failure.reason
    assert clients.kept == ["0"]


def test_a_client_that_missed_instructions_run_elsewhere_is_rebuilt():
    clients = host()
    assert fit(clients, "0", ticket=0).metrics["fits_by_this_object"] == 1
    assert fit(clients, "0", ticket=1).metrics["fits_by_this_object"] == 2
    # Tickets 2 and 3 went to another worker: this one's client is stale.
    assert fit(clients, "0", ticket=4).metrics["fits_by_this_object"] == 1


def test_a_timed_out_client_is_not_kept():
    class SlowClientFn(ClientFn):
        def __call__(self, context):
            client = super().__call__(context)
            fit = client.fit

            def slow_fit(parameters, config):
                time.sleep(0.3)
                return fit(parameters, config)

            client.fit = slow_fit
            return client

    engine = make_engine("sequential", SlowClientFn(), 2, warm_clients=True)
    cohort = [("0", FitIns([np.zeros(NUM_FEATURES)], {}))]
    [(_, failure)] = list(engine.run(cohort, timeout=0.05))
    assert failure.kind == "timeout"
    time.sleep(0.4)  # the abandoned fit finishes in the background
    assert engine.host.kept == []
    [(_, result)] = list(engine.run(cohort, timeout=5))
    assert isinstance(result, FitRes) and engine.host.kept == ["0"]


def test_the_node_state_stays_the_dict_a_warm_client_holds():
    class Remembering(StatelessClient):
        def __init__(self, context):
            super().__init__(context.partition_id)
            self.context = context

        def fit(self, parameters, config):
            self.context.state["seen"] = self.context.state.get("seen", 0) + 1
            return super().fit(parameters, config)

    clients = ClientHost(Federation(Remembering, 1), warm=WarmClients())
    state: dict = {}
    for expected in (1, 2, 3):  # the pool sends a fresh copy of the state with every call
        _, state = clients.run("0", FitIns([np.zeros(NUM_FEATURES)], {}), dict(state), None)
        assert state == {"seen": expected}


def test_estimated_bytes_count_each_array_once():
    torch = pytest.importorskip("torch")
    shared = np.zeros(1000, np.float32)
    holder = {"a": shared, "b": [shared, torch.zeros(10, dtype=torch.float64)], "c": "xy"}
    assert estimate_bytes(holder) == 4000 + 80 + 2


def test_warm_settings_are_checked():
    assert warm_setting(False) is None and warm_setting(True) == WarmClients()
    with pytest.raises(ConfigurationError, match="warm_clients must be"):
        warm_setting("yes")
    with pytest.raises(ConfigurationError, match="max_clients"):
        WarmClients(max_clients=0)
    assert WarmClients(max_clients=5, max_bytes=1000).share(2) == WarmClients(3, 500)


def test_the_vectorized_engine_has_no_client_objects_to_keep():
    with pytest.raises(ConfigurationError, match="unknown option"):
        make_engine("vectorized", ClientFn(), 2, warm_clients=True)


# -- routing a node to the worker that holds its client ------------------------------------------


class Routing(WorkerPool[str, None]):
    """Only `_next_call`, the routing rule, is exercised; workers are names."""

    def __init__(self, workers: list[str]) -> None:
        super().__init__(Federation(client_fn=None, num_clients=10), len(workers), WarmClients())
        self._workers = list(workers)

    def _start_workers(self, count): ...
    def _kill(self, worker): ...
    def _send(self, worker, client_id, instruction, state, ticket): ...
    def _wait(self, handles, timeout): ...
    def _receive(self, worker, handle): ...


def route(pool: Routing, homes: dict[str, str], pending: list[str], idle: list[str]):
    pool._home = dict(homes)
    queue = deque((client_id, None) for client_id in pending)
    chosen = pool._next_call(queue, list(idle))
    return None if chosen is None else (chosen[0], chosen[1][0])


def test_a_node_goes_back_to_the_worker_that_holds_its_client():
    pool = Routing(["A", "B"])
    homes = {"0": "A", "1": "B", "2": "A"}
    assert route(pool, homes, ["0", "1", "2"], idle=["B"]) == ("B", "1")
    assert route(pool, homes, ["0", "2"], idle=["A"]) == ("A", "0")


def test_an_idle_worker_takes_new_nodes_and_those_of_dead_workers_first():
    pool = Routing(["A", "B"])
    homes = {"0": "A", "1": "A", "2": "gone"}
    assert route(pool, homes, ["0", "1", "2", "3"], idle=["B"]) == ("B", "2")
    assert route(pool, homes, ["0", "1", "3"], idle=["B"]) == ("B", "3")


def test_a_free_worker_waits_for_a_busy_one_unless_it_has_two_calls_waiting():
    pool = Routing(["A", "B"])
    assert route(pool, {"0": "A"}, ["0"], idle=["B"]) is None
    assert route(pool, {"0": "A", "1": "A"}, ["0", "1"], idle=["B"]) == ("B", "1")
