"""How many connected clients one roost server holds: threads, memory and round time on loopback.

    python benchmarks/grpc_load.py                          # 200, 1000 and 5000 clients, 20 rounds
    python benchmarks/grpc_load.py --clients 1000 --rounds 5 --parameters 100000

For each N, a fresh server process (`roost.start_server`, FedAvg, every client trains every round,
no evaluation, a float32 model of --parameters values) serves N light clients that one other
process holds on one asyncio event loop (`swarm.py`: each its own TCP connection, answering `fit`
with the model it received, in a roost client's default chunk size). The server reports, after
every round, its thread count and resident memory from /proc.

Columns:
  threads      the server's threads after the last round (with every client connected)
  RSS MB       the server's resident memory with every client connected before round 1, and
               after round 1 and the last round (flat memory: the last two are close)
  peak MB      the server's peak resident memory
  round s      median wall time of a round (round 1 excluded: connection warm-up)
  failures     client failures over all rounds
  load         the machine's 1-minute load average when the run ended (other work included)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def serve(args: argparse.Namespace) -> None:
    """The server process: prints one JSON line per round."""
    import numpy as np

    import roost

    def proc_status() -> dict[str, int]:
        fields = {}
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("Threads", "VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0])
        return fields

    started = [time.perf_counter()]

    def report(state) -> None:  # type: ignore[no-untyped-def]
        record = state.history.rounds[-1]
        now = time.perf_counter()
        line = {
            "round": state.server_round,
            "seconds": now - started[0],
            "failures": record.fit_failures,
            "results": record.fit_results,
            **proc_status(),
        }
        print(json.dumps(line), flush=True)
        started[0] = time.perf_counter()

    def fit_config(server_round: int) -> dict:
        if server_round == 1:  # every client connected, none sent anything yet
            print(json.dumps({"idle": proc_status()}), flush=True)
        return {}

    strategy = roost.FedAvg(
        min_fit_clients=args.clients,
        min_available_clients=args.clients,
        fraction_evaluate=0.0,
        initial_parameters=[np.zeros(args.parameters, np.float32)],
        on_fit_config_fn=fit_config,
    )

    def on_round_end(state) -> None:  # type: ignore[no-untyped-def]
        report(state)

    roost.start_server(
        server_address=args.address,
        config=roost.ServerConfig(num_rounds=args.rounds, round_timeout=600),
        strategy=strategy,
        max_concurrent_uploads=8,
        on_round_end=on_round_end,
    )


def load(args: argparse.Namespace) -> None:
    """The client process: N light clients until the server ends the run."""
    sys.path.insert(0, str(HERE))
    from swarm import Behaviour, Swarm

    behaviours = {f"n{i:05d}": Behaviour.ECHO for i in range(args.clients)}
    swarm = Swarm(args.address, behaviours, window_bytes=args.window_kb << 10, reconnect=True)
    swarm.start()
    try:
        while not all(c.run_over for c in swarm.clients.values()):
            time.sleep(0.5)
    finally:
        swarm.stop()


def measure(clients: int, args: argparse.Namespace) -> dict[str, float]:
    port = 20000 + clients % 10000
    address = f"127.0.0.1:{port}"
    common = ["--address", address, "--clients", str(clients)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    server = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "serve",
            *common,
            "--rounds",
            str(args.rounds),
            "--parameters",
            str(args.parameters),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    time.sleep(2.0)
    loader = subprocess.Popen(
        [sys.executable, __file__, "load", *common, "--window-kb", str(args.window_kb)], env=env
    )
    lines = [json.loads(line) for line in server.stdout if line.startswith("{")]
    idle = next(line["idle"] for line in lines if "idle" in line)
    rounds = [line for line in lines if "round" in line]
    server.wait()
    try:
        loader.wait(60)
    except subprocess.TimeoutExpired:  # clients cut off at the end keep reconnecting: stop them
        loader.kill()
        loader.wait()
    times = [r["seconds"] for r in rounds[1:]] or [rounds[0]["seconds"]]
    return {
        "clients": clients,
        "idle_rss": idle["VmRSS"] / 1024,
        "threads": rounds[-1]["Threads"],
        "rss_first": rounds[0]["VmRSS"] / 1024,
        "rss_last": rounds[-1]["VmRSS"] / 1024,
        "peak": max(r["VmHWM"] for r in rounds) / 1024,
        "round_s": statistics.median(times),
        "failures": sum(r["failures"] for r in rounds),
        "rounds": len(rounds),
        "load": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("role", nargs="?", choices=["measure", "serve", "load"], default="measure")
    parser.add_argument("--clients", type=int, nargs="+", default=[200, 1000, 5000])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--parameters", type=int, default=100_000)
    parser.add_argument("--window-kb", type=int, default=64, help="clients' receive window")
    parser.add_argument("--address", default="127.0.0.1:0")
    args = parser.parse_args()
    if args.role in ("serve", "load"):
        args.clients = args.clients[0]
        (serve if args.role == "serve" else load)(args)
        return
    print(f"{args.parameters:,} float32 parameters, {args.rounds} rounds, every client every round")
    print(
        "| clients | server threads | RSS MB connected, idle | RSS MB after round 1 → last "
        "| peak MB | round s | failures | load |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for clients in args.clients:
        row = measure(clients, args)
        print(
            f"| {row['clients']:,} | {row['threads']} | {row['idle_rss']:.0f} | "
            f"{row['rss_first']:.0f} → "
            f"{row['rss_last']:.0f} | {row['peak']:.0f} | {row['round_s']:.2f} | "
            f"{row['failures']} | {row['load']:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
