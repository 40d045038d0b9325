"""A client for the process-pool tests, in a module of its own: the pool's workers import the
module that defines their client_fn, and this one imports neither torch nor the test files."""

from __future__ import annotations

import atexit
import os
import threading
import time
from pathlib import Path

import numpy as np

import roost
from roost.compat.flwr.client import NumPyClient
from roost.compat.flwr.common import ConfigRecord


class ProbeClient(roost.Client):
    """Adds (1 + partition) to every parameter; hangs or dies when run_config says so."""

    def __init__(self, partition_id: int, run_config: dict) -> None:
        self.partition_id = partition_id
        self.run_config = run_config

    def fit(self, parameters, config):
        if self.partition_id == self.run_config.get("hang") and config.get("server_round") == 1:
            time.sleep(60)
        if self.partition_id == self.run_config.get("die") and config.get("server_round") == 1:
            os._exit(3)
        step = 1.0 + self.partition_id
        return [p + step for p in parameters], self.partition_id + 1, {"pid": os.getpid()}

    def evaluate(self, parameters, config):
        return float(parameters[0].sum()), 1, {}


def probe_client_fn(context: roost.Context) -> ProbeClient:
    return ProbeClient(context.partition_id, dict(context.run_config))


def _refuse_to_load():
    raise ImportError("no module named 'somewhere_else'")


class LoadsNowhere:
    """A client_fn a worker cannot rebuild. Here, not in test_engines: a worker unpickling it
    imports the module it names, and test_engines' torch would cost that worker seconds."""

    def __reduce__(self):
        return (_refuse_to_load, ())


def pid_recording_fedavg(pids: list, size: int) -> roost.Strategy:
    """FedAvg from zeros of `size`, training only, that appends each fit's worker pid to `pids`
    and sends the round number (which the probes' hang and die settings read)."""

    def collect(pairs):
        pids.extend(metrics["pid"] for _, metrics in pairs)
        return {}

    return roost.FedAvg(
        fraction_evaluate=0.0,
        min_fit_clients=1,
        min_available_clients=1,
        initial_parameters=[np.zeros(size)],
        fit_metrics_aggregation_fn=collect,
        on_fit_config_fn=lambda server_round: {"server_round": server_round},
    )


class RememberingClient(NumPyClient):
    """Flower's stateful-client pattern: it counts its fits in `context.state`, a RecordDict."""

    def __init__(self, context) -> None:
        self.client_state = context.state
        if "fits" not in self.client_state.config_records:
            self.client_state.config_records["fits"] = ConfigRecord({"count": 0})

    def fit(self, parameters, config):
        record = self.client_state["fits"]
        record["count"] = int(record["count"]) + 1
        same = self.context.state is self.client_state  # NumPyClient.context, as on Flower
        return [p + 1 for p in parameters], 1, {"fits": record["count"], "same": int(same)}

    def evaluate(self, parameters, config):
        return 0.0, 1, {"fits": int(self.client_state["fits"]["count"])}


def remembering_client_fn(context) -> RememberingClient:
    return RememberingClient(context).to_client()


class EnvironmentClient(roost.Client):
    """Reports, as fit metrics, the math-thread settings its worker process runs with."""

    def fit(self, parameters, config):
        names = ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")
        return parameters, 1, {name: os.environ.get(name, "unset") for name in names}

    def evaluate(self, parameters, config):
        return 0.0, 1, {}


def environment_client_fn(context: roost.Context) -> EnvironmentClient:
    return EnvironmentClient()


class CrashingClient(EnvironmentClient):
    """Ends its worker process in every fit, as a crashing native library would."""

    def fit(self, parameters, config):
        os._exit(3)


def crashing_client_fn(context: roost.Context) -> CrashingClient:
    return CrashingClient()


class LingeringClient(EnvironmentClient):
    """Leaves a non-daemon thread asleep in its worker and an exit handler that writes
    `run_config["mark"]`: a worker told to stop must run the handler, not wait for the thread."""

    def __init__(self, mark: str) -> None:
        self.mark = mark

    def fit(self, parameters, config):
        threading.Thread(target=time.sleep, args=(30,), daemon=False).start()
        atexit.register(Path(f"{self.mark}.{os.getpid()}").write_text, "exit handler ran")
        return parameters, 1, {}


def lingering_client_fn(context: roost.Context) -> LingeringClient:
    return LingeringClient(str(context.run_config["mark"]))
