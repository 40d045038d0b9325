"""The simulated clock: client profiles, task durations, trace files, synchronous rounds' time."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import roost
from roost.apps.digits import make_client_fn
from roost.cli.report import history_table
from roost.core.simclock import ClientProfile, ClientProfiles, VirtualClock
from roost.core.types import EvaluateIns, EvaluateRes, Failure, FitIns, FitRes
from roost.errors import ConfigurationError
from roost.plotting import history_csv
from roost.tracking.base import round_values

MODEL = [np.zeros((4, 25), np.float32)]  # 400 bytes


def test_a_task_takes_download_compute_and_upload() -> None:
    clock = VirtualClock(ClientProfiles({"a": ClientProfile(20.0, 100.0, 0.5)}))
    fit = FitIns(MODEL, {"local_epochs": 3})
    seconds = clock.duration("a", fit, FitRes(MODEL, 10, {}))
    assert seconds == pytest.approx((0.5 + 4.0) + 10 * 3 / 20 + (0.5 + 4.0))
    evaluate = clock.duration("a", EvaluateIns(MODEL), EvaluateRes(1.0, 10, {}))
    assert evaluate == pytest.approx(0.5 + 4.0 + 10 / 20 + 0.5)
    assert clock.duration("a", fit, Failure("a", "boom")) == pytest.approx(0.5 + 4.0 + 0.5)


def test_heavy_tailed_makes_the_share_slow_chosen_by_seed() -> None:
    profiles = ClientProfiles.heavy_tailed(50, 0.1, 10.0, seed=3, examples_per_second=40.0)
    speeds = sorted(p.examples_per_second for p in profiles.values())
    assert speeds[:5] == [4.0] * 5 and speeds[5:] == [40.0] * 45
    again = ClientProfiles.heavy_tailed(50, 0.1, 10.0, seed=3, examples_per_second=40.0)
    other = ClientProfiles.heavy_tailed(50, 0.1, 10.0, seed=4, examples_per_second=40.0)
    assert dict(profiles) == dict(again) != dict(other)
    lognormal = ClientProfiles.lognormal(20, 1.0, seed=0)
    assert dict(lognormal) == dict(ClientProfiles.lognormal(20, 1.0, seed=0))
    assert len({p.examples_per_second for p in lognormal.values()}) == 20


def test_trace_files_in_csv_and_json(tmp_path: Path) -> None:
    csv_file = tmp_path / "trace.csv"
    csv_file.write_text(
        "client_id,examples_per_second,bytes_per_second,latency_seconds\n0,10,1000,0.1\n1,5,500,\n"
    )
    json_file = tmp_path / "trace.json"
    rows = [
        {"client_id": "0", "examples_per_second": 10, "bytes_per_second": 1000,
         "latency_seconds": 0.1},
        {"client_id": "1", "examples_per_second": 5, "bytes_per_second": 500},
    ]  # fmt: skip
    json_file.write_text(json.dumps(rows))
    bom_file = tmp_path / "spreadsheet.csv"  # as spreadsheets save a UTF-8 CSV
    bom_file.write_bytes(b"\xef\xbb\xbf" + csv_file.read_bytes())
    for path in (csv_file, json_file, bom_file):
        profiles = ClientProfiles.parse(str(path), 2)
        assert profiles["0"] == ClientProfile(10.0, 1000.0, 0.1)
        assert profiles["1"] == ClientProfile(5.0, 500.0)


@pytest.mark.parametrize(
    ("name", "text", "says"),
    [
        ("t.csv", "client_id,examples_per_second\n0,1\n", "lacks the column(s) bytes_per_second"),
        ("t.csv", "client_id,examples_per_second,bytes_per_second\n0,fast,1\n", "not a number"),
        ("t.csv", "client_id,examples_per_second,bytes_per_second\n0,-1,1\n", "row 1"),
        ("t.csv", "client_id,examples_per_second,bytes_per_second\n0,1,1\n0,2,2\n", "repeated"),
        ("t.csv", "client_id,examples_per_second,bytes_per_second\n", "lists no clients"),
        ("t.json", "{not json", "not valid JSON"),
        ("t.json", '{"client_id": 0}', "JSON list of objects"),
        ("t.json", '[{"examples_per_second": 1, "bytes_per_second": 1}]', "no client_id"),
        ("t.json", '[{"client_id": 0, "examples_per_second": 1}]', "no bytes_per_second"),
        ("t.csv", "client_id,examples_per_second,bytes_per_second\n0,1\n", "row 1: no bytes_per"),
        ("t.csv", "client_id,examples_per_second,bytes_per_second\n0,1,1,9\n", "more fields"),
        ("t.csv", b"\xff\xfeclient_id", "is not UTF-8 text"),
    ],
)
def test_bad_trace_files_are_refused_in_one_line(
    tmp_path: Path, name: str, text: str | bytes, says: str
) -> None:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ConfigurationError, match=None) as caught:
        ClientProfiles.from_trace(path)
    assert says in str(caught.value) and "\n" not in str(caught.value)


def test_bad_specs_and_unknown_clients_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="unknown client speeds"):
        ClientProfiles.parse("slow:0.1", 10)
    with pytest.raises(ConfigurationError, match="cannot read the trace file"):
        ClientProfiles.parse("missing.csv", 10)
    with pytest.raises(ConfigurationError, match="slowdown must be a finite number >= 1"):
        ClientProfiles.heavy_tailed(10, 0.1, 0.5)
    with pytest.raises(ConfigurationError, match="client '7' has no profile"):
        ClientProfiles.uniform(3)["7"]
    assert ClientProfiles.uniform()["7"] == ClientProfile()  # any client, with a default
    with pytest.raises(ConfigurationError, match="virtual deadline"):
        VirtualClock(ClientProfiles.uniform(3), deadline=0)
    with pytest.raises(ConfigurationError, match="virtual deadline must be a number"):
        VirtualClock(ClientProfiles.uniform(3), deadline="1")
    with pytest.raises(ConfigurationError, match="VirtualClock needs ClientProfiles"):
        VirtualClock({"0": ClientProfile()})  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="slow_fraction must be in"):
        ClientProfiles.heavy_tailed(5, "0.1")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="sigma must be a finite number"):
        ClientProfiles.lognormal(5, float("inf"))


def _digits_run(**clock: object) -> roost.History:
    return roost.run_simulation(
        make_client_fn(0),
        5,
        strategy=roost.FedAvg(fraction_evaluate=0.0),
        config=roost.ServerConfig(num_rounds=2),
        seed=0,
        engine="sequential",
        **clock,  # type: ignore[arg-type]
    )


def test_a_synchronous_round_takes_its_slowest_client_or_the_deadline() -> None:
    profiles = ClientProfiles({str(i): ClientProfile(100.0 / (1 + 9 * (i == 4))) for i in range(5)})
    plain = _digits_run()
    assert all(r.virtual_time is None for r in plain.rounds)
    assert "virtual_time" not in json.dumps(plain.to_dict())  # outputs without a clock unchanged
    assert "virtual_time" not in history_csv(plain)
    waited = _digits_run(clock=VirtualClock(profiles))
    slowest = VirtualClock(profiles).duration(
        "4", FitIns(plain.parameters, {}), FitRes(plain.parameters, 259, {})
    )
    assert waited.rounds[0].virtual_time == pytest.approx(slowest)
    assert waited.rounds[1].virtual_time == pytest.approx(2 * slowest)
    assert waited.rounds[1].wall_time > 0 and waited.rounds[0].fit_results == 5
    header, *rows = history_csv(waited).splitlines()
    column = header.split(",").index("virtual_time")
    assert float(rows[0].split(",")[column]) == waited.rounds[0].virtual_time
    assert round_values(waited, 1)["virtual_time"] == waited.rounds[0].virtual_time  # trackers
    assert "virtual_time" not in round_values(plain, 1)
    table = history_table(waited)  # the run summary shows each round's virtual time
    assert table.columns[1].header == "virtual s"
    assert list(table.columns[1].cells) == [f"{slowest:.2f}", f"{2 * slowest:.2f}"]
    assert "virtual s" not in [column.header for column in history_table(plain).columns]
    cut = _digits_run(clock=VirtualClock(profiles, deadline=5.0))
    assert [r.virtual_time for r in cut.rounds] == [5.0, 10.0]
    assert [(r.fit_results, r.failed_clients) for r in cut.rounds] == [(4, ["4"])] * 2


def test_a_resumed_synchronous_run_keeps_its_virtual_time(tmp_path: Path) -> None:
    def run(state: Path, rounds: int, resume: bool = False) -> roost.History:
        return roost.run_simulation(
            make_client_fn(0),
            5,
            strategy=roost.FedAvg(fraction_evaluate=0.0),
            config=roost.ServerConfig(num_rounds=rounds),
            seed=0,
            engine="sequential",
            clock=VirtualClock(ClientProfiles.heavy_tailed(5, 0.2, 10.0, seed=0)),
            state_dir=state,
            resume=resume,
        )

    whole = run(tmp_path / "whole", 3)
    run(tmp_path / "cut", 2)
    resumed = run(tmp_path / "cut", 3, resume=True)
    assert [r.virtual_time for r in resumed.rounds] == [r.virtual_time for r in whole.rounds]


def test_a_compressed_upload_takes_the_time_of_its_compressed_bytes() -> None:
    # A slow link (100 bytes/s) and fast compute: the round's time is mostly the upload, which
    # for q8 is the encoded payload the client sent, not the float update it decodes to.
    profiles = ClientProfiles({str(i): ClientProfile(1e9, 100.0, 0.0) for i in range(5)})

    def run(compression: str | None) -> roost.History:
        return roost.run_simulation(
            make_client_fn(0),
            5,
            strategy=roost.FedAvg(fraction_evaluate=0.0, compression=compression),
            config=roost.ServerConfig(num_rounds=1),
            seed=0,
            engine="sequential",
            clock=VirtualClock(profiles),
        )

    plain, compressed = run(None), run("q8")
    model_bytes = sum(a.nbytes for a in plain.parameters)
    sent = compressed.measurements["bytes_up"][0][1] / 5  # every client sends the same size
    assert plain.rounds[0].virtual_time == pytest.approx(2 * model_bytes / 100.0, rel=1e-3)
    expected = (model_bytes + sent) / 100.0
    assert compressed.rounds[0].virtual_time == pytest.approx(expected, rel=1e-3)
