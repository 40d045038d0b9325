"""Flower Message-API projects, files unchanged, run by roost: in simulation and over gRPC.

`tests/flower_apps/` holds three apps written as Flower's templates write them (NumPy, PyTorch
with a `state_dict`, Keras). Each runs through `run_project` (what `roost run DIR` calls) and as a
server plus two nodes (`serve_project` / `connect_project`) on a free local port; with every node
in every round, both give the same final model.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
from grpc_support import free_port

from roost.compat.flwr.project import connect_project, run_project, serve_project
from roost.errors import ConfigurationError

APPS = Path(__file__).resolve().parent / "flower_apps"
SRC = Path(__file__).resolve().parents[1] / "src"


def _free_address() -> str:
    return f"127.0.0.1:{free_port()}"


def run_over_grpc(directory: Path, num_nodes: int = 2, **server_options):
    """Serve `directory` and connect `num_nodes` nodes, all in threads; return the History."""
    address = _free_address()
    outcome: dict = {}

    def serve() -> None:
        try:
            outcome["history"] = serve_project(
                directory, server_address=address, client_wait_timeout=60, **server_options
            )
        except BaseException as error:  # reported below, in the test's thread
            outcome["error"] = error

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    nodes = [
        threading.Thread(
            target=connect_project,
            args=(directory,),
            kwargs={
                "server_address": address,
                "partition_id": index,
                "num_partitions": num_nodes,
                "reconnect_timeout": 30,
            },
            daemon=True,
        )
        for index in range(num_nodes)
    ]
    for node in nodes:
        node.start()
    server.join(120)
    for node in nodes:
        node.join(30)
    assert not server.is_alive() and not any(node.is_alive() for node in nodes)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["history"]


def _max_difference(first: list[np.ndarray], second: list[np.ndarray]) -> float:
    assert [a.shape for a in first] == [b.shape for b in second]
    return max(float(np.abs(a - b).max()) for a, b in zip(first, second, strict=True))


def test_numpy_app_simulates_with_its_project_settings(tmp_path: Path) -> None:
    history = run_project(APPS / "numpy_app", seed=0, out_dir=tmp_path)
    assert len(history.rounds) == 3  # num-server-rounds
    assert all(record.fit_results == 3 for record in history.rounds)  # num-supernodes
    assert [value for _, value in history.metrics_distributed_fit["rounds"]] == [1.0, 2.0, 3.0]
    losses = [loss for _, loss in history.losses_centralized]
    assert len(losses) == 4 and losses == sorted(losses, reverse=True)
    assert [value for _, value in history.metrics_centralized["loss"]] == losses
    assert np.abs(history.parameters[0]).sum() > 0
    assert (tmp_path / "history.json").is_file() and (tmp_path / "model.npz").is_file()


def test_run_config_overrides_and_node_count() -> None:
    history = run_project(
        APPS / "numpy_app", run_config_overrides="num-server-rounds=1 lr=0.1", num_nodes=2
    )
    assert len(history.rounds) == 1 and history.rounds[0].fit_results == 2
    with pytest.raises(ConfigurationError, match="not-a-key"):
        run_project(APPS / "numpy_app", run_config_overrides={"not-a-key": 1})


def test_numpy_app_over_grpc_matches_the_simulation() -> None:
    simulated = run_project(APPS / "numpy_app", num_nodes=2, seed=0)
    served = run_over_grpc(APPS / "numpy_app", num_nodes=2, seed=0)
    assert len(served.rounds) == 3 and all(r.fit_results == 2 for r in served.rounds)
    assert _max_difference(served.parameters, simulated.parameters) < 1e-9


def test_torch_app_with_a_state_dict_in_simulation_and_over_grpc() -> None:
    pytest.importorskip("torch")
    simulated = run_project(APPS / "torch_app", num_nodes=2, seed=0)
    assert [array.shape for array in simulated.parameters] == [(16, 4), (16,), (3, 16), (3,)]
    assert "eval_acc" in simulated.metrics_distributed
    served = run_over_grpc(APPS / "torch_app", num_nodes=2, seed=0)
    assert _max_difference(served.parameters, simulated.parameters) < 1e-6


@pytest.mark.slow
def test_numpy_app_on_the_process_engine_matches_sequential() -> None:
    sequential = run_project(APPS / "numpy_app", seed=0)
    pooled = run_project(
        APPS / "numpy_app", seed=0, engine="process", engine_options={"max_workers": 2}
    )
    assert _max_difference(pooled.parameters, sequential.parameters) < 1e-9


_KERAS_SCRIPT = """
import json, os, subprocess, sys, threading
sys.path.insert(0, {tests!r})
# The server app seeds with keras.utils.set_random_seed, which on torch imports TensorFlow (when
# installed) only to seed it: about 10 s. Keep it out of this process.
sys.modules["tensorflow"] = None
from test_flower_apps import APPS, _free_address, connect_project, run_project, serve_project
simulated = run_project(APPS / "keras_app", num_nodes=2, seed=0)
# Node 0 in this process (the server thread trains nothing) and node 1 through `roost client` in a
# process of its own: two Keras models training in threads of one process can disturb each
# other's global state, and a second client process would cost one more Keras start-up.
address = _free_address()
box = {{}}
server = threading.Thread(
    target=lambda: box.update(history=serve_project(
        APPS / "keras_app", server_address=address, client_wait_timeout=60, seed=0
    )),
    daemon=True,
)
server.start()
nodes = [
    subprocess.Popen([
        sys.executable, "-m", "roost.cli", "client", "--app", str(APPS / "keras_app"),
        "--server", address, "--partition-id", str(index), "--num-partitions", "2",
        "--reconnect-timeout", "60",
    ])
    for index in (1,)
]
try:
    connect_project(
        APPS / "keras_app", server_address=address, partition_id=0, num_partitions=2,
        reconnect_timeout=60,
    )
    server.join(300)
    codes = [node.wait(60) for node in nodes]
