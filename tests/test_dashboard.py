"""The web dashboard without a browser: its pages through Starlette's TestClient, its live
stream, its token, what it withholds under central DP, the coordinator's source, and that
nothing imports it unless `--dashboard` is given."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from roost.cli import main
from roost.core.types import Failure as ClientFailure
from roost.dashboard.app import TOKEN_COOKIE, DashboardState, _stream, dashboard_app
from roost.dashboard.federation_source import FederationSource
from roost.dashboard.model import RunModel, history_points
from roost.dashboard.server import DashboardServer, parse_address
from roost.dashboard.sources import LiveSource
from roost.errors import ConfigurationError
from roost.server.history import History, RoundRecord
from roost.tracking import RoundReport, round_values
from roost.tracking.base import round_phases
from roost.tracking.failures import FailureGroup

ROOT = Path(__file__).resolve().parents[1]


def _report(server_round: int, *, withheld: bool = False, **values: float) -> RoundReport:
    return RoundReport(server_round, 5, float(server_round), values, withheld=withheld)


def _failures() -> list[FailureGroup]:
    group = FailureGroup("error", "OSError: disk full")
    for client, server_round in (("node-7", 2), ("node-7", 3), ("node-9", 3)):
        group.add(ClientFailure(client, group.reason), server_round)
    return [group]


def _model(**config: object) -> RunModel:
    return RunModel("run", "roost simulate", 5, config, failures=_failures)


def test_the_run_page_shows_rounds_charts_phases_failures_and_config() -> None:
    model = _model(strategy="fedavg", clients=10)
    for r in (1, 2, 3):
        counts = {"fit_results": 9.0, "fit_failures": 1.0, "evaluate_results": 10.0}
        model.add_round(
            RoundReport(
                r,
                5,
                float(r),
                {**counts, "loss_distributed": 1 / r, "centralized_accuracy": 0.3 * r},
                phases={"secagg_unmask": (8, 2)},
            )
        )
    page = TestClient(dashboard_app(LiveSource(model))).get("/runs/run")
    assert page.status_code == 200
    html = page.text
    assert 'id="round-counter">3</strong>' in html and 'id="round-total">5</strong>' in html
    assert "ETA 2 s" in html  # 3 rounds took 3 s: 2 more take 2 s
    assert 'data-series="distributed" data-points="3"' in html  # the loss chart
    assert 'data-series="centralized" data-points="3"' in html  # the accuracy chart
    assert "secagg_unmask ok/dropped" in html and "<td>8/2</td>" in html
    assert "OSError: disk full" in html and 'href="/nodes/node-9"' in html
    assert "<th>strategy</th><td>fedavg</td>" in html
    assert 'data-events="/events/runs/run"' in html and "/static/dashboard.js" in html


def test_the_federation_and_node_pages_of_a_simulation() -> None:
    model = _model()
    model.add_round(_report(1, fit_results=2.0))
    client = TestClient(dashboard_app(LiveSource(model)))
    federation = client.get("/").text
    assert 'href="/runs/run"' in federation and 'href="/nodes/node-7"' in federation
    node = client.get("/nodes/node-7").text
    assert "OSError: disk full" in node and "rounds 2–3" in node
    assert client.get("/runs/other").status_code == 404
    assert client.get("/static/dashboard.js").text.count("EventSource") >= 1
    assert client.get("/static/../app.py").status_code == 404


def test_under_central_dp_the_page_shows_epsilon_and_no_client_statistics() -> None:
    model = _model(target_epsilon=4.0)
    for r, epsilon in ((1, 0.8), (2, 1.3)):
        model.add_round(
            _report(r, withheld=True, loss_centralized=1.0 / r, measured_epsilon=epsilon,
                    measured_delta=1e-5)
        )  # fmt: skip
    client = TestClient(dashboard_app(LiveSource(model)))
    run_page = client.get("/runs/run").text
    assert 'id="epsilon">1.3</strong>' in run_page
    assert 'id="epsilon-target">4</strong>' in run_page and 'id="chart-epsilon"' in run_page
    for page in (run_page, client.get("/").text):
        assert "disk full" not in page and "node-7" not in page  # the digest had them
        assert "withheld" in page
    assert client.get("/nodes/node-7").status_code == 404


def test_history_points_give_the_values_trackers_get() -> None:
    history = History()
    history.rounds = [
        RoundRecord(1, fit_results=3, fit_failures=1, phases={"probe": [2, 1]}),
        RoundRecord(2, withheld=True),
    ]
    for r in (1, 2):
        history.add_loss_distributed(r, 0.5 / r)
        history.add_metrics_centralized(r, {"accuracy": 0.4 * r})
        history.add_measurements(r, {"epsilon": 0.7 * r})
    points = history_points(history)
    assert [dict(p.values) for p in points] == [round_values(history, r) for r in (1, 2)]
    assert [(dict(p.phases), p.withheld) for p in points] == [round_phases(history, 1), ({}, True)]


def test_the_stream_sends_parts_when_a_round_ends_and_ends_when_stopped() -> None:
    model = _model()
    state = DashboardState(LiveSource(model), None)

    async def scenario() -> list[str]:
        events = _stream(state, "run", "run")
        seen = [await anext(events), await anext(events)]  # retry, then the first parts
        model.add_round(_report(1, loss_distributed=0.5))
        started = time.monotonic()
        seen.append(await anext(events))
        assert time.monotonic() - started < 1.0  # within a second of the round ending
        model.finish()
        state.stopping.set()
        seen.extend([await anext(events), await anext(events)])
        assert state.streams == 1
        with pytest.raises(StopAsyncIteration):
            await anext(events)
        assert state.streams == 0
        return seen

    retry, first, second, last, end = asyncio.run(scenario())
    assert retry.startswith("retry:")
    parts = [json.loads(e.split("data: ", 1)[1]) for e in (first, second, last)]
    assert 'round-counter">0<' in parts[0]["run-status"]
    assert 'round-counter">1<' in parts[1]["run-status"]
    assert "finished" in parts[2]["run-status"]
    assert end.startswith("event: end")


def test_a_token_is_needed_off_the_loopback_interface() -> None:
    model = _model()
    client = TestClient(dashboard_app(LiveSource(model), token="s3cret"))
    refused = client.get("/runs/run")
    assert refused.status_code == 401 and "token" in refused.text
    assert client.get("/runs/run?token=wrong").status_code == 401
    assert client.get("/events/runs/run").status_code == 401
    allowed = client.get("/runs/run?token=s3cret")
    assert allowed.status_code == 200 and allowed.cookies.get(TOKEN_COOKIE) == "s3cret"
    assert client.get("/").status_code == 200  # the cookie carries it from now on
    bearer = TestClient(dashboard_app(LiveSource(model), token="s3cret"))
    assert bearer.get("/", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    exposed = DashboardServer(LiveSource(model), "0.0.0.0:8050")
    assert exposed.token and len(exposed.token) >= 32 and exposed.url.endswith(exposed.token)
    assert DashboardServer(LiveSource(model), "127.0.0.1:0").token is None


def test_bad_addresses_and_missing_packages_are_one_line_errors(monkeypatch, capsys) -> None:
    assert parse_address("[::1]:80") == ("::1", 80) and parse_address(":0") == ("127.0.0.1", 0)
    for bad in ("localhost", "1.2.3.4:http", "h:70000"):
        with pytest.raises(ConfigurationError, match="HOST:PORT"):
            parse_address(bad)
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "uvicorn" else real(name, *a)
    )
    assert main(["simulate", "--rounds", "1", "--dashboard"]) == 2
    assert "pip install 'roost[dashboard]'" in capsys.readouterr().err


def test_simulate_serves_the_dashboard_while_it_runs_then_stops(capsys) -> None:
    import threading

    assert main(["simulate", "--clients", "3", "--rounds", "2", "--dashboard"]) == 0
    out = capsys.readouterr().out
    url = next(w for w in out.split() if w.startswith("http://127.0.0.1:"))
    assert url.endswith("/runs/run")
    assert not [t for t in threading.enumerate() if t.name == "roost-dashboard"]
    with pytest.raises(OSError):
        urllib.request.urlopen(url, timeout=2)  # stopped with the run


def test_neither_import_roost_nor_the_cli_loads_the_dashboard() -> None:
    code = (
        "import sys, roost\n"
        "from roost.cli import build_parser\n"
        "build_parser().parse_args(['simulate', '--rounds', '1'])\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('starlette', 'uvicorn', 'jinja2') or m.startswith('roost.dashboard')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={"PYTHONPATH": str(ROOT / "src"), "PATH": ""},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == "[]"


def _federation(tmp_path: Path) -> FederationSource:
    from roost.federation.store import Store

    store = Store.open(f"sqlite:///{tmp_path / 'coordinator.db'}")
    store.register_node("hospital-a", "ed25519:" + "A" * 43 + "=")
    store.register_node("hospital-b", "ed25519:" + "B" * 43 + "=")
    store.update_node("hospital-a", last_seen=time.time(), capacity=2)
    run_id = store.add_run(
        owner="ada", federation="prod", project="digits", bundle_sha256="0" * 64,
        signature=None, publisher_key=None, run_config=["num-rounds=3"], wanted_nodes=2,
    )  # fmt: skip
    store.update_run(run_id, status="running", started=time.time() - 5)
    store.add_assignment(run_id, "hospital-a")
    store.add_assignment(run_id, "hospital-b")
    store.update_assignment(run_id, "hospital-b", status="failed", reason="out of memory")
    run_dir = tmp_path / "runs" / str(run_id)
    (run_dir / "out").mkdir(parents=True)
    history = History()
    history.rounds = [RoundRecord(1, 1, 1, failed_clients=["hospital-b"]), RoundRecord(2, 2)]
    for r in (1, 2):
        history.add_loss_distributed(r, 1.0 / r)
    (run_dir / "out" / "history.json").write_text(history.to_json())
    (run_dir / "log.txt").write_text(
        "round 1/3 (1.0 s elapsed, ETA 2.0 s): fit 1 ok, 1 failed\n"
        "fit_round 1: client hospital-b: error: MemoryError: out of memory (first of this "
        "error; repeats are counted in the failure summary)\n"
        "round 2/3 (2.0 s elapsed, ETA 1.0 s): fit 2 ok\n"
    )
    return FederationSource(store, tmp_path)


def test_the_coordinators_pages_read_its_store_and_each_runs_files(tmp_path: Path, capsys) -> None:
    from roost.cli import build_parser
    from roost.cli.dashboard import coordinator_dashboard

    source = _federation(tmp_path)
    try:
        run = source.run("1")
        assert run is not None and run.num_rounds == 3 and run.current_round == 2
        assert [(f.reason, f.node_ids, f.rounds) for f in run.failures] == [
            ("MemoryError: out of memory", ("hospital-b",), (1,))
        ]
        federation = source.federation()
        assert [(n.name, n.online) for n in federation.nodes] == [
            ("hospital-a", True),
            ("hospital-b", False),
        ]
        assert federation.runs[0].current_round == 2 and federation.runs[0].num_rounds == 3
        assert federation.failures_label == "runs refused or failed"  # not failed fits
        node = source.node("hospital-b")
        assert node is not None and node.runs == (("1", "failed", "out of memory"),)
        assert [(f.kind, f.reason, f.count, f.rounds) for f in node.failures] == [
            ("run 1: failed", "out of memory", 1, ()),
            ("run 1: error", "MemoryError: out of memory", 1, (1,)),
        ]
        assert source.run("7") is None and source.run("x") is None and source.node("z") is None
        args = build_parser().parse_args(["coordinator", "--data", str(tmp_path), "--dashboard"])
        assert args.dashboard == "127.0.0.1:0" and not hasattr(args, "keep_serving")
        server = coordinator_dashboard(args, source.store, None)  # uvicorn, for real
        try:
            url = capsys.readouterr().out.split("dashboard: ", 1)[1].split()[0]
            with urllib.request.urlopen(url.rstrip("/") + "/runs/1", timeout=5) as response:
                html = response.read().decode()
        finally:
            server.stop()
        assert 'id="round-counter">2</strong>' in html and "hospital-b" in html
        before = source.version()
        source.store.update_run(1, status="completed", finished=time.time())
        assert source.version() != before
    finally:
        source.store.close()


def test_with_certificates_the_dashboard_serves_https(tmp_path: Path) -> None:
    import ssl

    from grpc_support import make_certificates

    paths = make_certificates(tmp_path)
    certificates = (str(paths["server"]), str(paths["server-key"]))
    trust = ssl.create_default_context(cafile=str(paths["ca"]))
    with DashboardServer(LiveSource(_model()), "127.0.0.1:0", certificates) as server:
        assert server.url.startswith("https://127.0.0.1:") and not server.exposed
        with urllib.request.urlopen(server.page_url("/runs/run"), context=trust) as response:
            assert response.status == 200 and "round-counter" in response.read().decode()


def test_a_tokenless_dashboard_answers_only_to_its_loopback_names() -> None:
    server = DashboardServer(LiveSource(_model()), "127.0.0.1:0")
    assert TestClient(server.app, base_url="http://127.0.0.1:8050").get("/").status_code == 200
    assert TestClient(server.app, base_url="http://localhost:8050").get("/").status_code == 200
    rebound = TestClient(server.app, base_url="http://attacker.example:8050")
    assert rebound.get("/runs/run").status_code == 400  # DNS rebinding reads nothing


def test_failures_logged_below_warning_never_reach_the_page(capsys) -> None:
    import logging

    from roost.cli.dashboard import released
    from roost.tracking.failures import FailureDigest

    digest = FailureDigest()
    logger = logging.getLogger("roost")  # the round loop's logger, where the digest filters
    level = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        with digest:
            for level_, client in ((logging.DEBUG, "3"), (logging.WARNING, "4")):
                failure = ClientFailure(client, f"reason {client}")
                logger.log(level_, "%s: %s", "fit_round 1", failure)
    finally:
        logger.setLevel(level)
    assert len(digest.groups) == 2
    assert [g.client_ids for g in released(digest)] == [["4"]]  # central DP logs at DEBUG
    assert main(["simulate", "--rounds", "1", "--keep-serving"]) == 2
    assert "--keep-serving keeps a dashboard up: add --dashboard" in capsys.readouterr().err


def test_serving_leaves_the_programs_logging_alone() -> None:
    import logging

    with DashboardServer(LiveSource(_model()), "127.0.0.1:0"):
        # uvicorn's own logging config would add its handlers, bound to this moment's
        # sys.stderr (a test's capture, closed later): logs go through the program's instead.
        added = [
            handler.get_name()
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
            for handler in logging.getLogger(name).handlers
            if handler.get_name() in ("default", "access")
        ]
    assert added == []


def test_the_run_config_leaves_out_where_the_run_reports_and_listens() -> None:
    from roost.cli import build_parser
    from roost.cli.dashboard import RunDashboard
    from roost.cli.report import run_params
    from roost.tracking.failures import FailureDigest

    flags = ["simulate", "--mlflow", "https://ada:pw@mlflow.example", "--dashboard", "--seed", "3"]
    args = build_parser().parse_args(flags)
    shown = RunDashboard(args, 5, run_params(vars(args)), FailureDigest()).model.config
    assert shown["seed"] == 3 and "mlflow" not in shown and "dashboard" not in shown
