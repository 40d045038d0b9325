"""FedBuff and FedAsync over gRPC, in real time: a real server on 127.0.0.1 and real clients of
different speeds. Aggregations do not wait for slow clients; late updates count with their
staleness weight; a client that dies mid-task is a failure that does not stall the run."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
from grpc_support import serving

import roost
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
        fraction_evaluate=0.0,
        **options,
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


def serve(strategy, make_clients: Callable[[Clients], int], num_rounds: int) -> roost.History:
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
                roost.ServerConfig(num_rounds=num_rounds, round_timeout=WAIT_S),
                seed=0,
                real_time=True,
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
    doomed: list[GrpcClient] = []

    def die(n: int) -> None:
        doomed[0].stop()  # its connection ends with its update unsent
        time.sleep(0.1)
        raise RuntimeError("this client died")

    def start(group: Clients) -> int:
        group.start("a", Stepper(1.0))
        group.start("b", Stepper(1.0))
        doomed.append(group.start("doomed", Stepper(100.0, die)))
        return 3

    strategy = asynchronous(3, 2, min_available_clients=2, staleness="constant")
    started = time.monotonic()
    history = serve(strategy, start, num_rounds=3)
    assert time.monotonic() - started < WAIT_S  # not held up until the task's timeout
    failed = [client for r in history.rounds for client in r.failed_clients]
    assert failed == ["doomed"]
    assert sum(r.fit_results for r in history.rounds) == 3 * 2 - 1
    # Its update never counted: each buffer's mean was 1 (weights constant, failures left out).
    np.testing.assert_allclose(history.parameters[0], [3.0], rtol=1e-12)
