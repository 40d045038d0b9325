"""What a user of `--dashboard` sees beyond the pages' plumbing: failures under --quiet, why a
run ended (Ctrl-C, the privacy budget), and charts whose colours and axes read right."""

from __future__ import annotations

import logging
import re

import pytest
from starlette.testclient import TestClient

from roost.cli import build_parser, main
from roost.cli.dashboard import RunDashboard
from roost.core.types import Failure
from roost.dashboard.app import dashboard_app
from roost.dashboard.charts import Line, line_chart
from roost.dashboard.model import RunModel
from roost.dashboard.sources import LiveSource
from roost.tracking.failures import FailureDigest


def test_with_quiet_a_failure_still_reaches_the_page(monkeypatch, capsys) -> None:
    from roost.cli.report import Reporter

    root, logger = logging.getLogger(), logging.getLogger("roost")
    monkeypatch.setattr(root, "handlers", [])  # as in a terminal: the CLI sets logging up
    monkeypatch.setattr(logger, "handlers", [])
    level = logger.level
    try:
        reporter = Reporter(build_parser().parse_args(["simulate", "--quiet", "--dashboard"]), 3)
        with reporter.digest:
            logger.warning("%s: %s", "fit_round 2", Failure("7", "OSError: disk full"))
    finally:
        logger.setLevel(level)
    assert [f.node_ids for f in reporter.dashboard.model.view().failures] == [("7",)]
    assert "disk full" not in capsys.readouterr().out  # --quiet still hides the log line


def _dashboard() -> RunDashboard:
    args = build_parser().parse_args(["simulate", "--dashboard"])
    return RunDashboard(args, 5, {}, FailureDigest())


def test_ctrl_c_shows_as_stopped_not_failed() -> None:
    dashboard = _dashboard()
    dashboard.finish(KeyboardInterrupt())
    view = dashboard.model.view()
    assert (view.status, view.message) == ("stopped", "interrupted (Ctrl-C)")


def test_a_run_stopped_by_its_privacy_budget_says_so_on_the_page(monkeypatch) -> None:
    views = []
    finish = RunDashboard.finish
    monkeypatch.setattr(
        RunDashboard, "finish", lambda self, *a: (finish(self, *a), views.append(self.model.view()))
    )
    args = ["simulate", "--clients", "20", "--rounds", "8", "--dp", "central", "--clip-norm", "1"]
    budget = ["--noise-multiplier", "1", "--target-epsilon", "5", "--fraction-fit", "0.5"]
    assert main([*args, *budget, "--quiet", "--dashboard"]) == 0
    (view,) = views
    assert view.status == "finished" and view.current_round < 8
    assert view.message.startswith("privacy budget reached: stopped after round 1 of 8")


def test_a_line_keeps_its_colour_when_the_other_has_no_points() -> None:
    both = line_chart("c", "loss", [Line("distributed", [(1, 0.5)]), Line("centralized", [(1, 1)])])
    alone = line_chart("c", "loss", [Line("distributed", []), Line("centralized", [(1, 1.0)])])
    colour = 'data-series="centralized" data-points="1" fill="none" stroke="#d62728"'
    assert colour in both and colour in alone


def test_an_axis_of_values_above_0_does_not_go_below_0() -> None:
    svg = line_chart("c", "loss", [Line("distributed", [(1, 2.1), (500, 0.01)])])
    ticks = re.findall(r'class="tick"[^>]*text-anchor="end">([^<]*)<', svg)  # the y axis
    assert ticks and min(float(tick) for tick in ticks) == 0.0
    signed = line_chart("c", "x", [Line("a", [(1, -1.0), (2, 1.0)])])
    assert ">-1.1</text>" in signed  # values below 0 keep their padding


def test_the_page_answers_the_browsers_icon_request() -> None:
    client = TestClient(dashboard_app(LiveSource(RunModel())), base_url="http://127.0.0.1")
    assert client.get("/favicon.ico").status_code == 204  # no 404 in the browser's console


@pytest.mark.parametrize("status", ["failed", "finished"])
def test_only_a_failed_runs_message_is_an_error(status: str) -> None:
    from roost.dashboard.views import run_parts

    model = RunModel()
    model.finish(status, "why")
    assert f'class="message {status}"' in run_parts(model.view())["run-status"]


def test_the_eta_of_a_resumed_run_is_at_the_pace_of_its_own_rounds() -> None:
    from roost.tracking import RoundReport

    model = RunModel(num_rounds=20)
    for server_round, elapsed in ((11, 1.0), (12, 2.0)):  # resumed after round 10
        model.add_round(RoundReport(server_round, 20, elapsed, {}))
    assert model.view().eta == pytest.approx(8.0, abs=0.5)  # 8 rounds left at 1 s each


def test_keep_serving_names_the_run_page_and_stops_on_ctrl_c() -> None:
    import os
    import signal
    import threading
    import time

    args = build_parser().parse_args(["simulate", "--dashboard", "--keep-serving"])
    dashboard = RunDashboard(args, 5, {}, FailureDigest())
    lines: list[str] = []
    dashboard.start(lines.append)
    dashboard.finish(None)
    before = signal.getsignal(signal.SIGINT)

    def ctrl_c() -> None:  # once `wait` has its handler: never a KeyboardInterrupt in pytest
        deadline = time.monotonic() + 10
        while signal.getsignal(signal.SIGINT) is before and time.monotonic() < deadline:
            time.sleep(0.01)
        if signal.getsignal(signal.SIGINT) is not before:
            os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=ctrl_c).start()
    dashboard.wait(lines.append)  # returns on Ctrl-C
    assert lines[-1].endswith("/runs/run (Ctrl-C to stop)") and lines[0].endswith("/runs/run")
    assert dashboard.server is None