finally:
    for node in nodes:
        if node.poll() is None:
            node.kill()
served = box["history"]
print(json.dumps({{
    "shapes": [list(a.shape) for a in simulated.parameters],
    "rounds": [len(simulated.rounds), len(served.rounds)],
    "codes": codes,
    "difference": max(float(abs(a - b).max())
                      for a, b in zip(simulated.parameters, served.parameters)),
}}))
"""


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("keras") is None, reason="keras is not installed")
def test_keras_app_in_simulation_and_over_grpc() -> None:
    script = _KERAS_SCRIPT.format(tests=str(Path(__file__).resolve().parent))
    env = {**os.environ, "KERAS_BACKEND": "torch", "PYTHONPATH": str(SRC)}
    completed = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert report["shapes"] == [[4, 8], [8], [8, 2], [2]]
    assert report["rounds"] == [2, 2]
    assert report["codes"] == [0]
    assert report["difference"] < 1e-6


def _write_project(root: Path, server: str, client: str, **config: int) -> Path:
    package = root / "mini_app"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "server_app.py").write_text(textwrap.dedent(server))
    (package / "client_app.py").write_text(textwrap.dedent(client))
    values = "\n".join(f"{key} = {value}" for key, value in config.items())
    (root / "pyproject.toml").write_text(
        textwrap.dedent(
            """
            [tool.flwr.app.components]
            serverapp = "mini_app.server_app:app"
            clientapp = "mini_app.client_app:app"
            [tool.flwr.app.config]
            """
        )
        + values
    )
    return root


_LEGACY_CLIENT = """
    import numpy as np
    from flwr.client import ClientApp, NumPyClient
    from flwr.common import Context, MetricRecord

    class Client(NumPyClient):
        def __init__(self, partition_id, state):
            self.partition_id = partition_id
            self.state = state  # the node's RecordDict: it counts the rounds this node trained

        def fit(self, parameters, config):
            seen = self.state.metric_records.get("seen", MetricRecord({"rounds": 0}))
            seen["rounds"] += 1
            self.state["seen"] = seen
            return [parameters[0] + self.partition_id + 1], 10, {"rounds": seen["rounds"]}

        def evaluate(self, parameters, config):
            return 0.0, 10, {}

    def client_fn(context: Context):
        return Client(context.node_config["partition-id"], context.state).to_client()

    app = ClientApp(client_fn=client_fn)
"""

_LEGACY_SERVER = """
    import numpy as np
    from flwr.common import Context, ndarrays_to_parameters
    from flwr.server import ServerApp, ServerAppComponents, ServerConfig
    from flwr.server.strategy import FedAvg

    def server_fn(context: Context):
        strategy = FedAvg(
            initial_parameters=ndarrays_to_parameters([np.zeros(2)]),
            fit_metrics_aggregation_fn=lambda pairs: {
                "rounds": min(metrics.get("rounds", 0) for _, metrics in pairs)
            },
        )
        return ServerAppComponents(
            strategy=strategy, config=ServerConfig(num_rounds=context.run_config["rounds"])
        )

    app = ServerApp(server_fn=server_fn)
