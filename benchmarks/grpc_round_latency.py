"""Round latency, throughput and server memory of gRPC deployment on loopback.

    python benchmarks/grpc_round_latency.py               # 1M parameters; 10, 50, 100 clients
    python benchmarks/grpc_round_latency.py --clients 10 --rounds 5 --parameters 250000

For each cohort size, a fresh server process runs FedAvg rounds (every client trains every round,
no evaluation) over a float32 model; the clients run as threads in a few separate processes and
answer `fit` by returning the model they received, so the numbers measure the transport, not
training. The same rounds run in one process over the in-process transport, side by side, as the
baseline of the "vs in-process" ratio.

Columns:
  round s         median wall time of a fit round (first round excluded: connection warm-up)
  updates/s       client results aggregated per second
  MB/s            model bytes moved per second, both directions (N × model × 2 / round time)
  vs in-process   gRPC round time / in-process round time
  server peak MB  the server process's peak resident memory (ru_maxrss)
  peak - idle     peak minus the memory it had with the model loaded, before clients connected
  ÷ model         that difference in model sizes

Aggregation streams (a running sum, at most `max_concurrent_uploads` received models buffered),
so what still grows with the cohort is per-connection: gRPC's buffers (bounded by the fixed
receive window per client), one thread pair per client, and what the C allocator keeps in its
per-thread arenas after the round. Running the server with MALLOC_ARENA_MAX=2 in its environment
returns part of the last one.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time

import numpy as np

HERE = os.path.abspath(__file__)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _current_rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class EchoClient:
    """Answers fit with the parameters it received: the cheapest possible client."""

    def get_parameters(self, config):
        raise NotImplementedError

    def fit(self, parameters, config):
        return parameters, 1, {}

    def evaluate(self, parameters, config):
        return 0.0, 1, {}


def _strategy(num_clients: int, num_parameters: int):
    import roost

    return roost.FedAvg(
        fraction_evaluate=0.0,
        min_fit_clients=num_clients,
        min_evaluate_clients=0,
        min_available_clients=num_clients,
        initial_parameters=[np.zeros(num_parameters, np.float32)],
    )


def _round_times(run) -> list[float]:
    """Run rounds with `run(on_round_end)`; return the duration of each round after the first."""
    ends: list[float] = []
    run(lambda state: ends.append(time.perf_counter()))
    return [b - a for a, b in itertools.pairwise(ends)]


def serve(port: int, num_clients: int, num_parameters: int, rounds: int) -> None:
    """Server process: print one JSON line with round times and memory."""
    from roost.server.loop import ServerConfig, run_rounds
    from roost.transport.grpc.server import GrpcServerTransport

    strategy = _strategy(num_clients, num_parameters)
    transport = GrpcServerTransport(f"127.0.0.1:{port}")
    idle = _current_rss_mb()
    try:
        times = _round_times(
            lambda callback: run_rounds(
                strategy,
                transport,
                ServerConfig(num_rounds=rounds),
                seed=0,
                on_round_end=callback,
            )
        )
    finally:
        transport.close()
    print(json.dumps({"times": times, "peak_mb": _rss_mb(), "idle_mb": idle}), flush=True)


def host_clients(port: int, node_ids: list[str]) -> None:
    """Client process: one thread per client, until the server ends the run."""
    from roost.transport.grpc.client import GrpcClient
    from roost.transport.grpc.options import ClientOptions

    options = ClientOptions(reconnect_timeout=60)
    threads = [
        threading.Thread(target=GrpcClient(f"127.0.0.1:{port}", EchoClient, node_id, options).run)
        for node_id in node_ids
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def in_process(num_clients: int, num_parameters: int, rounds: int) -> list[float]:
    from roost.engines.sequential import SequentialEngine
    from roost.server.loop import ServerConfig, run_rounds

    strategy = _strategy(num_clients, num_parameters)
    transport = SequentialEngine(lambda context: EchoClient(), num_clients)
    return _round_times(
        lambda callback: run_rounds(
            strategy, transport, ServerConfig(num_rounds=rounds), seed=0, on_round_end=callback
        )
    )


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def measure(num_clients: int, num_parameters: int, rounds: int, processes: int) -> dict:
    port = _free_port()
    environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
    server = subprocess.Popen(
        [
            sys.executable,
            HERE,
            "--serve",
            str(port),
            str(num_clients),
            str(num_parameters),
            str(rounds),
        ],
        stdout=subprocess.PIPE,
        env=environment,
        text=True,
    )
    ids = [f"c{index:03d}" for index in range(num_clients)]
    hosts = [
        subprocess.Popen(
            [sys.executable, HERE, "--host", str(port), *ids[part::processes]],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=environment,
        )
        for part in range(min(processes, num_clients))
    ]
    try:
        output, _ = server.communicate(timeout=1800)
        for host in hosts:
            host.wait(60)
    finally:
        for process in (server, *hosts):
            if process.poll() is None:
                process.kill()
                process.wait()
    if server.returncode != 0:
        raise SystemExit(f"server failed with exit code {server.returncode}")
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 50, 100])
    parser.add_argument("--parameters", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=4, help="rounds per size (first not timed)")
    parser.add_argument("--client-processes", type=int, default=4)
    parser.add_argument("--serve", nargs=4, type=int, help=argparse.SUPPRESS)
    parser.add_argument("--host", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(*args.serve)
        return
    if args.host:
        host_clients(int(args.host[0]), args.host[1:])
        return

    import logging

    logging.getLogger("roost").setLevel(logging.WARNING)
    model_mb = args.parameters * 4 / 2**20
    print(
        f"gRPC on loopback: FedAvg fit rounds, {args.parameters:,} float32 parameters "
        f"({model_mb:.1f} MiB), clients in {args.client_processes} processes, "
        f"{os.cpu_count()} CPU(s)\n"
    )
    header = (
        f"{'clients':>7} {'round s':>8} {'updates/s':>10} {'MB/s':>8} {'in-proc s':>10} "
        f"{'vs in-process':>14} {'server peak MB':>15} {'peak - idle':>12} {'÷ model':>8}"
    )
    print(header)
    print("-" * len(header))
    for num_clients in args.clients:
        result = measure(num_clients, args.parameters, args.rounds, args.client_processes)
        grpc_s = statistics.median(result["times"])
        local_s = statistics.median(in_process(num_clients, args.parameters, args.rounds))
        extra = result["peak_mb"] - result["idle_mb"]
        print(
            f"{num_clients:>7} {grpc_s:>8.3f} {num_clients / grpc_s:>10.1f} "
            f"{2 * num_clients * model_mb / grpc_s:>8.0f} {local_s:>10.3f} "
            f"{grpc_s / local_s:>13.1f}x {result['peak_mb']:>15.0f} {extra:>12.0f} "
            f"{extra / model_mb:>8.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
