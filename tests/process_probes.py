"""A client for the process-pool tests, in a module of its own: the pool's workers import the
module that defines their client_fn, and this one imports neither torch nor the test files."""

from __future__ import annotations

import os
import time

import roost


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
