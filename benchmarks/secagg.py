"""Cost of secure aggregation per round: SecAgg+ (and optionally plain SecAgg) vs a plaintext sum.

    python benchmarks/secagg.py                          # 10, 50, 100 clients, 100k parameters
    python benchmarks/secagg.py --clients 20 --parameters 10000 --complete --dropout 0.2

Each client holds a float vector of --parameters values in [-1, 1]. SecAgg+ rows run the four
phases in one process with `roost.secagg.run_in_memory` (every message through its wire form),
with the default graph degree and threshold for the cohort; --complete adds plain SecAgg rows
(every client a neighbour of every other). --dropout makes that fraction of the clients go silent
after sharing keys, the costliest moment for the server (it must rebuild their masking keys).
The plaintext row: each client sends its float32 vector and the server adds them up.

Client time is per client (mean over clients, quantization included); server time is for the
whole round. Bytes count the payload of the aggregation messages only (arrays and values, not
transport framing, and not the model broadcast, which is the same in every mode): per client sent
(up) and received (down), and at the server in total. Every SecAgg result is checked to equal the
exact integer sum of the survivors' quantized inputs.
"""

from __future__ import annotations

import argparse
import random
import time

import numpy as np

from roost.secagg import Phase, Quantizer, SecAggParameters, default_parameters, run_in_memory
from roost.secagg.graph import smallest_secure_threshold

KB, MB = 1024, 1024**2


def plaintext_row(data: np.ndarray) -> dict:
    started = time.perf_counter()
    uploads = [row.astype(np.float32) for row in data]  # what each client would send
    client_seconds = (time.perf_counter() - started) / len(data)
    started = time.perf_counter()
    total = np.zeros(data.shape[1], dtype=np.float64)
    for upload in uploads:
        total += upload
    server_seconds = time.perf_counter() - started
    upload_bytes = uploads[0].nbytes
    return {
        "mode": "plaintext",
        "degree": "-",
        "threshold": "-",
        "client_ms": client_seconds * 1e3,
        "server_s": server_seconds,
        "up_kb": upload_bytes / KB,
        "down_kb": 0.0,
        "server_mb": len(data) * upload_bytes / MB,
        "check": "-",
    }


def secagg_row(data: np.ndarray, mode: str, parameters: SecAggParameters, dropout: float) -> dict:
    num_clients = len(data)
    quantizer = Quantizer(clip=1.0, max_clients=num_clients, bits=32)
    started = time.perf_counter()
    inputs = {f"client-{i}": quantizer.quantize(row) for i, row in enumerate(data)}
    quantize_seconds = (time.perf_counter() - started) / num_clients
    silent = random.Random(0).sample(sorted(inputs), round(dropout * num_clients))
    trace = run_in_memory(
        inputs, parameters=parameters, silent={Phase.MASKED_INPUT: silent} if silent else None
    )
    result = trace.result
    expected = sum((inputs[c] for c in result.survivors), np.zeros(data.shape[1], np.uint64))
    up = np.mean(list(trace.bytes_from_clients.values()))
    down = np.mean(list(trace.bytes_to_clients.values()))
    server_bytes = sum(trace.bytes_from_clients.values()) + sum(trace.bytes_to_clients.values())
    return {
        "mode": mode,
        "degree": parameters.degree,
        "threshold": parameters.threshold,
        "client_ms": (np.mean(list(trace.client_seconds.values())) + quantize_seconds) * 1e3,
        "server_s": trace.server_seconds,
        "up_kb": up / KB,
        "down_kb": down / KB,
        "server_mb": server_bytes / MB,
        "check": "exact" if np.array_equal(result.total, expected) else "WRONG",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 50, 100])
    parser.add_argument("--parameters", type=int, default=100_000)
    parser.add_argument("--complete", action="store_true", help="add plain SecAgg rows")
    parser.add_argument("--dropout", type=float, default=0.0)
    args = parser.parse_args()
    header = (
        f"{'clients':>7} {'mode':<10} {'k':>3} {'t':>3} {'client ms':>10} {'server s':>9} "
        f"{'up KB':>8} {'down KB':>8} {'server MB':>10} {'sum':>6}"
    )
    print(f"{args.parameters} parameters, dropout after key sharing {args.dropout:.0%}")
    print(header)
    print("-" * len(header))
    for num_clients in args.clients:
        data = np.random.default_rng(num_clients).uniform(-1, 1, (num_clients, args.parameters))
        rows = [
            plaintext_row(data),
            secagg_row(data, "SecAgg+", default_parameters(num_clients), args.dropout),
        ]
        if args.complete:
            complete = SecAggParameters(num_clients - 1, smallest_secure_threshold(num_clients - 1))
            rows.append(secagg_row(data, "SecAgg", complete, args.dropout))
        for row in rows:
            print(
                f"{num_clients:>7} {row['mode']:<10} {row['degree']:>3} {row['threshold']:>3} "
                f"{row['client_ms']:>10.1f} {row['server_s']:>9.3f} {row['up_kb']:>8.1f} "
                f"{row['down_kb']:>8.1f} {row['server_mb']:>10.1f} {row['check']:>6}"
            )


if __name__ == "__main__":
    main()
