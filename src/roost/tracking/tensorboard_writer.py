"""`TensorBoardTracker`: every round's values as TensorBoard scalars (`tensorboard --logdir`)."""

from __future__ import annotations

import itertools
import os
import socket
import time
from pathlib import Path

from roost.errors import ConfigurationError
from roost.tracking.base import RoundReport, Tracker, numeric

_FILE_NUMBERS = itertools.count()


class TensorBoardTracker(Tracker):
    """Write each round's values as scalars of step = round into an event file in `log_dir`.

    Tags are the names of `RoundReport.values` (`loss_distributed`, `centralized_accuracy`, ...);
    per-client metrics, when the run records them, go under `client_<id>/<phase>_<metric>`.
    Written with the `tensorboard` package's own record writer and protocol buffers, directly
    to the event file (its higher-level writers import TensorFlow when that is installed: seconds
    of start-up and a page of TensorFlow's log lines).
    """

    def __init__(self, log_dir: str | Path) -> None:
        try:
            from tensorboard.compat.proto import event_pb2, summary_pb2
            from tensorboard.summary.writer.record_writer import RecordWriter
        except ImportError:
            raise ConfigurationError(
                "--tensorboard needs the tensorboard package: pip install tensorboard"
            ) from None
        self.log_dir = Path(log_dir)
        self._event, self._summary = event_pb2.Event, summary_pb2.Summary
        self.log_dir.mkdir(parents=True, exist_ok=True)
        # TensorBoard reads every file whose name holds "tfevents"; this is its naming scheme.
        name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}"
        self.path = self.log_dir / f"{name}.{next(_FILE_NUMBERS)}"
        self._file = self.path.open("wb")
        self._writer = RecordWriter(self._file)
        self._write(self._event(wall_time=time.time(), file_version="brain.Event:2"))
        self._closed = False

    def on_round_end(self, record: RoundReport) -> None:
        """Add this round's scalars and flush, so a live TensorBoard shows them at once."""
        scalars = dict(record.values)
        for phase, clients in record.client_metrics.items():
            for client_id, metrics in clients.items():
                for name, value in metrics.items():
                    if (number := numeric(value)) is not None:
                        scalars[f"client_{client_id}/{phase}_{name}"] = number
        values = [self._summary.Value(tag=tag, simple_value=v) for tag, v in scalars.items()]
        event = self._event(
            wall_time=time.time(),
            step=record.server_round,
            summary=self._summary(value=values),
        )
        self._write(event)

    def _write(self, event: object) -> None:
        self._writer.write(event.SerializeToString())  # type: ignore[attr-defined]
        self._file.flush()

    def close(self) -> None:
        """Finish the event file (once; closing again does nothing)."""
        if not self._closed:
            self._closed = True
            self._file.close()
