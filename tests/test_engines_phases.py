"""A round may hold any number of exchanges: every engine answers fit, evaluate, evaluate, fit."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

import roost
from roost.core.types import EvaluateIns, EvaluateRes, FitIns, FitRes
from roost.engines import make_engine

NUM_CLIENTS = 4


class PhaseClient(roost.Client):
    """Fit adds (1 + partition); evaluate reports the parameters' sum, its phase and its process."""

    def __init__(self, partition_id: int, run_config: dict) -> None:
        self.partition_id = partition_id
        self.slow = run_config.get("slow")

    def fit(self, parameters, config):
        if self.partition_id == self.slow:
            time.sleep(60)
        step = 1.0 + self.partition_id
        return [p + step for p in parameters], self.partition_id + 1, {"pid": os.getpid()}

    def evaluate(self, parameters, config):
        loss = float(parameters[0].sum()) + self.partition_id
        return loss, 1, {"phase": config["phase"], "pid": os.getpid()}


def phase_client_fn(context: roost.Context) -> PhaseClient:
    return PhaseClient(context.partition_id, dict(context.run_config))


ENGINE_OPTIONS = {"sequential": {}, "process": {"max_workers": 2}}


@pytest.mark.parametrize("engine", list(ENGINE_OPTIONS))
def test_fit_evaluate_evaluate_fit_with_the_same_clients(engine):
    transport = make_engine(engine, phase_client_fn, NUM_CLIENTS, **ENGINE_OPTIONS[engine])
    clients = transport.wait_for_clients(NUM_CLIENTS)
    start = [np.zeros(3)]
    try:
        first_fit = dict(transport.run([(c, FitIns(start, {})) for c in clients], None))
        evaluations = [
            dict(transport.run([(c, EvaluateIns(start, {"phase": phase})) for c in clients], 5.0))
            for phase in ("first", "second")
        ]
        second_fit = dict(transport.run([(c, FitIns(start, {})) for c in clients], None))
    finally:
        transport.close()
    for outcomes in (first_fit, *evaluations, second_fit):
        assert sorted(outcomes) == clients  # every client once per exchange
    for client_id in clients:
        k = int(client_id)
        for fit in (first_fit, second_fit):
            assert isinstance(fit[client_id], FitRes)
            np.testing.assert_array_equal(fit[client_id].parameters[0], np.full(3, 1.0 + k))
            assert fit[client_id].num_examples == k + 1
        for phase, outcomes in zip(("first", "second"), evaluations, strict=True):
            result = outcomes[client_id]
            assert isinstance(result, EvaluateRes)
            assert (result.loss, result.metrics["phase"]) == (float(k), phase)
    pids = {r.metrics["pid"] for o in (first_fit, *evaluations, second_fit) for r in o.values()}
    if engine == "process":
        assert len(pids) == 2 and os.getpid() not in pids  # one pool, kept across exchanges
    else:
        assert pids == {os.getpid()}


def test_a_new_exchange_abandons_what_is_left_of_the_last_one():
    transport = make_engine("process", phase_client_fn, 2, run_config={"slow": 1}, max_workers=2)
    start = [np.zeros(3)]
    try:
        fit = transport.run([("0", FitIns(start, {})), ("1", FitIns(start, {}))], None)
        client_id, result = next(fit)  # client 1 is still training (for a minute)
        assert client_id == "0" and isinstance(result, FitRes)
        began = time.monotonic()
        cohort = [
            ("0", EvaluateIns(start, {"phase": "next"})),
            ("1", EvaluateIns(start, {"phase": "next"})),
        ]
        outcomes = dict(transport.run(cohort, None))
        assert time.monotonic() - began < 30  # client 1's worker was replaced, not waited for
        assert {c: type(r) for c, r in outcomes.items()} == {"0": EvaluateRes, "1": EvaluateRes}
        assert list(fit) == []  # the abandoned exchange yields nothing more
    finally:
        transport.close()


def tiny_model():
    from torch import nn

    return nn.Sequential(nn.Linear(4, 3))


class TinyData:
    def __call__(self, partition_id: int, num_partitions: int):
        rng = np.random.default_rng(partition_id)
        n = 5 + 3 * partition_id
        return rng.normal(size=(n, 4)).astype(np.float32), rng.integers(0, 3, n)


def test_the_vectorized_engine_answers_every_exchange_like_the_sequential_one():
    pytest.importorskip("torch")
    from roost.tasks import SGD, Task

    task = Task(model=tiny_model, data=TinyData(), optimizer=SGD(lr=0.1), batch_size=4)
    start = task.initial_parameters()
    answers = {}
    for engine in ("sequential", "vectorized"):
        transport = make_engine(engine, task, NUM_CLIENTS)
        clients = transport.wait_for_clients(NUM_CLIENTS)
        fit = [(c, FitIns(start, {"server_round": 1})) for c in clients]
        evaluate = [(c, EvaluateIns(start, {})) for c in clients]
        answers[engine] = [
            dict(transport.run(phase, None)) for phase in (fit, evaluate, evaluate, fit)
        ]
        transport.close()
    for expected, got in zip(answers["sequential"], answers["vectorized"], strict=True):
        assert sorted(got) == sorted(expected) == [str(k) for k in range(NUM_CLIENTS)]
        for client_id, result in expected.items():
            assert type(got[client_id]) is type(result)
            if isinstance(result, FitRes):
                for a, b in zip(result.parameters, got[client_id].parameters, strict=True):
                    np.testing.assert_allclose(a, b, atol=1e-6)
            else:
                assert got[client_id].loss == pytest.approx(result.loss, rel=1e-6)
