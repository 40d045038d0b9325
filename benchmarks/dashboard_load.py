"""How fast the dashboard's pages load with 200 nodes and 1,000 rounds of history.

    python benchmarks/dashboard_load.py                     # 200 nodes, 1,000 rounds, 20 loads
    python benchmarks/dashboard_load.py --nodes 1000 --rounds 5000 --loads 5

Two sources, both served for real by uvicorn on 127.0.0.1:

- live: the in-memory model `roost simulate | run | server --dashboard` keeps, fed 1,000 round
  reports (counts, losses, accuracies, ε under DP, SecAgg+ phase counts) and a failure digest in
  which every one of the 200 nodes failed;
- coordinator: `roost coordinator --dashboard`'s source, reading a store of 200 nodes and a run
  directory whose `out/history.json` and `log.txt` hold 1,000 rounds.

For each page: its size, the time from request to the last byte (server render + transfer;
median and slowest of --loads), and, when Playwright and chromium are there, the browser's
DOMContentLoaded (median of 5 loads, a fresh page each). The issue asks for the run page in
under a second.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

from roost.core.types import Failure
from roost.dashboard.federation_source import FederationSource
from roost.dashboard.model import RunModel
from roost.dashboard.server import DashboardServer
from roost.dashboard.sources import LiveSource
from roost.server.history import History, RoundRecord
from roost.tracking import RoundReport
from roost.tracking.failures import FailureGroup

REASONS = ("OSError: disk full", "TimeoutError: no answer in 30 s", "ValueError: bad batch")


def live_source(nodes: int, rounds: int) -> LiveSource:
    """A finished run of `rounds` rounds in which each of `nodes` nodes failed a few times."""
    groups = [FailureGroup("error", reason) for reason in REASONS]
    for r in range(1, rounds + 1):
        node = f"node-{r % nodes:04d}"
        groups[r % len(groups)].add(Failure(node, groups[r % len(groups)].reason), r)
    model = RunModel("run", "benchmark", rounds, {"clients": nodes}, failures=lambda: groups)
    for r in range(1, rounds + 1):
        values = {
            "fit_results": nodes - 1.0, "fit_failures": 1.0, "evaluate_results": float(nodes),
            "loss_distributed": 2 / (1 + r), "loss_centralized": 2.1 / (1 + r),
            "distributed_accuracy": 1 - 1 / (1 + r), "centralized_accuracy": 1 - 1.1 / (1 + r),
            "measured_epsilon": 0.01 * r, "measured_delta": 1e-5,
        }  # fmt: skip
        phases = {"secagg_share_keys": (nodes, 0), "secagg_unmask": (nodes - 2, 2)}
        model.add_round(RoundReport(r, rounds, r * 0.5, values, phases=phases))
    model.finish()
    return LiveSource(model)


def coordinator_source(root: Path, nodes: int, rounds: int) -> FederationSource:
    """A store of `nodes` nodes and one finished run of `rounds` rounds on all of them."""
    from roost.federation.store import Store

    store = Store.open(f"sqlite:///{root / 'coordinator.db'}")
    for n in range(nodes):
        store.register_node(f"node-{n:04d}", f"ed25519:{n:043d}=")
        store.update_node(f"node-{n:04d}", last_seen=time.time(), capacity=1)
    run_id = store.add_run(
        owner="ada", federation="bench", project="digits", bundle_sha256="0" * 64,
        signature=None, publisher_key=None, run_config=[], wanted_nodes=nodes,
    )  # fmt: skip
    store.update_run(run_id, status="completed", started=time.time() - rounds, finished=time.time())
    for n in range(nodes):  # every node took part: its page reads the run's files too
        store.add_assignment(run_id, f"node-{n:04d}")
        store.update_assignment(run_id, f"node-{n:04d}", status="exited")
    history, log = History(), []
    for r in range(1, rounds + 1):
        failed = f"node-{r % nodes:04d}"
        history.rounds.append(RoundRecord(r, nodes - 1, 1, nodes, 0, [failed]))
        history.add_loss_distributed(r, 2 / (1 + r))
        history.add_metrics_centralized(r, {"accuracy": 1 - 1 / (1 + r)})
        log.append(f"round {r}/{rounds} ({r} s elapsed, ETA 1 s): fit {nodes - 1} ok, 1 failed")
        log.append(f"fit_round {r}: client {failed}: error: {REASONS[r % len(REASONS)]}")
    run_dir = root / "runs" / str(run_id)
    (run_dir / "out").mkdir(parents=True)
    (run_dir / "out" / "history.json").write_text(history.to_json())
    (run_dir / "log.txt").write_text("\n".join(log) + "\n")
    return FederationSource(store, root)


def fetch_times(url: str, loads: int) -> tuple[int, list[float]]:
    """The page's size in bytes and each load's seconds, request to last byte."""
    times, size = [], 0
    for _ in range(loads):
        started = time.perf_counter()
        with urllib.request.urlopen(url, timeout=30) as response:
            size = len(response.read())
        times.append(time.perf_counter() - started)
    return size, times


def browser_times(urls: list[str]) -> dict[str, float] | None:
    """DOMContentLoaded (ms, median of 5 fresh pages) of each URL; None without a browser."""
    chromium = shutil.which("chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    if chromium is None:
        return None
    args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
    results = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=args)
        try:
            for url in urls:
                samples = []
                for _ in range(5):
                    page = browser.new_page()
                    page.goto(url, wait_until="domcontentloaded")
                    samples.append(
                        page.evaluate(
                            "performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd"
                        )
                    )
                    page.close()
                results[url] = statistics.median(samples)
        finally:
            browser.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=1000)
    parser.add_argument("--loads", type=int, default=20)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        coordinator = coordinator_source(Path(scratch), args.nodes, args.rounds)
        try:
            live = live_source(args.nodes, args.rounds)
            for name, source, pages in (
                ("live", live, ["/runs/run", "/", "/nodes/node-0001"]),
                ("coordinator", coordinator, ["/runs/1", "/", "/nodes/node-0001"]),
            ):
                with DashboardServer(source, "127.0.0.1:0") as server:
                    urls = [server.page_url(page) for page in pages]
                    fetched = [fetch_times(url, args.loads) for url in urls]
                    dom = browser_times(urls)
                for page, url, (size, times) in zip(pages, urls, fetched, strict=True):
                    shown = "n/a" if dom is None else f"{dom[url]:.0f}"
                    rows.append((name, page, size, times, shown))
        finally:
            coordinator.store.close()
    print(f"dashboard page loads: {args.nodes} nodes, {args.rounds} rounds, 127.0.0.1")
    print(
        f"{'source':<12} {'page':<18} {'KiB':>6} {'median ms':>10} {'slowest ms':>11} "
        f"{'DOMContentLoaded ms':>20}"
    )
    for name, page, size, times, dom in rows:
        print(
            f"{name:<12} {page:<18} {size / 1024:>6.0f} {statistics.median(times) * 1e3:>10.1f} "
            f"{max(times) * 1e3:>11.1f} {dom:>20}"
        )


if __name__ == "__main__":
    main()
