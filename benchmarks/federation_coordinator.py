"""A coordinator with many idle nodes, and how long a submitted run takes to its first round.

    python benchmarks/federation_coordinator.py                 # 500 idle nodes
    python benchmarks/federation_coordinator.py --nodes 100 --poll 1

Part 1 starts `roost coordinator` (SQLite in a temporary directory), registers N nodes, and lets
every node sign its challenge and then poll every --poll seconds (the nodes are threads of this
process, spread evenly over the interval) for --seconds. It reports the coordinator process's
resident memory and threads, and the poll round-trip time.

Part 2 submits the `roost new` project (unsigned, 3 rounds) to a fresh coordinator with two nodes
that run `roost client` subprocesses, and reports the time from submit to the server's first
completed round (`round 1/` in the run's log), and to the run's end.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from roost.cli import main as roost
from roost.federation.bundle import make_bundle, unpack_bundle
from roost.federation.control import ControlClient
from roost.federation.keys import b64decode, b64encode, public_key_line
from roost.federation.store import Store


def _port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _post(url: str, body: dict, session: str = "") -> dict:
    headers = {"Content-Type": "application/json"}
    if session:
        headers["Authorization"] = f"Node {session}"
    request = urllib.request.Request(url, json.dumps(body).encode(), headers, method="POST")
    with urllib.request.urlopen(request, timeout=60) as reply:
        return json.loads(reply.read())


def _log_in(url: str, name: str, key: Ed25519PrivateKey) -> str:
    challenge = b64decode(_post(f"{url}/v1/nodes/challenge", {"node": name})["challenge"])
    body = {
        "node": name,
        "challenge": b64encode(challenge),
        "signature": b64encode(key.sign(challenge)),
    }
    return _post(f"{url}/v1/nodes/session", body)["session"]


def _start_coordinator(
    data: Path, nodes: dict[str, Ed25519PrivateKey]
) -> tuple[subprocess.Popen, str]:
    data.mkdir(parents=True, exist_ok=True)
    store = Store.open(f"sqlite:///{data / 'coordinator.db'}")
    for name, key in nodes.items():
        store.register_node(name, public_key_line(key))
    token = store.add_person("bench", operator=True)
    store.close()
    port = _port()
    process = subprocess.Popen(
        [sys.executable, "-m", "roost.cli", "coordinator", "--data", str(data),
         "--address", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    line = process.stdout.readline()
    if "serving on" not in line:
        raise SystemExit(f"the coordinator did not start: {line}")
    process.token = token  # type: ignore[attr-defined]
    return process, f"http://127.0.0.1:{port}"


def _status(pid: int) -> tuple[float, int]:
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["Threads"])


def idle_nodes(count: int, poll: float, seconds: float) -> None:
    """Part 1: `count` nodes polling one coordinator."""
    keys = {f"node-{i:04d}": Ed25519PrivateKey.generate() for i in range(count)}
    with tempfile.TemporaryDirectory() as data:
        process, url = _start_coordinator(Path(data), keys)
        try:
            idle_rss, idle_threads = _status(process.pid)
            started = time.perf_counter()
            sessions = {name: _log_in(url, name, key) for name, key in keys.items()}
            sign_in = time.perf_counter() - started
            times: list[float] = []
            halt = threading.Event()
            samples: list[tuple[float, int]] = []

            def node(index: int, session: str) -> None:
                halt.wait(poll * index / count)  # spread the polls over the interval
                while not halt.is_set():
                    begin = time.perf_counter()
                    _post(f"{url}/v1/nodes/poll", {"running": [], "capacity": 1}, session)
                    times.append(time.perf_counter() - begin)
                    halt.wait(max(0.0, poll - (time.perf_counter() - begin)))

            threads = [
                threading.Thread(target=node, args=(i, s), daemon=True)
                for i, s in enumerate(sessions.values())
            ]
            for thread in threads:
                thread.start()
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                samples.append(_status(process.pid))
                time.sleep(0.5)
            halt.set()
            for thread in threads:
                thread.join()
            times.sort()
            peak_rss, peak_threads = max(s[0] for s in samples), max(s[1] for s in samples)
            print(f"{count} idle nodes polling every {poll:g} s for {seconds:g} s")
            print(
                f"  sign-in of all nodes      {sign_in:.2f} s ({sign_in / count * 1e3:.1f} ms each)"
            )
            print(f"  coordinator RSS           {idle_rss:.0f} MB idle, {peak_rss:.0f} MB peak")
            print(f"  coordinator threads       {idle_threads} idle, {peak_threads} peak")
            print(f"  polls                     {len(times)} ({len(times) / seconds:.0f}/s)")
            print(
                f"  poll round trip           p50 {statistics.median(times) * 1000:.1f} ms, "
                f"p99 {times[int(len(times) * 0.99)] * 1000:.1f} ms"
            )
        finally:
            process.terminate()
            process.wait()


def first_round(rounds: int = 3) -> None:
    """Part 2: submit-to-first-round latency with two nodes running `roost client`."""
    keys = {f"n{i}": Ed25519PrivateKey.generate() for i in range(2)}
    with tempfile.TemporaryDirectory() as data:
        root = Path(data)
        with contextlib.redirect_stdout(io.StringIO()):
            roost(["new", str(root / "app")])
        process, url = _start_coordinator(root / "fed", keys)
        clients: list[subprocess.Popen] = []
        try:
            sessions = {name: _log_in(url, name, key) for name, key in keys.items()}
            control = ControlClient(url, process.token)  # type: ignore[attr-defined]
            for session in sessions.values():
                _post(f"{url}/v1/nodes/poll", {"running": [], "capacity": 1}, session)
            submitted = time.perf_counter()
            run = control.submit(
                make_bundle(root / "app"), None, None, federation="bench",
                run_config=[f"num-rounds={rounds}"],
            )  # fmt: skip
            waiting = dict(sessions)
            while waiting:
                for name, session in list(waiting.items()):
                    answer = _post(f"{url}/v1/nodes/poll", {"running": [], "capacity": 1}, session)
                    for assignment in answer["assign"]:
                        app = root / name / "app"
                        download = urllib.request.Request(
                            url + assignment["bundle_url"],
                            headers={"Authorization": f"Node {session}"},
                        )
                        unpack_bundle(urllib.request.urlopen(download).read(), app)
                        clients.append(subprocess.Popen(
                            [sys.executable, "-m", "roost.cli", "client", "--app", str(app),
                             "--server", assignment["server"], "--node-id", name,
                             "--token", assignment["token"], "--partition-id", name[1:],
                             "--num-partitions", "2", "--quiet",
                             "--run-config", f"num-rounds={rounds}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                        ))  # fmt: skip
                        del waiting[name]
                time.sleep(0.05)
            log = root / "fed" / "runs" / str(run) / "log.txt"
            first = None
            while True:
                text = log.read_text() if log.exists() else ""
                if first is None and "round 1/" in text:
                    first = time.perf_counter() - submitted
                if control.run(run)["status"] in ("completed", "failed", "stopped"):
                    break
                time.sleep(0.02)
            total = time.perf_counter() - submitted
            print(
                f"submit -> first round (2 nodes, {rounds} rounds): {first:.2f} s; "
                f"submit -> run {control.run(run)['status']}: {total:.2f} s"
            )
        finally:
            for client in clients:
                client.kill()
            process.terminate()
            process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=500)
    parser.add_argument("--poll", type=float, default=2.0, help="seconds between a node's polls")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long to measure")
    args = parser.parse_args()
    idle_nodes(args.nodes, args.poll, args.seconds)
    first_round()


if __name__ == "__main__":
    main()
