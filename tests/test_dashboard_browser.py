"""The dashboard in a real browser: headless chromium (the system's, driven by Playwright) watches
a simulation that the test advances round by round. The page is loaded once; the round counter,
the charts, the failure digest and the ε figure must change in it without a reload, so these
tests fail when live updates break."""

from __future__ import annotations

import importlib
import shutil
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from roost.cli import main

# One worker keeps the module's one browser (pytest -n auto --dist loadgroup).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("dashboard-browser")]

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
LIVE_S = 5_000
"""How long (ms) a page may take to show a round: the dashboard promises one second; the rest
is room for a loaded CI machine."""

PACED_APP = """
import threading

import numpy as np
import roost
from roost.privacy import with_central_dp

GATE = threading.Semaphore(0)  # one release lets one round train
FAIL = threading.Event()  # set: client 1 fails from now on


class Paced(roost.Client):
    def __init__(self, partition_id):
        self.partition_id = partition_id

    def get_parameters(self, config):
        return [np.zeros(2)]

    def fit(self, parameters, config):
        if self.partition_id == 0 and not GATE.acquire(timeout=30):
            raise TimeoutError("the test never let this round go")
        if self.partition_id == 1 and FAIL.is_set():
            raise OSError("disk full on the hospital's node")
        return [parameters[0] + 0.1], 10, {}

    def evaluate(self, parameters, config):
        step = float(parameters[0][0])
        return 1.0 / (1.0 + step), 10, {"accuracy": min(0.5 + step, 1.0)}


def client_fn(context):
    return Paced(context.partition_id)


def centralized(server_round, parameters, config):
    step = float(parameters[0][0])
    return 1.1 / (1.0 + step), {"accuracy": min(0.4 + step, 1.0)}


plain = roost.App(
    client_fn=client_fn,
    strategy=lambda: roost.FedAvg(initial_parameters=[np.zeros(2)], evaluate_fn=centralized),
)
private = roost.App(
    client_fn=client_fn,
    strategy=lambda: with_central_dp(
        roost.FedAvg(initial_parameters=[np.zeros(2)], fraction_evaluate=0.0),
        noise_multiplier=1.0, clip_norm=1.0, expected_clients=3, num_clients=3,
    ),
)
"""


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("the browser tests need Debian's chromium: apt-get install chromium")
    return found


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=_chromium(), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: object) -> Iterator[object]:
    context = browser.new_context()  # type: ignore[attr-defined]
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.fixture
def paced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> object:
    """The paced apps' module (fresh per test), imported so that the test holds its gate."""
    name = f"paced_app_{abs(hash(str(tmp_path)))}"
    (tmp_path / f"{name}.py").write_text(PACED_APP)
    monkeypatch.syspath_prepend(str(tmp_path))
    return importlib.import_module(name)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Simulation:
    """`roost simulate --dashboard` on a thread; `stop()` lets every round go and joins it."""

    def __init__(self, module: object, app: str, rounds: int, *extra: str) -> None:
        self.module = module
        self.rounds = rounds
        self.port = _free_port()
        self.status: list[int] = []
        args = [
            "simulate", "--app", f"{module.__name__}:{app}", "--clients", "3",
            "--rounds", str(rounds), "--quiet", "--dashboard", f"127.0.0.1:{self.port}", *extra,
        ]  # fmt: skip
        self.thread = threading.Thread(target=lambda: self.status.append(main(args)))
        self.thread.start()

    def url(self, path: str) -> str:
        base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 20
        while True:  # the dashboard starts before the first round
            try:
                urllib.request.urlopen(base + "/static/dashboard.css", timeout=1).close()
                return base + path
            except OSError:
                if time.monotonic() > deadline or not self.thread.is_alive():
                    raise
                time.sleep(0.05)

    def release(self, rounds: int = 1) -> None:
        self.module.GATE.release(rounds)  # type: ignore[attr-defined]

    def stop(self) -> None:
        self.release(self.rounds)
        self.thread.join(timeout=30)


@pytest.fixture
def simulations() -> Iterator[list[Simulation]]:
    started: list[Simulation] = []
    try:
        yield started
    finally:
        for simulation in started:  # even when the test failed: no thread left waiting
            simulation.stop()


