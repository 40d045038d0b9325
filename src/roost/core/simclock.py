"""A simulated clock: how long each simulated client's task takes, in virtual seconds.

Every simulated client gets a `ClientProfile`: a compute speed (training examples per second) and
a link (bytes per second each way, and a latency per message). A task then takes

    latency + model bytes / bandwidth                    (download the instruction's model)
  + num_examples × local epochs / speed                  (compute; one pass for evaluate)
  + latency + result bytes / bandwidth                   (upload)

so runs can be compared on "virtual time to 80 % accuracy" without waiting for it. Profiles come
from a seeded distribution (`ClientProfiles.uniform`, `.heavy_tailed`, `.lognormal`) or a trace
file of per-client figures (`ClientProfiles.from_trace`). The draws are simulation settings, not
secrets, so NumPy's seeded generator makes them (reproducible by seed).

`VirtualClock` holds the profiles, the current virtual time and an optional virtual deadline per
synchronous phase (a client past it is a timeout, as a real round timeout would make it).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from roost.core import compression
from roost.core.config_keys import LOCAL_EPOCHS
from roost.core.types import (
    ClientId,
    EvaluateIns,
    EvaluateRes,
    Failure,
    FitIns,
    FitRes,
    Instruction,
    PhaseIns,
    Result,
    payload_bytes,
)
from roost.errors import ConfigurationError

DEFAULT_SPEED = 100.0
"""Training examples per second of a client of speed factor 1."""
DEFAULT_BANDWIDTH = 1e6
"""Bytes per second, each way, of a client's link."""
DEFAULT_LATENCY = 0.05
"""Seconds per message (one for the download, one for the upload)."""

TRACE_COLUMNS = ("client_id", "examples_per_second", "bytes_per_second", "latency_seconds")
"""The columns (CSV) or keys (JSON) of a trace file; `latency_seconds` may be left out."""


@dataclass(frozen=True)
class ClientProfile:
    """One client's speed and link.

    Args:
        examples_per_second: training examples it processes per second (> 0).
        bytes_per_second: its link's bandwidth, each way (> 0).
        latency_seconds: added to every message each way (>= 0).
    """

    examples_per_second: float = DEFAULT_SPEED
    bytes_per_second: float = DEFAULT_BANDWIDTH
    latency_seconds: float = DEFAULT_LATENCY

    def __post_init__(self) -> None:
        for name in ("examples_per_second", "bytes_per_second"):
            value = getattr(self, name)
            if isinstance(value, bool) or not (
                isinstance(value, int | float) and math.isfinite(value) and value > 0
            ):
                raise ConfigurationError(f"{name} must be a finite number > 0, got {value!r}")
        latency = self.latency_seconds
        if isinstance(latency, bool) or not (
            isinstance(latency, int | float) and math.isfinite(latency) and latency >= 0
        ):
            raise ConfigurationError(
                f"latency_seconds must be a finite number >= 0, got {latency!r}"
            )

    def task_seconds(self, sent_bytes: int, examples: float, received_bytes: int) -> float:
        """Virtual seconds of one task: download `sent_bytes`, process `examples`, upload
        `received_bytes`."""
        download = self.latency_seconds + sent_bytes / self.bytes_per_second
        upload = self.latency_seconds + received_bytes / self.bytes_per_second
        return download + examples / self.examples_per_second + upload


