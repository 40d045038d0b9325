"""FedBuff and FedAsync over gRPC, in real time: a real server on 127.0.0.1 and real clients of
different speeds. Aggregations do not wait for slow clients; late updates count with their
staleness weight; a client that dies mid-task is a failure that does not stall the run."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest
from grpc_support import (
    free_port,
    processes,
    serving,
    start_clients,
    start_demo_server,
    wait_all,
)

import roost
from roost.privacy.central import CentralDP
from roost.strategy import Mean
from roost.transport.grpc.client import GrpcClient
from roost.transport.grpc.options import ClientOptions

WAIT_S = 10.0


class Stepper(roost.Client):
    """Adds `step` to the model it is sent; `before_fit(n)` runs first, on its n-th fit."""

    def __init__(self, step: float, before_fit: Callable[[int], None] = lambda n: None) -> None:
        self.step = step
        self.before_fit = before_fit
        self.fits = 0

    def get_parameters(self, config):
        return [np.zeros(1)]

    def fit(self, parameters, config):
        self.fits += 1
        self.before_fit(self.fits)
        return [parameters[0] + self.step], 1, {"step": self.step}

    def evaluate(self, parameters, config):
        return 0.0, 1, {}


def first_step(pairs):
    """B = 1: the round's one update, named by its client's step."""
    return {"step": pairs[0][1]["step"]}


def asynchronous(concurrency: int, buffer_size: int, **options) -> roost.FedBuff:
    return roost.FedBuff(
        concurrency=concurrency,
        buffer_size=buffer_size,
        server_learning_rate=1.0,
        initial_parameters=[np.zeros(1)],
        **{"fraction_evaluate": 0.0, **options},
    )


class Clients:
    """gRPC clients in threads; `stop_all` stops and joins them, whatever happened."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.grpc_clients: list[GrpcClient] = []
        self.threads: list[threading.Thread] = []

    def start(self, node_id: str, client: roost.Client) -> GrpcClient:
        options = ClientOptions(reconnect_timeout=WAIT_S)
        grpc_client = GrpcClient(self.address, lambda: client, node_id, options)
        thread = threading.Thread(target=grpc_client.run, daemon=True)
        thread.start()
        self.grpc_clients.append(grpc_client)
        self.threads.append(thread)
        return grpc_client

    def stop_all(self) -> None:
        for grpc_client in self.grpc_clients:
            grpc_client.stop()
        for thread in self.threads:
            thread.join(WAIT_S)


def serve(
    strategy,
    make_clients: Callable[[Clients], int],
    num_rounds: int,
    round_timeout: float = WAIT_S,
    **run_options,
) -> roost.History:
    """Run `num_rounds` aggregations of `strategy` over a real gRPC server, once the clients
    `make_clients` starts (it returns how many) are connected."""
    with serving(client_wait_timeout=WAIT_S) as transport:
        group = Clients(f"127.0.0.1:{transport.port}")
        try:
            count = make_clients(group)
            transport.wait_for_clients(count, WAIT_S)
            return roost.run_rounds(
                strategy,
                transport,
                roost.ServerConfig(num_rounds=num_rounds, round_timeout=round_timeout),
                seed=0,
                real_time=True,
                **run_options,
            )
        finally:
            transport.close(grace=1.0)
            group.stop_all()


