"""Node states (`Context.state`) are recorded with every round, so a resumed simulation gives its
stateful clients back what they kept and ends exactly as a run never interrupted."""

from __future__ import annotations

import shutil
import sqlite3
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import test_resume_simulation as resume_simulation
from test_resume_simulation import StopAfter

import roost
from roost.client.client import client_rng
from roost.core.config_keys import SERVER_ROUND
from roost.engines.node_states import NodeStates
from roost.engines.sequential import SequentialEngine
from roost.errors import ConfigurationError
from roost.server.loop import ServerConfig, run_rounds
from roost.server.state import DATABASE_NAME, StateError, StateStore, decode_tree, encode_tree

NUM_CLIENTS = 4
ROUNDS = 5


class KeepingClient(roost.Client):
    """Least squares by SGD with a momentum, a step count and a decay kept in `context.state`:
    every update depends on what the node kept from its earlier rounds."""

    def __init__(self, context: roost.Context) -> None:
        self.partition_id = context.partition_id
        self.state = context.state
        rng = np.random.default_rng([11, self.partition_id])
        self.x = rng.normal(size=(24, 3))
        self.y = self.x @ np.array([1.0, -2.0, 0.5]) + 0.1 * rng.normal(size=24)

    def get_parameters(self, config):
        return [np.zeros(3)]

    def fit(self, parameters, config):
        server_round = int(config[SERVER_ROUND])
        visits = self.state.get("visits", 0) + 1
        momentum = self.state.get("momentum", np.zeros(3, np.float32))
        decay = self.state.get("decay", np.float32(0.9))
        w = parameters[0].copy()
        for index in client_rng(0, server_round, self.partition_id).permutation(len(self.y))[:8]:
            gradient = (self.x[index] @ w - self.y[index]) * self.x[index]
            momentum = decay * momentum + gradient.astype(np.float32)
            w -= 0.05 * momentum / visits
        self.state["visits"] = visits
        self.state["momentum"] = momentum
        self.state["decay"] = np.float32(decay * np.float32(0.97))
        seen = self.state.get("log", {}).get("rounds", ())
        self.state["log"] = {"rounds": (*seen, server_round), "$tag": b"\x00kept"}
        return [w], len(self.y), {"visits": visits}

    def evaluate(self, parameters, config):
        self.state["evaluations"] = self.state.get("evaluations", 0) + 1
        return float(np.mean((self.x @ parameters[0] - self.y) ** 2)), len(self.y), {}


def client_fn(context: roost.Context) -> KeepingClient:
    return KeepingClient(context)


def round_config(server_round: int) -> dict[str, int]:
    return {SERVER_ROUND: server_round}


def strategy() -> roost.FedAvg:
    # Two clients per phase: a sum of two is the same in any order, so the process and Ray
    # engines, whose results arrive in any order, give the same bits every run.
    return roost.FedAvg(
        fraction_fit=0.5,
        fraction_evaluate=0.5,
        min_evaluate_clients=2,
        on_fit_config_fn=round_config,
    )


def simulate(state_dir, rounds=ROUNDS, **options):
    """A seeded run of KeepingClient (see `test_resume_simulation.simulate` for `options`)."""
    return resume_simulation.simulate(
        state_dir, rounds, strategy=strategy(), fn=client_fn, **options
    )


def same_tree(a, b) -> bool:
    """Equal values of the very same types (arrays: dtype, shape and bytes)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same_tree(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same_tree(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, np.ndarray | np.generic):
        return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    return a == b


def final(state_dir: Path) -> tuple[list[bytes], dict]:
    """The last recorded round's model bytes and node states."""
    saved = StateStore(state_dir).load()
    return [p.tobytes() for p in saved.parameters], saved.node_states


def assert_resumes_exactly(tmp_path: Path, **options) -> None:
    """N rounds straight == stopped after 2 and resumed: model, History and node states."""
    whole = simulate(tmp_path / "whole", **options)
    with pytest.raises(StopAfter):
        simulate(tmp_path / "cut", stop_after=2, **options)
    assert StateStore(tmp_path / "cut").load().node_states  # the clients did keep something
    resumed = simulate(tmp_path / "cut", resume=True, **options)
    assert [p.tobytes() for p in resumed.parameters] == [p.tobytes() for p in whole.parameters]
    assert resumed.to_dict() == whole.to_dict()
    model, nodes = final(tmp_path / "cut")
    whole_model, whole_nodes = final(tmp_path / "whole")
    assert model == whole_model
    assert same_tree(nodes, whole_nodes)


@pytest.mark.parametrize("warm", [False, True], ids=["cold", "warm"])
def test_sequential_engine_resumes_node_states_exactly(tmp_path, warm):
    assert_resumes_exactly(tmp_path, warm_clients=warm)