class ClientProfiles(Mapping[ClientId, ClientProfile]):
    """Every simulated client's `ClientProfile`, by client id (a read-only mapping).

    Args:
        profiles: the profile of each client id.
        default: the profile of any client not in `profiles` (None: such a client is an error).
    """

    def __init__(
        self, profiles: Mapping[ClientId, ClientProfile], default: ClientProfile | None = None
    ) -> None:
        if not profiles and default is None:
            raise ConfigurationError("client profiles need at least one client or a default")
        self._profiles = {str(cid): profile for cid, profile in profiles.items()}
        self.default = default

    def __getitem__(self, client_id: ClientId) -> ClientProfile:
        try:
            return self._profiles[client_id]
        except KeyError:
            if self.default is not None:
                return self.default
            raise ConfigurationError(
                f"client {client_id!r} has no profile (profiles cover {len(self)} clients); "
                "give every simulated client a speed (a trace file row or a larger distribution)"
            ) from None

    def __iter__(self) -> Any:
        return iter(self._profiles)

    def __len__(self) -> int:
        return len(self._profiles)

    def __repr__(self) -> str:
        if not self._profiles:
            return f"ClientProfiles(default={self.default!r})"
        speeds = [p.examples_per_second for p in self._profiles.values()]
        return f"ClientProfiles({len(self)} clients, {min(speeds):g} to {max(speeds):g} examples/s)"

    # -- distributions ---------------------------------------------------------------------------

    @classmethod
    def uniform(cls, num_clients: int | None = None, **link: float) -> ClientProfiles:
        """`num_clients` identical clients, or any number with None (`link`: ClientProfile's
        fields)."""
        if num_clients is None:
            return cls({}, default=ClientProfile(**link))
        _check_count(num_clients)
        return cls({str(i): ClientProfile(**link) for i in range(num_clients)})

    @classmethod
    def heavy_tailed(
        cls,
        num_clients: int,
        slow_fraction: float = 0.1,
        slowdown: float = 10.0,
        *,
        seed: int = 0,
        **link: float,
    ) -> ClientProfiles:
        """A share `slow_fraction` of the clients (rounded, chosen by `seed`) `slowdown` times
        slower in compute and bandwidth; the others at the base profile (`link`)."""
        _check_count(num_clients)
        if not (_is_number(slow_fraction) and 0 <= slow_fraction <= 1):
            raise ConfigurationError(f"slow_fraction must be in [0, 1], got {slow_fraction!r}")
        if not (_is_number(slowdown) and 1 <= slowdown < math.inf):
            raise ConfigurationError(f"slowdown must be a finite number >= 1, got {slowdown!r}")
        base = ClientProfile(**link)
        slow_ids = set(
            np.random.default_rng(seed)
            .permutation(num_clients)[: round(slow_fraction * num_clients)]
            .tolist()
        )
        slow = ClientProfile(
            base.examples_per_second / slowdown,
            base.bytes_per_second / slowdown,
            base.latency_seconds,
        )
        return cls({str(i): slow if i in slow_ids else base for i in range(num_clients)})

    @classmethod
    def lognormal(
        cls, num_clients: int, sigma: float = 1.0, *, seed: int = 0, **link: float
    ) -> ClientProfiles:
        """Speed and bandwidth factors drawn independently from LogNormal(0, `sigma`)."""
        _check_count(num_clients)
        if not (_is_number(sigma) and 0 <= sigma < math.inf):
            raise ConfigurationError(f"sigma must be a finite number >= 0, got {sigma!r}")
        base = ClientProfile(**link)
        factors = np.random.default_rng(seed).lognormal(0.0, sigma, size=(num_clients, 2))
        return cls(
            {
                str(i): ClientProfile(
                    base.examples_per_second * float(compute),
                    base.bytes_per_second * float(link_factor),
                    base.latency_seconds,
                )
                for i, (compute, link_factor) in enumerate(factors)
            }
        )

    @classmethod
    def from_trace(cls, path: str | Path) -> ClientProfiles:
        """Profiles read from a CSV (header row) or JSON (a list of objects) file with the
        columns `TRACE_COLUMNS`; every row is checked, and a bad one named in the error."""
        path = Path(path)
        try:
            # utf-8-sig: spreadsheets often start a CSV with a byte-order mark.
            text = path.read_text(encoding="utf-8-sig")
        except OSError as error:
            raise ConfigurationError(
                f"cannot read the trace file {path}: {error.strerror or error}"
            ) from None
        except UnicodeDecodeError:
            raise ConfigurationError(
                f"the trace file {path} is not UTF-8 text; save it as a UTF-8 CSV or JSON file"
            ) from None
        rows = _json_rows(path, text) if path.suffix.lower() == ".json" else _csv_rows(path, text)
        profiles: dict[ClientId, ClientProfile] = {}
        for number, row in enumerate(rows, start=1):
            client_id, profile = _trace_row(path, number, row)
            if client_id in profiles:
                raise ConfigurationError(f"{path}, row {number}: client {client_id!r} repeated")
            profiles[client_id] = profile
        if not profiles:
            raise ConfigurationError(f"{path} lists no clients; add one row per client")
        return cls(profiles)

    @classmethod
    def parse(cls, spec: str, num_clients: int, *, seed: int = 0) -> ClientProfiles:
        """The profiles a command line's `--client-speeds` names: "uniform",
        "slow:FRACTION:SLOWDOWN" (e.g. "slow:0.1:10"), "lognormal:SIGMA", or a trace file."""
        name, _, rest = spec.partition(":")
        try:
            numbers = [float(part) for part in rest.split(":")] if rest else []
        except ValueError:
            numbers = None
        if name == "uniform" and numbers == []:
            return cls.uniform(num_clients)
        if name == "slow" and numbers is not None and len(numbers) == 2:
            return cls.heavy_tailed(num_clients, numbers[0], numbers[1], seed=seed)
        if name == "lognormal" and numbers is not None and len(numbers) == 1:
            return cls.lognormal(num_clients, numbers[0], seed=seed)
        if Path(spec).suffix.lower() in (".csv", ".json"):
            return cls.from_trace(spec)
        raise ConfigurationError(
            f"unknown client speeds {spec!r}; use uniform, slow:FRACTION:SLOWDOWN (e.g. "
            "slow:0.1:10), lognormal:SIGMA (e.g. lognormal:1) or a .csv/.json trace file"
        )


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_count(num_clients: int) -> None:
    if isinstance(num_clients, bool) or not isinstance(num_clients, int) or num_clients < 1:
        raise ConfigurationError(f"num_clients must be an int >= 1, got {num_clients!r}")


