"""Engines are made by name from one registry, and give every client its partition's Context."""

from __future__ import annotations

import numpy as np
import pytest

import roost
from roost import engines
from roost.core.types import EvaluateIns, EvaluateRes
from roost.engines import EngineEntry, make_engine, register_engine
from roost.engines.sequential import SequentialEngine
from roost.errors import ConfigurationError


class ContextClient(roost.Client):
    """Reports the context it was built with, then spoils its run_config."""

    def __init__(self, context: roost.Context) -> None:
        self.context = context

    def evaluate(self, parameters, config):
        context = self.context
        seen = {
            "partition": context.partition_id,
            "num_partitions": context.num_partitions,
            "node": context.node_id,
            "flag": context.run_config["flag"],
            "node_config": f"{context.node_config['partition-id']}/"
            f"{context.node_config['num-partitions']}",
        }
        context.run_config["flag"] = "spoiled"  # must not reach the next client
        return 0.0, 1, seen


def context_client_fn(context: roost.Context) -> ContextClient:
    return ContextClient(context)


def test_for_partition_builds_a_partitions_context_with_its_own_run_config():
    run_config = {"flag": "original"}
    context = roost.Context.for_partition(2, 5, run_config=run_config)
    assert (context.partition_id, context.num_partitions, context.node_id) == (2, 5, "2")
    assert context.node_config == {"partition-id": 2, "num-partitions": 5}
    context.run_config["flag"] = "changed"
    assert run_config == {"flag": "original"}
    named = roost.Context.for_partition(0, 1, node_id="edge-7")
    assert (named.node_id, named.run_config) == ("edge-7", {})


@pytest.mark.parametrize("engine", ["sequential", "process"])
def test_every_client_gets_its_partitions_context(engine):
    options = {"max_workers": 1} if engine == "process" else {}
    transport = make_engine(
        engine, context_client_fn, 3, run_config={"flag": "original"}, **options
    )
    try:
        cohort = [(str(k), EvaluateIns([np.zeros(1)], {})) for k in (2, 0, 1, 2)]
        outcomes = list(transport.run(cohort, None))
    finally:
        transport.close()
    for (client_id, _), (answered_id, result) in zip(cohort, outcomes, strict=True):
        assert answered_id == client_id and isinstance(result, EvaluateRes)
        assert result.metrics == {
            "partition": int(client_id),
            "num_partitions": 3,
            "node": client_id,
            "flag": "original",
            "node_config": f"{client_id}/3",
        }


def test_the_pool_engines_keep_the_cohorts_order_unless_told_not_to():
    for options, expected in (({}, True), ({"in_order": False}, False)):
        transport = make_engine("process", context_client_fn, 2, max_workers=1, **options)
        try:  # workers start on the first exchange: nothing runs here
            assert transport.in_order is expected
        finally:
            transport.close()


def test_the_registry_makes_each_engine_by_name(monkeypatch):
    assert engines.ENGINES == ("sequential", "process", "ray", "vectorized")
    assert isinstance(make_engine("sequential", context_client_fn, 2), SequentialEngine)
    monkeypatch.setattr(engines, "_REGISTRY", dict(engines._REGISTRY))
    built = []

    def echo_engine(client_fn, num_clients, run_config, **options):
        built.append((client_fn, num_clients, run_config, options))
        return SequentialEngine(client_fn, num_clients, run_config)

    register_engine("echo", EngineEntry(echo_engine, options=("speed",)))
    transport = make_engine("echo", context_client_fn, 4, run_config={"a": 1}, speed=2)
    assert isinstance(transport, SequentialEngine)
    assert built == [(context_client_fn, 4, {"a": 1}, {"speed": 2})]
    with pytest.raises(ConfigurationError, match="already registered"):
        register_engine("process", EngineEntry(echo_engine))
    with pytest.raises(ConfigurationError, match=r"unknown option\(s\) colour for the echo"):
        make_engine("echo", context_client_fn, 4, colour="red")
    with pytest.raises(ConfigurationError, match=r"choose one of sequential, .*, echo"):
        make_engine("warp", context_client_fn, 4)


def test_the_vectorized_engine_is_refused_for_anything_but_a_task():
    with pytest.raises(ConfigurationError, match="roost Task"):
        make_engine("vectorized", context_client_fn, 4)