def test_fedasync_applies_a_slow_clients_late_update_with_its_staleness_weight() -> None:
    """A fast client (step 1) and a slow one (step 100, which finishes only once the fast one
    has trained three times): versions move on without the slow one, and its update, trained
    from version 0, counts (1 + s)^-1/2 where s is how many versions passed meanwhile."""
    third_fit = threading.Event()

    def fast(n: int) -> None:
        if n == 3:
            third_fit.set()
        if n > 3:
            time.sleep(0.3)  # let the slow client's update land before the fourth one

    def slow(n: int) -> None:
        assert third_fit.wait(WAIT_S)
        if n > 1:
            time.sleep(0.5)

    def start(group: Clients) -> int:
        group.start("fast", Stepper(1.0, fast))
        group.start("slow", Stepper(100.0, slow))
        return 2

    strategy = asynchronous(2, 1, fit_metrics_aggregation_fn=first_step)
    history = serve(strategy, start, num_rounds=5)

    steps = [value for _, value in history.metrics_distributed_fit["step"]]
    staleness = [value for _, value in history.measurements["staleness_max"]]
    assert len(steps) == len(staleness) == 5
    late = steps.index(100.0)
    # Two aggregations at least (the fast client's first two updates) went ahead without it,
    # whose first update was trained from version 0.
    assert late >= 2 and staleness[late] == late
    assert staleness[:late] == [0] * late  # the fast client, always sent the newest version
    expected = sum(step * (1 + s) ** -0.5 for step, s in zip(steps, staleness, strict=True))
    np.testing.assert_allclose(history.parameters[0], [expected], rtol=1e-12)
    assert [r.fit_results for r in history.rounds] == [1] * 5


def test_a_client_that_dies_mid_task_is_a_failure_and_the_run_goes_on() -> None:
    """With two clients (min_available_clients 2) one of which dies: the run, and its
    evaluation of each version, go on with the other, without waiting for a second client."""
    doomed: list[GrpcClient] = []

    def die(n: int) -> None:
        doomed[0].stop()  # its connection ends with its update unsent
        time.sleep(0.1)
        raise RuntimeError("this client died")

    def start(group: Clients) -> int:
        group.start("a", Stepper(1.0))
        doomed.append(group.start("doomed", Stepper(100.0, die)))
        return 2

    strategy = asynchronous(2, 1, staleness="constant", fraction_evaluate=1.0)
    started = time.monotonic()
    history = serve(strategy, start, num_rounds=3)
    assert time.monotonic() - started < WAIT_S  # neither the task's timeout nor a new client
    assert [r.failed_clients for r in history.rounds].count(["doomed"]) == 1
    assert sum(r.fit_results for r in history.rounds) == 2
    assert sum(r.evaluate_results for r in history.rounds) >= 1  # by idle clients only
    # Its update never counted; the version its failure made is the previous one.
    np.testing.assert_allclose(history.parameters[0], [2.0], rtol=1e-12)


def test_a_fast_client_waits_for_the_next_buffer_once_it_contributed() -> None:
    """K = B = 2 with a fast and a slow client: the fast one is not sent work again until the
    buffer it is in is aggregated, so the aggregate is the mean of both clients' updates."""

    def start(group: Clients) -> int:
        group.start("fast", Stepper(1.0))
        group.start("slow", Stepper(100.0, lambda n: time.sleep(0.3)))
        return 2

    history = serve(asynchronous(2, 2, staleness="constant"), start, num_rounds=1)
    np.testing.assert_allclose(history.parameters[0], [50.5], rtol=1e-12)
    assert history.rounds[0].fit_results == 2


def test_a_buffer_larger_than_the_clients_says_so() -> None:
    with serving(client_wait_timeout=0.3) as transport:
        group = Clients(f"127.0.0.1:{transport.port}")
        try:
            two_alike(group)
            transport.wait_for_clients(2, WAIT_S)
            with pytest.raises(
                roost.ConfigurationError, match=r"\(2 connected\): .* buffer_size = 3"
            ):
                roost.run_rounds(
                    asynchronous(2, 3), transport, roost.ServerConfig(num_rounds=1), real_time=True
                )
        finally:
            transport.close(grace=1.0)
            group.stop_all()


class Misshapen(Stepper):
    def fit(self, parameters, config):
        return [np.zeros(3)], 1, {}


def test_a_misshapen_update_is_rejected_as_in_a_synchronous_round() -> None:
    def start(group: Clients) -> int:
        group.start("a", Stepper(1.0, lambda n: time.sleep(0.05)))
        group.start("misshapen", Misshapen(0.0))
        return 2

    history = serve(asynchronous(2, 1, staleness="constant"), start, num_rounds=4)
    failed = [client for r in history.rounds for client in r.failed_clients]
    assert failed and set(failed) == {"misshapen"}
    assert history.parameters[0].shape == (1,)
    np.testing.assert_allclose(history.parameters[0], [4.0 - len(failed)], rtol=1e-12)