@pytest.mark.slow
@pytest.mark.parametrize("warm", [False, True], ids=["cold", "warm"])
def test_process_engine_resumes_node_states_exactly(tmp_path, warm):
    assert_resumes_exactly(
        tmp_path, engine="process", engine_options={"max_workers": 2}, warm_clients=warm
    )


def test_the_recorded_node_states_are_what_the_clients_kept(tmp_path):
    simulate(tmp_path, 3)
    nodes = StateStore(tmp_path).load().node_states
    assert sorted(nodes, key=int) == list(nodes)  # in node order
    fitted = [state for state in nodes.values() if "visits" in state]
    assert sum(state["visits"] for state in fitted) == 2 * 3  # two fits a round
    for state in fitted:
        assert type(state["visits"]) is int and state["visits"] == len(state["log"]["rounds"])
        assert state["momentum"].dtype == np.float32 and state["momentum"].shape == (3,)
        assert type(state["decay"]) is np.float32
        assert type(state["log"]["rounds"]) is tuple and state["log"]["$tag"] == b"\x00kept"
    assert sum(state.get("evaluations", 0) for state in nodes.values()) == 2 * 3


def test_without_its_node_states_the_resumed_run_goes_elsewhere(tmp_path):
    # Control: the comparisons above really depend on the node states being restored.
    whole = simulate(None)
    with pytest.raises(StopAfter):
        simulate(tmp_path, stop_after=2)
    with sqlite3.connect(tmp_path / DATABASE_NAME) as db:
        db.execute("UPDATE node_states SET states = '{}'")
    resumed = simulate(tmp_path, resume=True)
    assert not np.allclose(resumed.parameters[0], whole.parameters[0])


def test_a_checkpoint_taken_while_the_run_went_on_resumes_to_the_same_end(tmp_path):
    # The directory as a kill after round 2 would have left it, copied while the run went on.
    def copy_after_round_2(state: roost.ServerState) -> None:
        if state.server_round == 2:
            shutil.copytree(tmp_path / "running", tmp_path / "killed")

    whole = simulate(tmp_path / "running", then=copy_after_round_2)
    assert StateStore(tmp_path / "killed").load().server_round == 2
    resumed = simulate(tmp_path / "killed", resume=True)
    assert [p.tobytes() for p in resumed.parameters] == [p.tobytes() for p in whole.parameters]
    assert same_tree(final(tmp_path / "killed")[1], final(tmp_path / "running")[1])


def test_a_garbled_node_state_row_falls_back_to_the_round_before(tmp_path, caplog):
    simulate(tmp_path, 3)  # the store keeps rounds 2 and 3
    with sqlite3.connect(tmp_path / DATABASE_NAME) as db:
        db.execute("UPDATE node_states SET states = '{not json' WHERE server_round = 3")
    loaded = StateStore(tmp_path).load()
    assert loaded.server_round == 2 and loaded.node_states
    assert "state of round 3 unusable" in caplog.text and "damaged" in caplog.text
    with sqlite3.connect(tmp_path / DATABASE_NAME) as db:  # an array that is not in the file
        db.execute("""UPDATE node_states SET states = '{"0": {"m": {"$array": 99}}}'""")
    with pytest.raises(StateError, match="no recorded round"):
        StateStore(tmp_path).load()


def test_a_node_state_that_cannot_be_saved_is_one_clear_error(tmp_path):
    class Opaque(KeepingClient):
        def fit(self, parameters, config):
            self.state["model"] = object()
            return super().fit(parameters, config)

    def opaque(context):
        return Opaque(context)

    def run(state_dir):
        return roost.run_simulation(
            opaque,
            2,
            strategy=roost.FedAvg(on_fit_config_fn=round_config),
            config=roost.ServerConfig(num_rounds=2),
            state_dir=state_dir,
        )

    run(None)  # without a state directory nothing is saved, and anything may be kept
    with pytest.raises(ConfigurationError) as caught:
        run(tmp_path)
    message = str(caught.value)
    assert "\n" not in message
    assert "node 0's Context.state['model'] is a object" in message
    assert "run without a state directory" in message


def test_a_resume_that_cannot_restore_node_states_is_refused(tmp_path):
    simulate(tmp_path, 2)
    saved = StateStore(tmp_path).load()
    # A transport whose nodes' states the loop cannot reach, as the vectorized engine's.
    with pytest.raises(ConfigurationError, match="resume on the sequential, process or ray"):
        run_rounds(
            strategy(), SequentialEngine(client_fn, NUM_CLIENTS), ServerConfig(4), resume_from=saved
        )


def test_a_directory_recorded_before_node_states_is_read_and_upgraded(tmp_path):
    simulate(tmp_path, 2)
    with sqlite3.connect(tmp_path / DATABASE_NAME) as db:  # as roost wrote it before
        db.execute("DROP TABLE node_states")
        db.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    loaded = StateStore(tmp_path).load()
    assert loaded.server_round == 2 and loaded.node_states == {}
    with sqlite3.connect(tmp_path / DATABASE_NAME) as db:
        version = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    assert version == ("2",)