@pytest.mark.parametrize("address", ["0.0.0.0:8050", "[::]:8050"])
def test_on_every_interface_the_url_names_this_machine(address: str) -> None:
    import socket

    from roost.dashboard.server import DashboardServer

    server = DashboardServer(LiveSource(RunModel()), address)
    assert server.page_url("/runs/run").startswith(f"http://{socket.gethostname()}:8050/runs/")
    assert "?token=" in server.url


def test_an_empty_chart_says_why_once_rounds_have_ended() -> None:
    from roost.dashboard.views import run_parts
    from roost.tracking import RoundReport

    def charts(*reports: RoundReport) -> str:
        model = RunModel(num_rounds=3)
        for report in reports:
            model.add_round(report)
        return run_parts(model.view())["run-charts"]

    assert "no rounds yet" in charts()
    private = RoundReport(1, 3, 1.0, {"measured_epsilon": 2.0}, withheld=True)
    assert "withheld under central DP" in charts(private)  # not "no rounds yet": it has one
    assert "not measured in this run" in charts(RoundReport(1, 3, 1.0, {"fit_results": 3.0}))


def test_a_nodes_counts_are_named_as_what_they_count() -> None:
    from roost.dashboard.views import (
        FederationView,
        NodeRow,
        NodeView,
        federation_parts,
        node_parts,
    )

    row = NodeRow("clinic-7", online=True, last_seen=0.0, capacity=0, runs_served=1)
    # The node reports its free slots: 0 while it serves its one run, not a capacity of 0.
    assert (
        "<th>free run slots</th>" in federation_parts(FederationView("f", (row,), ()))["fed-nodes"]
    )
    assert "<th>free run slots</th>" in node_parts(NodeView("clinic-7", row))["node-body"]
    # A coordinator's node "failures" are runs it refused or failed, not its failed fits.
    federation = FederationView("f", (row,), (), failures_label="runs refused or failed")
    assert "<th>runs refused or failed</th>" in federation_parts(federation)["fed-nodes"]
    assert "<th>runs refused or failed</th>" in node_parts(NodeView("clinic-7", row))["node-body"]


def test_the_run_pages_crumb_names_the_run_not_its_url() -> None:
    model = RunModel("run", "roost simulate")
    client = TestClient(dashboard_app(LiveSource(model)), base_url="http://127.0.0.1")
    page = client.get("/runs/run").text
    assert "/ run roost simulate</span>" in page and "run run" not in page


def test_a_config_file_turns_the_dashboard_on_with_true(tmp_path) -> None:
    from roost.cli.config_file import parse_with_config_file

    def parsed(text: str) -> object:
        (tmp_path / "run.toml").write_text(text)
        argv = ["simulate", "--config", str(tmp_path / "run.toml")]
        parser = build_parser()
        return parse_with_config_file(parser, argv, parser.parse_args(argv)).dashboard

    assert parsed("dashboard = true\n") == "127.0.0.1:0"  # as the bare --dashboard
    assert parsed("dashboard = false\n") is None
    assert parsed('dashboard = "127.0.0.1:8050"\n') == "127.0.0.1:8050"


def test_a_node_whose_id_has_a_slash_has_a_page() -> None:
    from roost.tracking.failures import FailureGroup

    def failures() -> list[FailureGroup]:
        group = FailureGroup("error", "OSError: disk full")
        group.add(Failure("site/a b", group.reason), 1)  # an id the Python API allows
        return [group]

    client = TestClient(
        dashboard_app(LiveSource(RunModel(failures=failures))), base_url="http://127.0.0.1"
    )
    (link,) = re.findall(r'href="(/nodes/[^"]*)"', client.get("/runs/run").text)
    page = client.get(link)
    assert page.status_code == 200 and "disk full" in page.text
    assert f'data-events="/events{link}"' in page.text  # its live updates: the same route


def test_a_running_runs_clock_moves_between_rounds_and_only_it_is_sent(monkeypatch) -> None:
    import asyncio
    import json

    from roost.dashboard import app

    monkeypatch.setattr(app, "TICK_S", 0.05, raising=False)
    model = RunModel(num_rounds=5)
    state = app.DashboardState(LiveSource(model), None)
    clock = iter(range(1000))
    monkeypatch.setattr(model, "view", _with_elapsed(model.view, clock))

    async def two_updates() -> list[dict[str, str]]:
        events = app._stream(state, "run", "run")
        await anext(events)  # retry
        first = await anext(events)
        tick = await asyncio.wait_for(anext(events), 5)  # no round in between
        state.stopping.set()
        return [json.loads(e.split("data: ", 1)[1]) for e in (first, tick)]

    first, tick = asyncio.run(two_updates())
    assert "run-charts" in first and list(tick) == ["run-status"]  # the charts are not resent
    assert "elapsed 0 s" in first["run-status"] and "elapsed 1 s" in tick["run-status"]


def _with_elapsed(view, clock):  # the model's view, a second later each time
    from dataclasses import replace

    return lambda: replace(view(), elapsed=float(next(clock)))


def test_the_eta_counts_down_between_rounds() -> None:
    from roost.dashboard.model import RoundPoint, RunView

    rounds = (RoundPoint(1, {}), RoundPoint(2, {}))
    view = RunView("run", "run", "running", 10, rounds, rounds_elapsed=4.0, since_round=1.5)
    assert view.eta == pytest.approx(2.0 * 8 - 1.5)  # 2 s a round, 8 to go, 1.5 s of it done
    assert RunView("run", "run", "running", 10, rounds, rounds_elapsed=4.0, since_round=99).eta == 0
