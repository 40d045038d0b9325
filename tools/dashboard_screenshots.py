"""Take the dashboard screenshots in docs/images/ with headless chromium.

    python tools/dashboard_screenshots.py            # writes docs/images/dashboard-*.png

The run page is a real run of the bundled digits demo (20 clients, 25 rounds), in which two
clients fail every fit (their data volume "is not mounted"), served by the same dashboard
`roost simulate --dashboard` serves. The federation and node pages are a coordinator's source
(`roost coordinator --dashboard`) over a store made here: six nodes, three runs, the first
being that demo run with its clients named as nodes.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from roost.apps.digits import app as digits
from roost.core.types import ClientId
from roost.dashboard.federation_source import FederationSource
from roost.dashboard.model import DashboardTracker, RunModel
from roost.dashboard.server import DashboardServer
from roost.dashboard.sources import LiveSource
from roost.server.history import History
from roost.settings import RunSettings
from roost.simulation import run_simulation
from roost.tracking.failures import FailureDigest

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "docs" / "images"
BROKEN = (7, 13)
NODES = [f"clinic-{n:02d}" for n in (2, 5, 7, 11, 13, 17)]
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip


class Unmounted:
    """A demo client whose data volume is gone: every fit fails."""

    def __init__(self, client: object, partition_id: int) -> None:
        self.client = client
        self.partition_id = partition_id

    def __getattr__(self, name: str) -> object:
        return getattr(self.client, name)

    def fit(self, parameters: object, config: object) -> object:
        raise OSError(f"/data/clinic-{self.partition_id:02d} is not mounted")


def demo_run() -> tuple[RunModel, History, FailureDigest]:
    """The digits demo with two broken clients, its rounds fed to a dashboard model."""
    settings = RunSettings(num_clients=20, num_rounds=25)
    simulation = digits.simulation(settings)

    def client_fn(context: object) -> object:
        client = simulation.client_fn(context)
        return Unmounted(client, context.partition_id) if context.partition_id in BROKEN else client

    digest = FailureDigest()
    config = {"app": "digits demo", "clients": 20, "rounds": 25, "strategy": "fedavg", "seed": 0}
    model = RunModel("run", "roost simulate", 25, config, lambda: digest.groups.values())
    with digest:
        history = run_simulation(
            client_fn,
            20,
            strategy=simulation.strategy,
            config=digits.server_config(settings),
            seed=0,
            engine="sequential",
            trackers=[DashboardTracker(model)],
        )
    model.finish()
    return model, history, digest


def as_coordinator_run(history: History, digest: FailureDigest, run_dir: Path) -> None:
    """Write the demo run as a coordinator's run directory, its clients named as nodes."""
    name: dict[ClientId, str] = {str(p): f"clinic-{p:02d}" for p in BROKEN}
    for record in history.rounds:
        record.failed_clients = [name.get(c, c) for c in record.failed_clients]
    (run_dir / "out").mkdir(parents=True)
    (run_dir / "out" / "history.json").write_text(history.to_json())
    lines = [f"round {r.server_round}/25: fit {r.fit_results} ok" for r in history.rounds]
    for group in digest.groups.values():
        for client in group.client_ids:
            lines.append(f"fit_round 1: client {name[client]}: {group.kind}: {group.reason}")
    (run_dir / "log.txt").write_text("\n".join(lines) + "\n")


def federation(root: Path, history: History, digest: FailureDigest) -> FederationSource:
    """A coordinator's store: six nodes (one offline), the demo run and two more."""
    from roost.federation.store import Store

    store = Store.open(f"sqlite:///{root / 'coordinator.db'}")
    now = time.time()
    for index, node in enumerate(NODES):
        store.register_node(node, f"ed25519:{index:043d}=")
        seen = now - (900 if node == "clinic-17" else 2 + index)
        store.update_node(node, last_seen=seen, capacity=2, runs_served=3 + index % 3)
    for project, status, message in (
        ("digits", "completed", ""),
        ("cifar10-keras", "failed", "node clinic-17 refused the run: publisher key not trusted"),
        ("digits-dp", "queued", ""),
    ):
        run_id = store.add_run(
            owner="ada", federation="clinics", project=project, bundle_sha256="0" * 64,
            signature=None, publisher_key=None, run_config=[], wanted_nodes=len(NODES),
        )  # fmt: skip
        if status != "queued":
            store.update_run(run_id, status=status, message=message, started=now - 60,
                             finished=now - 5)  # fmt: skip
            for node in NODES:
                store.add_assignment(run_id, node)
    store.update_assignment(2, "clinic-17", status="refused", reason="publisher key not trusted")
    store.update_node("clinic-17", failures=1)
    for node in NODES:
        store.update_assignment(1, node, status="exited", reason="")
    as_coordinator_run(history, digest, root / "runs" / "1")
    return FederationSource(store, root, title="federation clinics")


def shoot(url: str, path: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.goto(url)
            page.wait_for_selector("#live:text-matches('^live')")
            page.screenshot(path=str(path), full_page=True)
        finally:
            browser.close()
    print(f"wrote {path.relative_to(ROOT)}")


def main() -> None:
    model, history, digest = demo_run()
    with DashboardServer(LiveSource(model), "127.0.0.1:0") as server:
        shoot(server.page_url("/runs/run"), IMAGES / "dashboard-run.png")
    with tempfile.TemporaryDirectory() as scratch:
        source = federation(Path(scratch), history, digest)
        try:
            with DashboardServer(source, "127.0.0.1:0") as server:
                shoot(server.page_url("/"), IMAGES / "dashboard-federation.png")
                shoot(server.page_url("/nodes/clinic-07"), IMAGES / "dashboard-node.png")
        finally:
            source.store.close()


if __name__ == "__main__":
    main()