def test_snapshot_and_restore_copy_and_keep_the_live_dicts():
    states = NodeStates()
    live = states.for_node("1")
    live.update({"w": np.arange(3.0), "roost.secagg": object(), "n": [1, (2, 3)]})
    states.for_node("0")  # empty: not recorded
    snapshot = states.snapshot()
    assert list(snapshot) == ["1"] and "roost.secagg" not in snapshot["1"]  # one round's secrets
    live["w"] += 1.0
    np.testing.assert_array_equal(snapshot["1"]["w"], [0.0, 1.0, 2.0])
    states.for_node("2")["old"] = 1
    states.restore(snapshot)
    assert states.for_node("1") is live  # a warm client holding it sees the restored state
    np.testing.assert_array_equal(live["w"], [0.0, 1.0, 2.0])
    assert live["w"] is not snapshot["1"]["w"] and live["n"] == [1, (2, 3)]
    assert states.for_node("2") == {}


# A `roost new` numpy project whose client also keeps a momentum of its updates in
# `context.state` and sends the model moved by it: its updates depend on the node's past rounds.
STATEFUL_CLIENT = """
import numpy as np


class StatefulClient(AppClient):
    def __init__(self, context):
        super().__init__(context)
        self.state = context.state

    def fit(self, parameters, config):
        weights, num_examples, metrics = super().fit(parameters, config)
        kept = self.state.get("momentum", [np.zeros_like(p) for p in parameters])
        momentum = [0.5 * m + (w - p) for m, w, p in zip(kept, weights, parameters)]
        self.state["momentum"] = momentum
        self.state["fits"] = self.state.get("fits", 0) + 1
        return [p + m for p, m in zip(parameters, momentum)], num_examples, metrics


def client_fn(context):
    return StatefulClient(context)
"""


@pytest.mark.slow
def test_roost_run_resumes_a_projects_node_states(tmp_path, monkeypatch, capsys):
    from roost.cli import main
    from roost.cli.new import create_project

    monkeypatch.chdir(tmp_path)
    create_project(tmp_path / "keeper", "numpy")
    client_app = tmp_path / "keeper" / "keeper" / "client_app.py"
    client_app.write_text(client_app.read_text() + STATEFUL_CLIENT)

    def run(rounds: int, *args: str) -> int:
        config = f"num-rounds={rounds}"
        return main(["run", "keeper", "--run-config", config, "num-clients=4", *args, "--quiet"])

    assert run(4, "--state", "whole", "--no-plot", "--out", "whole-out") == 0
    assert run(2, "--state", "cut") == 0
    assert run(4, "--state", "cut", "--resume", "--no-plot", "--out", "resumed-out") == 0
    capsys.readouterr()
    model, nodes = final(tmp_path / "cut")
    whole_model, whole_nodes = final(tmp_path / "whole")
    assert model == whole_model and same_tree(nodes, whole_nodes)
    assert sum(state["fits"] for state in nodes.values()) > 4  # nodes fitted in several rounds
    for name in ("whole-out", "resumed-out"):
        with np.load(tmp_path / name / "model.npz", allow_pickle=False) as archive:
            assert [archive[k].tobytes() for k in sorted(archive.files)] == whole_model


def test_exact_trees_keep_numpy_scalar_types_and_refuse_container_subclasses():
    tree = {"i": np.int16(3), "b": np.bool_(True), "f": np.float32(0.1), "n": 7, "x": 0.25}
    arrays: list[np.ndarray] = []
    assert same_tree(decode_tree(encode_tree(tree, arrays, exact=True), arrays), tree)
    with pytest.raises(ConfigurationError, match="is a OrderedDict"):
        encode_tree({"o": OrderedDict()}, [], exact=True)


def test_a_flower_apps_node_states_resume_with_it(tmp_path):
    """The Flower numpy app counts, in each node's `context.state`, the rounds it trained in and
    reports the count: after a resume the count goes on from the recorded state."""
    from roost.compat.flwr.project import run_project

    app = Path(__file__).parent / "flower_apps" / "numpy_app"

    def run(rounds: int, **state) -> roost.History:
        return run_project(
            app, num_nodes=2, seed=0, run_config_overrides={"num-server-rounds": rounds}, **state
        )

    straight = run(3)
    assert [value for _, value in straight.metrics_distributed_fit["rounds"]] == [1, 2, 3]
    run(2, state_dir=tmp_path / "state")
    resumed = run(3, state_dir=tmp_path / "state", resume=True)
    assert [value for _, value in resumed.metrics_distributed_fit["rounds"]] == [1, 2, 3]
    for got, want in zip(resumed.parameters, straight.parameters, strict=True):
        np.testing.assert_array_equal(got, want)