"""

_MESSAGE_SERVER = """
    from flwr.app import Message, RecordDict
    from flwr.serverapp import ServerApp

    app = ServerApp()

    @app.main()
    def main(grid, context):
        messages = [Message(RecordDict(), node, "train") for node in grid.get_node_ids()]
        grid.send_and_receive(messages)
"""

_MESSAGE_CLIENT = """
    from flwr.clientapp import ClientApp

    app = ClientApp()
"""


def test_a_classic_server_fn_project_runs_on_the_round_loop(tmp_path: Path) -> None:
    project = _write_project(tmp_path / "classic", _LEGACY_SERVER, _LEGACY_CLIENT, rounds=2)
    history = run_project(project, num_nodes=2)
    assert len(history.rounds) == 2
    np.testing.assert_allclose(history.parameters[0], [3.0, 3.0])  # two rounds of mean(1, 2)
    # Each node's client is built afresh every round; its context.state carried the count.
    assert history.metrics_distributed_fit["rounds"] == [(1, 1), (2, 2)]


def test_a_classic_clients_flower_state_is_checkpointed_and_resumed(tmp_path: Path) -> None:
    project = _write_project(tmp_path / "classic", _LEGACY_SERVER, _LEGACY_CLIENT, rounds=3)
    state = tmp_path / "state"
    run_project(project, num_nodes=2, run_config_overrides={"rounds": 2}, state_dir=state)
    resumed = run_project(project, num_nodes=2, state_dir=state, resume=True)
    assert resumed.metrics_distributed_fit["rounds"][-1] == (3, 3)


def test_project_mistakes_get_clear_errors(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("FLWR_HOME", str(tmp_path / "no-flower-config"))
    mixed = _write_project(tmp_path / "mixed", _LEGACY_SERVER, _MESSAGE_CLIENT, rounds=1)
    with pytest.raises(ConfigurationError, match="different APIs"):
        run_project(mixed, num_nodes=2)
    # A main() may drive client_fn nodes only through flwr.server.workflow, not with messages.
    legacy_nodes = _write_project(tmp_path / "nodes", _MESSAGE_SERVER, _LEGACY_CLIENT, rounds=1)
    with pytest.raises(ConfigurationError, match="DefaultWorkflow"):
        run_project(legacy_nodes, num_nodes=2)
    with pytest.raises(ConfigurationError, match="how many nodes"):
        run_project(mixed)
    with pytest.raises(ConfigurationError, match=r"no pyproject\.toml"):
        run_project(tmp_path)
    (tmp_path / "pyproject.toml").write_text("[tool.flwr.app.components]\nserverapp = 'a:b'\n")
    with pytest.raises(ConfigurationError, match="lacks clientapp"):
        run_project(tmp_path)


def test_served_project_records_rounds_for_a_restart(tmp_path: Path) -> None:
    from roost.server.state import StateStore

    state = tmp_path / "state"
    history = run_over_grpc(APPS / "numpy_app", num_nodes=2, seed=0, state_dir=state)
    saved = StateStore(state).load()
    assert saved is not None and saved.server_round == 3
    np.testing.assert_array_equal(saved.parameters[0], history.parameters[0])
    with pytest.raises(ConfigurationError, match="resume"):
        serve_project(APPS / "numpy_app", server_address=_free_address(), state_dir=state)
    resumed = serve_project(
        APPS / "numpy_app", server_address=_free_address(), state_dir=state, resume=True
    )
    np.testing.assert_array_equal(resumed.parameters[0], history.parameters[0])  # nothing left


def test_a_served_project_reports_every_round(tmp_path: Path) -> None:
    rounds: list[int] = []
    run_over_grpc(
        APPS / "numpy_app", num_nodes=2, on_round_end=lambda s: rounds.append(s.server_round)
    )
    assert rounds == [1, 2, 3]


def test_node_count_from_flowers_own_configuration_file(tmp_path: Path, monkeypatch) -> None:
    project = _write_project(tmp_path / "p", _LEGACY_SERVER, _LEGACY_CLIENT, rounds=1)
    home = tmp_path / "flwr-home"
    home.mkdir()
    (home / "config.toml").write_text(
        '[superlink]\ndefault = "local"\n[superlink.local]\naddress = ":local:"\n'
        "options.num-supernodes = 4\n"
    )
    monkeypatch.setenv("FLWR_HOME", str(home))
    assert run_project(project).rounds[0].fit_results == 4
