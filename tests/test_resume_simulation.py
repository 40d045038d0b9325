"""Resumable simulations: a run stopped after any round and resumed ends with the same model."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import roost
from roost.errors import ConfigurationError
from roost.server.state import StateStore

NUM_CLIENTS = 4
SRC = Path(__file__).resolve().parents[1] / "src"


class LinearClient(roost.Client):
    """Least squares by seeded SGD: deterministic given (round, partition), like a real app."""

    def __init__(self, partition_id: int, num_features: int = 3) -> None:
        rng = np.random.default_rng([7, partition_id])
        self.partition_id = partition_id
        self.num_features = num_features
        self.x = rng.normal(size=(30, num_features))
        self.y = self.x @ np.arange(1.0, num_features + 1) + 0.1 * rng.normal(size=30)

    def get_parameters(self, config):
        return [np.zeros(self.num_features)]

    def fit(self, parameters, config):
        rng = np.random.default_rng([int(config["server_round"]), self.partition_id])
        w = parameters[0].copy()
        for index in rng.permutation(len(self.y)):
            w -= 0.01 * (self.x[index] @ w - self.y[index]) * self.x[index]
        return [w], len(self.y), {}

    def evaluate(self, parameters, config):
        return float(np.mean((self.x @ parameters[0] - self.y) ** 2)), len(self.y), {}


def client_fn(context: roost.Context) -> LinearClient:
    return LinearClient(context.partition_id)


class StopAfter(Exception):
    """Raised from on_round_end: the run is cut short as a kill would cut it."""


def round_config(server_round: int) -> dict[str, int]:
    return {"server_round": server_round}


def simulate(
    state_dir,
    rounds,
    *,
    resume=False,
    strategy=None,
    stop_after=None,
    fn=client_fn,
    then=None,
    **options,
):
    """A seeded run; `then(state)` after every round; `options` for `run_simulation`."""

    def stop(state: roost.ServerState) -> None:
        if then is not None:
            then(state)
        if stop_after is not None and state.server_round == stop_after:
            raise StopAfter

    strategy = strategy if strategy is not None else roost.FedAvg(fraction_fit=0.5)
    strategy.on_fit_config_fn = round_config
    history = roost.run_simulation(
        fn,
        NUM_CLIENTS,
        strategy=strategy,
        config=roost.ServerConfig(num_rounds=rounds),
        seed=3,
        state_dir=state_dir,
        resume=resume,
        on_round_end=stop,
        **options,
    )
    assert all(record.fit_failures == 0 for record in history.rounds)
    return history


def test_a_stopped_run_resumes_to_the_same_model_and_history(tmp_path):
    whole = simulate(None, 5)
    with pytest.raises(StopAfter):
        simulate(tmp_path / "state", 5, stop_after=2)
    assert StateStore(tmp_path / "state").load().server_round == 2
    resumed = simulate(tmp_path / "state", 5, resume=True)
    assert [p.tobytes() for p in resumed.parameters] == [p.tobytes() for p in whole.parameters]
    assert resumed.losses_distributed == whole.losses_distributed
    assert [r.server_round for r in resumed.rounds] == [1, 2, 3, 4, 5]


def test_a_server_optimizer_state_is_resumed_too(tmp_path):
    def adam():
        return roost.FedAdam(initial_parameters=[np.zeros(3)], eta=0.1)

    whole = simulate(None, 4, strategy=adam())
    with pytest.raises(StopAfter):
        simulate(tmp_path, 4, strategy=adam(), stop_after=1)
    resumed = simulate(tmp_path, 4, strategy=adam(), resume=True)
    np.testing.assert_array_equal(resumed.parameters[0], whole.parameters[0])


def test_resuming_a_finished_run_with_as_many_rounds_changes_nothing(tmp_path):
    first = simulate(tmp_path, 3)
    again = simulate(tmp_path, 3, resume=True)
    np.testing.assert_array_equal(again.parameters[0], first.parameters[0])


def one_line_error(call) -> str:
    with pytest.raises(ConfigurationError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_resuming_with_fewer_rounds_than_done_is_refused(tmp_path):
    simulate(tmp_path, 6)
    message = one_line_error(lambda: simulate(tmp_path, 3, resume=True))
    assert "records 6 completed rounds, more than the 3 asked for" in message


@pytest.mark.parametrize(
    "other",
    [
        lambda: roost.FedAdam(fraction_fit=0.5),  # another state tree: the loop's check
        lambda: roost.FedProx(fraction_fit=0.5, proximal_mu=0.1),  # the same tree
    ],
)
def test_resuming_with_another_strategy_is_refused(tmp_path, other):
    simulate(tmp_path, 2)
    message = one_line_error(lambda: simulate(tmp_path, 4, resume=True, strategy=other()))
    assert "FedAvg" in message and "new state directory" in message


def test_resuming_with_a_differently_shaped_model_is_refused(tmp_path):
    simulate(tmp_path, 2)

    def wider(context: roost.Context) -> LinearClient:
        return LinearClient(context.partition_id, num_features=5)

    message = one_line_error(lambda: simulate(tmp_path, 4, resume=True, fn=wider))
    assert "different model" in message and "(5,)" in message


def test_state_directory_rules(tmp_path):
    assert "needs a state directory" in one_line_error(lambda: simulate(None, 2, resume=True))
    simulate(tmp_path, 2)
    assert "--resume" in one_line_error(lambda: simulate(tmp_path, 4))
    # Resuming what was never recorded is refused, as on the server (nothing is deleted).
    assert "nothing to resume" in one_line_error(
        lambda: simulate(tmp_path / "empty", 2, resume=True)
    )


SCRIPT = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    import roost
    sys.path.insert(0, sys.argv[3])
    from test_resume_simulation import LinearClient, NUM_CLIENTS

    class Slow(LinearClient):
        def fit(self, parameters, config):
            time.sleep(float(sys.argv[4]))
            return super().fit(parameters, config)

    strategy = roost.FedAvg(fraction_fit=0.5, on_fit_config_fn=lambda r: {"server_round": r})
    history = roost.run_simulation(
        lambda context: Slow(context.partition_id), NUM_CLIENTS,
        strategy=strategy, config=roost.ServerConfig(num_rounds=6),
        seed=3, state_dir=sys.argv[1], resume=sys.argv[5] == "resume",
    )
    assert all(record.fit_failures == 0 for record in history.rounds)
    np.save(sys.argv[2], history.parameters[0])
    """
)


@pytest.mark.slow
def test_a_killed_process_resumes_to_a_byte_identical_model(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    tests_dir = str(Path(__file__).parent)

    def command(state: Path, out: Path, sleep: str, resume: str = "new") -> list[str]:
        return [sys.executable, str(script), str(state), str(out), tests_dir, sleep, resume]

    subprocess.run(command(tmp_path / "a", tmp_path / "whole.npy", "0"), env=env, check=True)
    victim = subprocess.Popen(command(tmp_path / "b", tmp_path / "cut.npy", "0.15"), env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list((tmp_path / "b").glob("round-000002.npz")):
        time.sleep(0.02)
    os.kill(victim.pid, signal.SIGKILL)  # mid-round, without any chance to clean up
    victim.wait()
    assert not (tmp_path / "cut.npy").exists()
    resumed = command(tmp_path / "b", tmp_path / "cut.npy", "0", "resume")
    subprocess.run(resumed, env=env, check=True)
    assert np.load(tmp_path / "cut.npy").tobytes() == np.load(tmp_path / "whole.npy").tobytes()
