"""The process engine's workers: roost's own entry point (a script needs no main guard), their
environment (passive OpenMP waits, thread shares; the user's values win), and clear errors when
workers cannot start or keep dying."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path

import numpy as np
import pytest
from process_probes import (
    crashing_client_fn,
    environment_client_fn,
    lingering_client_fn,
    pid_recording_fedavg,
    probe_client_fn,
)

import roost
from roost.core.types import Failure, FitIns
from roost.engines import make_engine
from roost.engines.choice import default_engine, framework_of
from roost.engines.process import STOP_GRACE, ProcessEngine
from roost.engines.threads import use_passive_wait, worker_environment
from roost.errors import RoostError

SRC = str(Path(roost.__file__).resolve().parents[1])

# A notebook turned into a script: everything at module level, no `if __name__ == "__main__":`.
# Its client class lives in __main__; its data comes from a module beside it (imported by name).
UNGUARDED_SCRIPT = """
import numpy as np
import roost
from helpers import step_for

print("script body ran", flush=True)

class Client(roost.Client):
    def __init__(self, partition_id):
        self.partition_id = partition_id

    def fit(self, parameters, config):
        return [p + step_for(self.partition_id) for p in parameters], 1, {}

    def evaluate(self, parameters, config):
        return 0.0, 1, {}

def client_fn(context):
    return Client(context.partition_id)

