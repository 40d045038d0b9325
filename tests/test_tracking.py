"""Trackers: the callback interface, per-client metrics, and the TensorBoard and MLflow writers
(each checked by reading back what it wrote)."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

import roost
from roost.cli import main
from roost.metrics import weighted_average
from roost.server.history import History, RoundRecord
from roost.tracking import RoundReport, Tracker, round_values


class Scaled(roost.Client):
    def __init__(self, partition_id: int) -> None:
        self.partition_id = partition_id

    def get_parameters(self, config):
        return [np.zeros(2)]

    def fit(self, parameters, config):
        return [parameters[0] + 1], 10, {"seen": self.partition_id}

    def evaluate(self, parameters, config):
        return 0.1 * self.partition_id, 10, {"accuracy": 0.5}


def client_fn(context: roost.Context) -> Scaled:
    return Scaled(context.partition_id)


class Collect(Tracker):
    def __init__(self) -> None:
        self.records: list[RoundReport] = []
        self.closed = 0

    def on_round_end(self, record: RoundReport) -> None:
        self.records.append(record)

    def close(self) -> None:
        self.closed += 1


def test_trackers_get_every_round_and_are_closed() -> None:
    tracker = Collect()
    strategy = roost.FedAvg(
        initial_parameters=[np.zeros(2)], evaluate_metrics_aggregation_fn=weighted_average
    )
    roost.run_simulation(
        client_fn,
        3,
        strategy=strategy,
        config=roost.ServerConfig(num_rounds=3),
        trackers=[tracker],
        client_metrics=True,
    )
    assert [r.server_round for r in tracker.records] == [1, 2, 3]
    assert tracker.closed == 1
    last = tracker.records[-1]
    assert last.num_rounds == 3
    assert last.values["fit_results"] == 3
    assert last.values["loss_distributed"] == pytest.approx(0.1)
    assert last.values["distributed_accuracy"] == 0.5
    assert last.client_metrics["fit"] == {"0": {"seen": 0}, "1": {"seen": 1}, "2": {"seen": 2}}
    assert last.client_metrics["evaluate"]["2"] == {"loss": pytest.approx(0.2), "accuracy": 0.5}
    assert tracker.records[0].elapsed <= last.elapsed


def test_without_client_metrics_none_are_recorded() -> None:
    tracker = Collect()
    roost.run_simulation(
        client_fn, 2, strategy=roost.FedAvg(initial_parameters=[np.zeros(2)]), trackers=[tracker]
    )
    assert tracker.records[0].client_metrics == {}


def test_a_grpc_server_hands_trackers_every_clients_metrics() -> None:
    from grpc_support import run_deployed

    tracker = Collect()
    strategy = roost.FedAvg(
        initial_parameters=[np.zeros(2)], min_fit_clients=2, min_available_clients=2
    )
    nodes = {"a": Scaled(1), "b": Scaled(2)}
    run_deployed(strategy, nodes, num_rounds=2, trackers=[tracker], client_metrics=True)
    assert [r.server_round for r in tracker.records] == [1, 2]
    assert tracker.closed == 1
    assert tracker.records[-1].client_metrics["fit"] == {"a": {"seen": 1}, "b": {"seen": 2}}
    assert tracker.records[-1].client_metrics["evaluate"]["b"]["loss"] == pytest.approx(0.2)


def test_round_values_name_every_series_of_the_round() -> None:
    history = History()
    history.add_loss_centralized(0, 2.0)
    history.add_loss_centralized(1, 1.0)
    history.add_metrics_distributed_fit(1, {"train_loss": 0.7, "note": "text", "flag": True})
    history.add_metrics_centralized(1, {"accuracy": 0.8})
    history.add_measurements(1, {"clip_norm": 0.5, "bad": float("nan")})
    history.rounds.append(RoundRecord(1, fit_results=4, fit_failures=1))
    assert round_values(history, 1) == {
        "fit_results": 4.0,
        "fit_failures": 1.0,
        "evaluate_results": 0.0,
        "evaluate_failures": 0.0,
        "loss_centralized": 1.0,
        "fit_train_loss": 0.7,
        "centralized_accuracy": 0.8,
        "measured_clip_norm": 0.5,
    }
    assert round_values(history, 0) == {"loss_centralized": 2.0}


def read_events(directory: Path) -> list:
    """Every event in `directory`'s event files (TFRecord framing: length, crc, data, crc)."""
    from tensorboard.compat.proto import event_pb2

    events = []
    for path in sorted(directory.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset : offset + 8])
            events.append(event_pb2.Event.FromString(data[offset + 12 : offset + 12 + length]))
            offset += 12 + length + 4
    return events


def test_roost_simulate_writes_tensorboard_scalars(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    logs = tmp_path / "tb"
    args = ["simulate", "--quiet", "--clients", "3", "--rounds", "2", "--engine", "sequential"]
    tracking = ["--tensorboard", str(logs), "--client-metrics", "--out", str(tmp_path)]
    assert main([*args, *tracking]) == 0
    scalars: dict[str, list[tuple[int, float]]] = {}
    for event in read_events(logs):
        for value in event.summary.value:
            scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    history = History.from_json((tmp_path / "history.json").read_text())
    expected = [(r, pytest.approx(v)) for r, v in history.losses_centralized if r > 0]
    assert scalars["loss_centralized"] == expected
    assert [step for step, _ in scalars["centralized_accuracy"]] == [1, 2]
    assert [step for step, _ in scalars["client_2/fit_train_loss"]] == [1, 2]


def test_roost_simulate_logs_to_a_local_mlflow_store(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.chdir(tmp_path)
    args = ["simulate", "--quiet", "--clients", "3", "--rounds", "2", "--engine", "sequential"]
    assert main([*args, "--mlflow"]) == 0  # no URI: ./mlruns
    client = MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())
    experiment = client.get_experiment_by_name("roost")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["rounds"] == "2"
    history = client.get_metric_history(run.info.run_id, "centralized_accuracy")
    assert [metric.step for metric in history] == [1, 2]
    assert all(0 < metric.value <= 1 for metric in history)
