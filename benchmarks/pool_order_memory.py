"""What cohort-order delivery costs in server memory on the process engine, side by side.

    python benchmarks/pool_order_memory.py                 # 40 clients, 16 MiB models, 2 workers
    python benchmarks/pool_order_memory.py --clients 20 --mib 4 --slow 1   # a quick look

The process and Ray engines hand results to the aggregator in the cohort's order (`in_order`,
the default), so that a seeded run gives the same bits every time. A result that finishes before
those ahead of it waits in memory, and calls run at most a window (`ORDER_WINDOW_PER_WORKER` ×
workers places) ahead of the first result not yet back. This measures the worst case on purpose:
client 0 trains for `--slow` seconds while the other workers could finish every other client; in
order, a window of them waits for it (and the workers then wait too); `in_order=False` hands each
on as it finishes and keeps the workers busy.

The server side consumes the exchange as the streaming aggregators do: each result is added to a
running float64 sum and dropped. Peak memory is what the server process allocates during the
exchange, measured with tracemalloc (NumPy reports its arrays to it), on top of the global model.
Both modes must give the same sum (to float tolerance); the table says whether they did.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np

MIB = 2**20


class SlowFirstClient:
    """Returns the model plus its partition id; partition 0 first sleeps `slow` seconds."""

    def __init__(self, partition_id: int, slow: float) -> None:
        self.partition_id = partition_id
        self.slow = slow

    def fit(self, parameters, config):
        if self.partition_id == 0:
            time.sleep(self.slow)
        return [p + self.partition_id for p in parameters], 1, {}

    def evaluate(self, parameters, config):
        return 0.0, 1, {}


def slow_first_client_fn(context):
    return SlowFirstClient(context.partition_id, float(context.run_config["slow"]))


def exchange(in_order: bool, clients: int, mib: int, slow: float, workers: int) -> dict:
    """Run one fit exchange on a fresh process engine; the peak memory, time and sum."""
    from roost.core.types import FitIns
    from roost.engines import make_engine

    model = [np.zeros(mib * MIB // 4, np.float32)]
    engine = make_engine(
        "process",
        slow_first_client_fn,
        clients,
        run_config={"slow": slow},
        max_workers=workers,
        in_order=in_order,
    )
    try:
        # Start the workers first (a one-client exchange) so their start-up is not measured.
        list(engine.run([("1", FitIns(model, {}))], None))
        cohort = [(str(k), FitIns(model, {})) for k in range(clients)]
        total = np.zeros(model[0].shape, np.float64)
        tracemalloc.start()
        started = time.perf_counter()
        for _, result in engine.run(cohort, None):
            total += result.parameters[0]
            del result
        seconds = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    finally:
        engine.close()
    return {"peak_mib": peak / MIB, "seconds": seconds, "sum": float(total.mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=40)
    parser.add_argument("--mib", type=int, default=16, help="model size in MiB (float32)")
    parser.add_argument("--slow", type=float, default=4.0, help="seconds client 0 trains")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    rows = {
        mode: exchange(mode, args.clients, args.mib, args.slow, args.workers)
        for mode in (True, False)
    }
    expected = args.clients * (args.clients - 1) / 2
    print(
        f"process engine, {args.workers} workers, {args.clients} clients, {args.mib} MiB model, "
        f"client 0 slow ({args.slow:g} s)"
    )
    print(f"{'in_order':>9} {'peak MiB':>9} {'÷ model':>8} {'seconds':>8} {'sum ok':>7}")
    for mode, row in rows.items():
        ok = abs(row["sum"] - expected) <= 1e-6 * expected
        print(
            f"{mode!s:>9} {row['peak_mib']:9.1f} {row['peak_mib'] / args.mib:8.1f} "
            f"{row['seconds']:8.2f} {ok!s:>7}"
        )
    ratio = rows[True]["peak_mib"] / max(rows[False]["peak_mib"], 1e-9)
    print(f"in_order=True peak ÷ in_order=False peak: {ratio:.1f}×")


if __name__ == "__main__":
    main()