def test_the_round_timeout_applies_to_each_task() -> None:
    def stall(n: int) -> None:
        if n == 1:
            time.sleep(0.6)

    def start(group: Clients) -> int:
        group.start("a", Stepper(1.0, lambda n: time.sleep(0.2)))
        group.start("stalled", Stepper(100.0, stall))
        return 2

    strategy = asynchronous(2, 1, staleness="constant")
    history = serve(strategy, start, num_rounds=3, round_timeout=0.3)
    failed = [client for r in history.rounds for client in r.failed_clients]
    assert failed == ["stalled"]
    # Once, 0.3 s after it was sent work (before a's second update, 0.4 s), a going on meanwhile.
    np.testing.assert_allclose(history.parameters[0], [2.0], rtol=1e-12)


def two_alike(group: Clients) -> int:
    group.start("a", Stepper(1.0))
    group.start("b", Stepper(1.0))
    return 2


def test_central_dp_is_accounted_per_aggregation_as_in_the_simulation() -> None:
    def dp_strategy() -> roost.FedBuff:
        central = CentralDP(1.0, 0.5, expected_clients=2, num_clients=2)
        return asynchronous(2, 2, aggregator=Mean(), update_transforms=[central])

    deployed = serve(dp_strategy(), two_alike, num_rounds=3)
    simulated = roost.run_simulation(
        lambda context: Stepper(1.0), 2, strategy=dp_strategy(), config=roost.ServerConfig(3)
    )
    assert len(deployed.privacy.epsilon) == 3 and deployed.privacy.epsilon[0][1] > 0
    assert deployed.privacy.epsilon == simulated.privacy.epsilon  # one release per aggregation
    assert all(r.withheld for r in deployed.rounds)  # who arrived when stays unpublished


def test_a_resumed_deployment_sends_the_work_in_flight_again() -> None:
    """Tasks in flight are not checkpointed: the resumed server sends every client work from
    the last saved version, so its first arrival is fresh (staleness 0)."""
    saved: list[roost.ServerState] = []
    serve(asynchronous(2, 1), two_alike, num_rounds=2, on_round_end=saved.append)
    assert [state.server_round for state in saved] == [1, 2]
    assert saved[-1].strategy_state["own"]["in_flight"] == []
    history = serve(asynchronous(2, 1), two_alike, num_rounds=4, resume_from=saved[-1])
    assert [r.server_round for r in history.rounds] == [1, 2, 3, 4]
    assert history.measurements["staleness_max"][2] == (3, 0)
    # Constant step 1 per arrival: 1 × (1 + s)^-1/2 for each of the four versions' arrival.
    weights = [(1 + s) ** -0.5 for _, s in history.measurements["staleness_max"]]
    np.testing.assert_allclose(history.parameters[0], [sum(weights)], rtol=1e-12)


@pytest.mark.slow
def test_roost_server_runs_fedbuff_with_roost_clients(tmp_path) -> None:
    address = f"127.0.0.1:{free_port()}"
    flags = ["--strategy", "fedbuff", "--concurrency", "2", "--buffer-size", "1", "--rounds", "3"]
    with processes(tmp_path) as run:
        server = start_demo_server(run, address, 2, *flags, "--state", "state")
        wait_all(run, server, start_clients(run, address, 2))
    history = json.loads((tmp_path / "out" / "history.json").read_text())
    assert [r["server_round"] for r in history["rounds"]] == [1, 2, 3]  # versions
    assert [r["fit_results"] for r in history["rounds"]] == [1, 1, 1]  # one arrival each
    assert len(history["measurements"]["staleness_max"]) == 3
    assert (tmp_path / "state" / "state.sqlite").exists()  # checkpointed after each one