def _counter_reaches(page: object, value: int) -> None:
    page.wait_for_function(  # type: ignore[attr-defined]
        f"Number(document.getElementById('round-counter').textContent) >= {value}",
        timeout=LIVE_S,
    )


def _points(page: object, chart: str, series: str = "distributed") -> int:
    return page.evaluate(  # type: ignore[attr-defined]
        f"""() => {{
            const line = document.querySelector('#{chart} polyline[data-series="{series}"]');
            return line ? Number(line.dataset.points) : 0;
        }}"""
    )


def test_the_run_page_advances_live_and_shows_a_failing_node(paced, page, simulations) -> None:
    run = Simulation(paced, "plain", 4)
    simulations.append(run)
    page.goto(run.url("/runs/run"))
    page.wait_for_selector("#live:text-matches('^live')", timeout=LIVE_S)
    page.evaluate("window.loadedOnce = true")  # a reload would forget it
    assert page.inner_text("#round-counter") == "0" and _points(page, "chart-loss") == 0
    run.release(2)
    _counter_reaches(page, 2)
    page.wait_for_function(
        "document.querySelector('#chart-loss polyline[data-series=\"distributed\"]')"
        "?.dataset.points === '2'",
        timeout=LIVE_S,
    )
    assert _points(page, "chart-loss", "centralized") == 2
    assert _points(page, "chart-accuracy", "centralized") == 2
    assert page.inner_text("#no-failures") == "no failures"
    paced.FAIL.set()
    run.release(1)
    page.wait_for_selector("#run-digest a.node", timeout=LIVE_S)
    digest = page.inner_text("#run-digest")
    assert "disk full on the hospital's node" in digest and "nodes 1" in digest
    run.release(1)
    page.wait_for_selector("#run-state:text('finished')", timeout=LIVE_S)
    assert page.inner_text("#round-counter") == "4" and _points(page, "chart-loss") == 4
    assert page.evaluate("window.loadedOnce") is True
    run.thread.join(timeout=10)
    assert run.status == [0]
    page.wait_for_selector("#live:text-matches('stopped serving')", timeout=LIVE_S)


def test_under_central_dp_epsilon_updates_and_no_client_statistics_appear(
    paced, page, simulations
) -> None:
    run = Simulation(paced, "private", 3)
    simulations.append(run)
    paced.FAIL.set()  # a node fails every round: under central DP that must not show
    run.release(1)
    page.goto(run.url("/runs/run"))
    _counter_reaches(page, 1)
    first = float(page.inner_text("#epsilon"))
    page.evaluate("window.loadedOnce = true")
    run.release(1)
    _counter_reaches(page, 2)
    page.wait_for_function(f"Number(document.getElementById('epsilon').textContent) > {first}")
    assert page.evaluate("window.loadedOnce") is True
    text = page.inner_text("body")
    assert "withheld" in page.inner_text("#run-digest")
    assert "disk full" not in text and "fit ok/failed" not in text
    assert page.locator("a.node").count() == 0
    page.goto(run.url("/"))
    assert "disk full" not in page.inner_text("body") and page.locator("a.node").count() == 0


def test_a_dashboard_off_127_0_0_1_refuses_a_browser_without_its_token(page) -> None:
    from roost.dashboard.model import RunModel
    from roost.dashboard.server import DashboardServer
    from roost.dashboard.sources import LiveSource

    # Bound to the loopback interface, but with the token that any other host gets.
    server = DashboardServer(LiveSource(RunModel()), "127.0.0.1:0")
    server.token = "t" * 32
    server.app.state.dashboard.token = server.token
    with server:
        bare = server.url.split("?")[0]
        refused = page.goto(bare + "runs/run")
        assert refused.status == 401 and "needs its token" in page.inner_text("body")
        allowed = page.goto(server.page_url("/runs/run"))
        assert allowed.status == 200
        page.wait_for_selector("#live:text-matches('^live')", timeout=LIVE_S)  # cookie: stream
        assert page.goto(bare + "runs/run").status == 200
