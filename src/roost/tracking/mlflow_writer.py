"""`MLflowTracker`: a run's settings and every round's values in an MLflow run."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path

from roost.errors import ConfigurationError
from roost.tracking.base import RoundReport, Tracker, numeric

DEFAULT_STORE = "mlruns"
"""The local store `MLflowTracker` writes to without a tracking URI (`./mlruns`)."""

_BATCH = 1000  # MLflow's limit of metrics per log_batch call


def tracking_uri(uri: str | None) -> str:
    """`uri`, or the local file store `./mlruns` as an absolute `file:` URI; a plain path
    becomes a `file:` URI too."""
    if not uri:
        return Path(DEFAULT_STORE).resolve().as_uri()
    if "://" in uri or uri.startswith("file:"):
        return uri
    return Path(uri).resolve().as_uri()


class MLflowTracker(Tracker):
    """Log a run to MLflow: `params` once, each round's values as metrics of step = round.

    Args:
        uri: the tracking URI (a server's `http://…`, `sqlite:///mlflow.db`, `databricks`, …);
            None: the local file store `./mlruns` (`mlflow ui --backend-store-uri ./mlruns`).
        experiment: the experiment's name; made when missing.
        run_name: the run's name (MLflow picks one when None).
        params: the run's settings, logged as parameters.

    Per-client metrics, when the run records them, are named `client_<id>.<phase>_<metric>`.
    Uses MLflow's own client (`mlflow-skinny` is enough). MLflow refuses its file store unless
    `MLFLOW_ALLOW_FILE_STORE` is set; for a `file:` URI this tracker sets it to true (unless
    the environment already sets it) because the local file store is the default here.
    """

    def __init__(
        self,
        uri: str | None = None,
        *,
        experiment: str = "roost",
        run_name: str | None = None,
        params: Mapping[str, object] | None = None,
    ) -> None:
        self.uri = tracking_uri(uri)
        if self.uri.startswith("file:"):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        try:
            from mlflow.entities import Param
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise ConfigurationError(
                "--mlflow needs MLflow: pip install mlflow-skinny (or mlflow)"
            ) from None
        self._client = MlflowClient(tracking_uri=self.uri)
        found = self._client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else self._client.create_experiment(experiment)
        self.run_id: str = self._client.create_run(experiment_id, run_name=run_name).info.run_id
        if params:
            settings = [Param(str(key), str(value)) for key, value in params.items()]
            self._client.log_batch(self.run_id, params=settings)
        self._closed = False

    def on_round_end(self, record: RoundReport) -> None:
        """Log this round's values (and per-client metrics) as metrics at step = round."""
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        step = record.server_round
        metrics = [Metric(name, value, stamp, step) for name, value in record.values.items()]
        for phase, clients in record.client_metrics.items():
            for client_id, values in clients.items():
                for name, value in values.items():
                    if (number := numeric(value)) is not None:
                        key = f"client_{client_id}.{phase}_{name}"
                        metrics.append(Metric(key, number, stamp, step))
        for start in range(0, len(metrics), _BATCH):
            self._client.log_batch(self.run_id, metrics=metrics[start : start + _BATCH])

    def close(self) -> None:
        """End the MLflow run (once; closing again does nothing)."""
        if not self._closed:
            self._closed = True
            self._client.set_terminated(self.run_id, status="FINISHED")