history = roost.run_simulation(
    client_fn,
    4,
    strategy=roost.FedAvg(
        fraction_evaluate=0.0, min_fit_clients=4, min_available_clients=4,
        initial_parameters=[np.zeros(2)],
    ),
    config=roost.ServerConfig(num_rounds=2),
    engine="process",
    engine_options={"max_workers": 2},
)
print("final", history.parameters[0].tolist(), flush=True)
"""


def run_script(directory: Path, timeout: float) -> subprocess.CompletedProcess:
    """Run `directory/script.py` in its own session; on timeout, kill it and its workers."""
    env = {**os.environ, "PYTHONPATH": SRC}
    process = subprocess.Popen(
        [sys.executable, "script.py"],
        cwd=directory,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the script's session: it and its workers
        process.communicate()
        pytest.fail(f"the script did not finish within {timeout:g} s")
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def test_a_script_without_a_main_guard_runs_on_the_process_engine(tmp_path):
    (tmp_path / "helpers.py").write_text("def step_for(partition_id):\n    return 1.0\n")
    (tmp_path / "script.py").write_text(textwrap.dedent(UNGUARDED_SCRIPT))
    done = run_script(tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("script body ran") == 1  # the workers did not run it again
    assert "final [2.0, 2.0]" in done.stdout


def fedavg_of_zeros(size: int = 2) -> roost.Strategy:
    return roost.FedAvg(
        fraction_evaluate=0.0,
        min_fit_clients=1,
        min_available_clients=1,
        initial_parameters=[np.zeros(size)],
    )


class DiesWhenLoaded:
    """A client_fn whose worker process exits while it is being rebuilt there."""

    def __reduce__(self):
        return (os._exit, (7,))


def test_workers_that_die_while_starting_end_the_run_with_one_clear_error():
    with pytest.raises(RoostError) as raised:
        roost.run_simulation(
            DiesWhenLoaded(),
            2,
            strategy=fedavg_of_zeros(),
            config=roost.ServerConfig(num_rounds=1),
            engine="process",
            engine_options={"max_workers": 2},
        )
    message = str(raised.value)
    assert "\n" not in message
    assert "exited while starting (exit code 7" in message
    assert "guard" not in message  # the old advice no longer applies


class SlowToLoad:
    """A client_fn whose rebuilding in a worker takes longer than a worker may take to start."""

    def __reduce__(self):
        return (time.sleep, (30,))


def test_a_worker_that_does_not_start_is_mentioned_then_ends_the_run(monkeypatch, caplog):
    monkeypatch.setattr("roost.engines.process.WORKER_START_TIMEOUT", 1.5)
    monkeypatch.setattr("roost.engines.process.SLOW_START_NOTICE", 0.5)
    started = time.monotonic()
    with pytest.raises(RoostError) as raised:
        roost.run_simulation(
            SlowToLoad(),
            2,
            strategy=fedavg_of_zeros(),
            engine="process",
            engine_options={"max_workers": 1},
        )
    assert time.monotonic() - started < 20  # not the 30 s the worker would have taken
    assert str(raised.value).startswith("a process engine worker did not start within 1.5 s")
    assert "a worker has been starting for 0.5 s" in caplog.text


def test_workers_that_keep_dying_end_the_run_with_one_clear_error():
    # Every client's fit ends its worker: without a limit the pool would start a worker per
    # client for the whole run.
    with pytest.raises(RoostError) as raised:
        roost.run_simulation(
            crashing_client_fn,
            40,
            strategy=fedavg_of_zeros(),
            config=roost.ServerConfig(num_rounds=1),
            engine="process",
            engine_options={"max_workers": 1},
        )
    message = str(raised.value)
    assert "\n" not in message
    assert "the process engine lost 3 workers in a row" in message
    assert "exit code 3" in message


def worker_settings(monkeypatch, **environment: str | None) -> dict:
    """The OMP settings a process-engine worker sees with `environment` set here."""
    for name, value in environment.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    seen: list[dict] = []

    def collect(pairs):
        seen.extend(metrics for _, metrics in pairs)
        return {}

    strategy = fedavg_of_zeros()
    strategy.fit_metrics_aggregation_fn = collect
    roost.run_simulation(
        environment_client_fn,
        2,
        strategy=strategy,
        config=roost.ServerConfig(num_rounds=1),
        engine="process",
        engine_options={"max_workers": 2},
    )
    assert len(seen) == 2 and seen[0] == seen[1]
    return seen[0]


def test_workers_wait_passively_and_share_the_cores_by_default(monkeypatch):
    settings = worker_settings(monkeypatch, OMP_WAIT_POLICY=None, OMP_NUM_THREADS=None)
    assert settings["OMP_WAIT_POLICY"] == "PASSIVE"
    assert settings["OMP_NUM_THREADS"] == str(max(1, (os.cpu_count() or 1) // 2))
    assert "OMP_WAIT_POLICY" not in os.environ  # the server's own environment is left alone


def test_the_users_own_settings_reach_the_workers_unchanged(monkeypatch):
    settings = worker_settings(monkeypatch, OMP_WAIT_POLICY="ACTIVE", OMP_NUM_THREADS="3")
    assert settings == {"OMP_WAIT_POLICY": "ACTIVE", "OMP_NUM_THREADS": "3"}


def test_worker_environment_fills_in_only_what_is_unset():
    env = worker_environment(2, {"OMP_NUM_THREADS": "4", "PATH": "/bin"})
    assert env["OMP_NUM_THREADS"] == "4" and env["PATH"] == "/bin"
    assert env["MKL_NUM_THREADS"] == env["TF_NUM_INTRAOP_THREADS"] == "2"
    assert env["OMP_WAIT_POLICY"] == "PASSIVE"


def test_use_passive_wait_sets_the_default_and_names_whose_value_holds():
    unset: dict[str, str] = {}
    assert "roost's default" in use_passive_wait(unset)
    assert unset == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert "roost's default" in use_passive_wait(unset)  # asked again: still roost's
    mine = {"OMP_WAIT_POLICY": "ACTIVE"}
    assert use_passive_wait(mine) == "OMP_WAIT_POLICY=ACTIVE, yours"
    assert mine == {"OMP_WAIT_POLICY": "ACTIVE"}


def test_only_the_spawn_start_method_is_accepted():
    with pytest.raises(roost.ConfigurationError, match="leave start_method out"):
        make_engine("process", probe_client_fn, 2, start_method="forkserver")


# -- the default engine -----------------------------------------------------------------------


def framework_module(monkeypatch, framework: str) -> types.ModuleType:
    """A loaded module `user_models` that imported `framework` at top level, as a user's model
    module does (a stand-in module object: the real framework is not imported)."""
    module = types.ModuleType("user_models")
    module.framework = types.ModuleType(framework)
    monkeypatch.setitem(sys.modules, "user_models", module)
    return module


def test_the_default_engine_sees_a_framework_through_client_fns_modules(monkeypatch):
    module = framework_module(monkeypatch, "keras")

    def build(context):  # pickled by reference to user_models, as a module's function is
        return None

    build.__module__, build.__qualname__ = "user_models", "build"
    module.build = build
    assert framework_of(build) == "keras"
    assert framework_of(probe_client_fn) is None  # NumPy and roost only
    assert framework_of(lambda context: module.framework) == "keras"  # a closure over it


def quiet_two_cores(monkeypatch) -> None:
    monkeypatch.setattr("roost.engines.choice.os.cpu_count", lambda: 2)
    monkeypatch.setattr("roost.engines.choice.os.getloadavg", lambda: (0.3, 0.3, 0.3))
    # The load average alone, as on a system whose CPU counters cannot be read.
    monkeypatch.setattr("roost.engines.choice._busy_cores_now", lambda cores: None)


def test_the_default_engine_runs_tracing_frameworks_in_workers_when_it_pays(monkeypatch):
    quiet_two_cores(monkeypatch)
    monkeypatch.setattr("roost.engines.choice.framework_of", lambda client_fn: "tensorflow")
    choice = default_engine(probe_client_fn, 5, 5)
    assert (choice.engine, choice.options) == ("process", {"max_workers": 2})
    assert choice.line().startswith("engine: process (the default: client_fn uses tensorflow, ")
    few = default_engine(probe_client_fn, 2, 1)  # 2 calls: starting workers would not pay
    assert few.engine == "sequential" and "2 client calls do not earn back" in few.why
    monkeypatch.setattr("roost.engines.choice.os.getloadavg", lambda: (2.6, 3.0, 3.0))
    busy = default_engine(probe_client_fn, 5, 5)  # workers would wait for the same cores
    assert busy.engine == "sequential" and "2 cores are busy (load 2.6)" in busy.why
    quiet_two_cores(monkeypatch)
    # Keras is judged by its backend: on TensorFlow it traces every new model's step ...
    keras = types.ModuleType("keras")
    keras.backend = types.SimpleNamespace(backend=lambda: "tensorflow")
    monkeypatch.setitem(sys.modules, "keras", keras)
    monkeypatch.setattr("roost.engines.choice.framework_of", lambda client_fn: "keras")
    assert "uses keras on tensorflow, so 2 worker" in default_engine(probe_client_fn, 5, 5).why
    # ... on torch, as torch itself, one call already uses every core.
    keras.backend = types.SimpleNamespace(backend=lambda: "torch")
    on_torch = default_engine(probe_client_fn, 5, 5)
    assert on_torch.engine == "sequential" and "keras on torch, whose calls" in on_torch.why
    monkeypatch.setattr("roost.engines.choice.framework_of", lambda client_fn: "torch")
    assert default_engine(probe_client_fn, 50, 50).engine == "sequential"
    monkeypatch.setattr("roost.engines.choice.framework_of", lambda client_fn: "jax")
    monkeypatch.setattr("roost.engines.choice.os.cpu_count", lambda: 1)
    assert "this machine has one core" in default_engine(probe_client_fn, 5, 5).why


def test_run_simulation_names_the_engine_it_chose_and_uses_it(monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="roost")
    pids: list[int] = []
    roost.run_simulation(
        probe_client_fn, 4, strategy=pid_recording_fedavg(pids, 2), config=roost.ServerConfig(3)
    )
    assert set(pids) == {os.getpid()}
    assert "engine: sequential (the default: client_fn uses no ML framework" in caplog.text
    monkeypatch.setattr("roost.engines.choice.framework_of", lambda client_fn: "tensorflow")
    quiet_two_cores(monkeypatch)
    pids.clear()
    roost.run_simulation(
        probe_client_fn, 4, strategy=pid_recording_fedavg(pids, 2), config=roost.ServerConfig(3)
    )
    assert len(pids) == 12 and os.getpid() not in pids  # clients ran in worker processes
    assert "engine: process (the default: client_fn uses tensorflow" in caplog.text


def test_workers_stop_side_by_side_running_exit_handlers_without_interpreter_teardown(
    tmp_path,
):
    # Each worker keeps a non-daemon thread asleep for 30 s: an interpreter teardown would wait
    # for it until the stop grace ran out and the worker was killed (its exit handler lost).
    mark = tmp_path / "exited"
    engine = ProcessEngine(lingering_client_fn, 2, {"mark": str(mark)}, max_workers=2)
    cohort = [(str(k), FitIns([np.zeros(2)], {})) for k in range(2)]
    try:
        outcomes = dict(engine.run(cohort, timeout=60))
        assert all(not isinstance(outcome, Failure) for outcome in outcomes.values())
        workers = list(engine._workers)
    finally:
        started = time.perf_counter()
        engine.close()
        took = time.perf_counter() - started
    assert [worker.process.returncode for worker in workers] == [0, 0]
    assert (
        sorted(path.read_text() for path in tmp_path.glob("exited.*")) == ["exit handler ran"] * 2
    )
    assert took < STOP_GRACE


def test_closing_the_pool_tells_every_worker_to_stop_before_waiting_for_any():
    events = []

    class Worker:
        def __init__(self, name):
            self.name = name

        def tell_to_stop(self):
            events.append(("told", self.name))

        def stop(self, grace):
            assert 0 < grace <= STOP_GRACE
            events.append(("waited", self.name))

    engine = ProcessEngine(probe_client_fn, 2, max_workers=2)
    engine._workers = [Worker("a"), Worker("b")]
    engine.close()
    assert events == [("told", "a"), ("told", "b"), ("waited", "a"), ("waited", "b")]


def test_a_load_average_left_by_finished_work_does_not_keep_workers_out(monkeypatch):
    quiet_two_cores(monkeypatch)
    monkeypatch.setattr("roost.engines.choice.framework_of", lambda client_fn: "tensorflow")
    # A run that just ended leaves the one-minute average high while the cores are idle now.
    monkeypatch.setattr("roost.engines.choice.os.getloadavg", lambda: (1.6, 1.2, 0.9))
    monkeypatch.setattr("roost.engines.choice._busy_cores_now", lambda cores: 0.1)
    assert default_engine(probe_client_fn, 5, 5).engine == "process"
    # Busy now and over the last minute: workers would wait for the same cores.
    monkeypatch.setattr("roost.engines.choice._busy_cores_now", lambda cores: 1.9)
    busy = default_engine(probe_client_fn, 5, 5)
    assert busy.engine == "sequential" and "2 cores are busy (load 1.6)" in busy.why


def test_the_cores_busy_now_are_read_from_the_kernels_cpu_time_counters(monkeypatch):
    from roost.engines import choice

    #        user nice system idle iowait irq softirq steal
    before = [1000, 0, 500, 8000, 100, 0, 0, 0]
    after = [1150, 0, 550, 8190, 110, 0, 0, 0]  # 200 of 400 ticks busy: half the cores
    readings = iter([before, after])
    real_counters = choice._cpu_times
    monkeypatch.setattr(choice, "LOAD_SAMPLE_SECONDS", 0.01)
    monkeypatch.setattr(choice, "_cpu_times", lambda: next(readings))
    assert choice._busy_cores_now(4) == pytest.approx(2.0)
    if Path("/proc/stat").exists():  # the real counters give a share of the cores
        monkeypatch.setattr(choice, "_cpu_times", real_counters)
        busy = choice._busy_cores_now(2)
        assert busy is None or 0.0 <= busy <= 2.0

    def unreadable():
        raise FileNotFoundError("/proc/stat")

    monkeypatch.setattr(choice, "_cpu_times", unreadable)
    assert choice._busy_cores_now(4) is None