def _csv_rows(path: Path, text: str) -> list[dict[str, Any]]:
    reader = csv.DictReader(text.splitlines())
    missing = [c for c in TRACE_COLUMNS[:3] if c not in (reader.fieldnames or [])]
    if missing:
        raise ConfigurationError(
            f"{path} lacks the column(s) {', '.join(missing)}; its header must name "
            f"{', '.join(TRACE_COLUMNS)} (latency_seconds optional)"
        )
    rows = list(reader)
    for number, row in enumerate(rows, start=1):
        if None in row:  # DictReader's key for the fields past the header's
            raise ConfigurationError(
                f"{path}, row {number}: more fields than the header's {len(reader.fieldnames)}"
            )
    return rows


def _json_rows(path: Path, text: str) -> list[dict[str, Any]]:
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigurationError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise ConfigurationError(
            f"{path} must hold a JSON list of objects with the keys {', '.join(TRACE_COLUMNS)}"
        )
    return rows


def _trace_row(path: Path, number: int, row: dict[str, Any]) -> tuple[ClientId, ClientProfile]:
    where = f"{path}, row {number}"
    if row.get("client_id") in (None, ""):
        raise ConfigurationError(f"{where}: no client_id")
    values: dict[str, float] = {}
    for column in TRACE_COLUMNS[1:]:
        raw = row.get(column)
        if raw in (None, "") and column == "latency_seconds":
            continue
        if raw is None:
            raise ConfigurationError(f"{where}: no {column} (every row needs one)")
        try:
            values[column] = float(raw)
        except (TypeError, ValueError):
            raise ConfigurationError(f"{where}: {column} is {raw!r}, not a number") from None
    try:
        return str(row["client_id"]), ClientProfile(**values)
    except ConfigurationError as error:
        raise ConfigurationError(f"{where}: {error}") from None


class VirtualClock:
    """Virtual time for a simulated run: its clients' profiles, now, and an optional deadline.

    Args:
        profiles: every simulated client's speed and link.
        deadline: virtual seconds a client has for a task (None: no limit): a synchronous phase
            waits that long at most, and a client that would take longer is a timeout failure,
            as under a real round timeout (FedBuff's tasks too).

    `now` is advanced by the round loop (the slowest member of each synchronous phase, or the
    deadline) and by asynchronous strategies (the arrival being handled); it is restored from the
    checkpoint on resume, so it is part of the run's reproducible result.
    """

    def __init__(self, profiles: ClientProfiles, deadline: float | None = None) -> None:
        if not isinstance(profiles, ClientProfiles):
            raise ConfigurationError(
                f"VirtualClock needs ClientProfiles (e.g. ClientProfiles.uniform(n), or "
                f"ClientProfiles({{id: ClientProfile(...)}})), got {type(profiles).__name__}"
            )
        if deadline is not None and not (
            _is_number(deadline) and math.isfinite(deadline) and deadline > 0
        ):
            raise ConfigurationError(
                f"the virtual deadline must be a number > 0 or None, got {deadline!r}"
            )
        self.profiles = profiles
        self.deadline = deadline
        self.now = 0.0

    def __repr__(self) -> str:
        return f"VirtualClock({self.profiles!r}, deadline={self.deadline}, now={self.now:g})"

    def duration(
        self,
        client_id: ClientId,
        instruction: Instruction,
        outcome: Result | Failure,
        sent: Result | Failure | None = None,
    ) -> float:
        """Virtual seconds `client_id` takes to receive `instruction` and send `outcome` back.

        Compute counts the examples the result reports (× the fit config's local epochs); a
        failure costs only its messages. The upload costs the bytes of what the client `sent`
        when that differs from `outcome` (a compressed update, decoded into `outcome`).
        """
        examples = 0.0
        if isinstance(outcome, FitRes) and isinstance(instruction, FitIns | PhaseIns):
            config = (
                instruction.config
                if isinstance(instruction, FitIns)
                else compression.read_instruction(instruction)[2]
            )
            epochs = config.get(LOCAL_EPOCHS, 1)
            epochs = epochs if isinstance(epochs, int | float) and epochs > 0 else 1
            examples = float(outcome.num_examples) * float(epochs)
        elif isinstance(outcome, EvaluateRes) and isinstance(instruction, EvaluateIns):
            examples = float(outcome.num_examples)
        uploaded = payload_bytes(sent if sent is not None else outcome)
        return self.profiles[client_id].task_seconds(payload_bytes(instruction), examples, uploaded)
