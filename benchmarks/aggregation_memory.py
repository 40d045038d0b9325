"""Server peak memory of weighted-mean aggregation: streaming vs stacking every update.

    python benchmarks/aggregation_memory.py                        # 1,000 updates, 10M parameters
    python benchmarks/aggregation_memory.py --clients 100 --parameters 1000000   # a quick look

Streaming: `FedAvg().aggregate_fit` consumes a generator of 1,000 client results for a float32
model of 10M parameters (two arrays). Each result is made when the strategy asks for the next one
and dropped once added, as results arriving from a transport would be, so at most one update
exists at a time; the running sum is float64.

Naive baseline: keep every update, `np.stack` them and take `np.average(..., weights=...)`. Its
memory grows with the client count, so it runs at two small counts (--baseline-clients) and is
extrapolated linearly to the streaming client count; the table says which rows are measured.

Peak memory is measured with tracemalloc (NumPy reports its array allocations to it), counting
only what the aggregation allocates on top of the global model. Both results are checked against
the weighted mean computed in closed form.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np

MB = 2**20


def make_model(num_parameters: int) -> list[np.ndarray]:
    """A float32 model of `num_parameters` in two arrays (a 3/4 matrix and a 1/4 vector)."""
    rows = 1000
    cols = max(1, (num_parameters * 3 // 4) // rows)
    vector = num_parameters - rows * cols
    return [np.zeros((rows, cols), np.float32), np.zeros(vector, np.float32)]


def client_value(k: int) -> float:
    """Client k's model is the global model + this constant (cheap to make, easy to check)."""
    return float((k % 7) - 3) * 0.25


def client_examples(k: int) -> int:
    return 10 + k % 13


def expected_mean(num_clients: int) -> float:
    weights = np.array([client_examples(k) for k in range(num_clients)], dtype=np.float64)
    values = np.array([client_value(k) for k in range(num_clients)])
    return float(weights @ values / weights.sum())


def results(global_model: list[np.ndarray], num_clients: int):
    from roost.core.types import FitRes

    for k in range(num_clients):
        parameters = [np.full(a.shape, client_value(k), a.dtype) for a in global_model]
        yield str(k), FitRes(parameters, client_examples(k), {})


def measure(function) -> tuple[float, float, object]:
    """(peak MB allocated while `function` ran, seconds, its return value)."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    started = time.perf_counter()
    value = function()
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / MB, elapsed, value


def streaming(global_model: list[np.ndarray], num_clients: int):
    import roost

    strategy = roost.FedAvg()
    new, _ = strategy.aggregate_fit(1, global_model, results(global_model, num_clients))
    return new


def naive_stack(global_model: list[np.ndarray], num_clients: int):
    kept = list(results(global_model, num_clients))
    weights = np.array([r.num_examples for _, r in kept], dtype=np.float64)
    out = []
    for index in range(len(global_model)):
        stacked = np.stack([r.parameters[index] for _, r in kept])
        out.append(np.average(stacked, axis=0, weights=weights).astype(np.float32))
        del stacked
    return out


def check(result: list[np.ndarray], num_clients: int) -> float:
    target = expected_mean(num_clients)
    return max(float(np.max(np.abs(a.astype(np.float64) - target))) for a in result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--parameters", type=int, default=10_000_000)
    parser.add_argument("--baseline-clients", type=int, nargs=2, default=(10, 20))
    args = parser.parse_args()

    global_model = make_model(args.parameters)
    model_mb = sum(a.nbytes for a in global_model) / MB
    print(
        f"model: {args.parameters:,} float32 parameters = {model_mb:.1f} MB; "
        f"streaming {args.clients:,} updates; naive baseline measured at "
        f"{args.baseline_clients[0]} and {args.baseline_clients[1]} updates\n"
    )

    rows = []
    # A tenth of the clients first: the streaming peak must not grow with the client count.
    small = max(1, args.clients // 10)
    peak, seconds, result = measure(lambda: streaming(global_model, small))
    rows.append(("streaming weighted mean", small, "measured", peak, seconds, check(result, small)))
    peak, seconds, result = measure(lambda: streaming(global_model, args.clients))
    rows.append(
        (
            "streaming weighted mean",
            args.clients,
            "measured",
            peak,
            seconds,
            check(result, args.clients),
        )
    )

    naive_peaks = []
    for count in args.baseline_clients:
        peak, seconds, result = measure(lambda count=count: naive_stack(global_model, count))
        naive_peaks.append((count, peak))
        rows.append(
            ("naive stack + average", count, "measured", peak, seconds, check(result, count))
        )
    (c1, p1), (c2, p2) = naive_peaks
    slope = (p2 - p1) / (c2 - c1)
    rows.append(
        (
            "naive stack + average",
            args.clients,
            "extrapolated",
            p1 + slope * (args.clients - c1),
            float("nan"),
            float("nan"),
        )
    )

    header = (
        f"{'method':<24} {'updates':>8} {'':>12} {'peak MB':>10} {'÷ model':>8} "
        f"{'seconds':>8} {'max error':>10}"
    )
    print(header)
    print("-" * len(header))
    for method, count, how, peak, seconds, error in rows:
        print(
            f"{method:<24} {count:>8,} {how:>12} {peak:>10.1f} {peak / model_mb:>8.2f} "
            f"{seconds:>8.1f} {error:>10.2g}"
        )
    streaming_peak = rows[1][3]
    print(
        f"\nstreaming peak = {streaming_peak / model_mb:.2f} × model size for "
        f"{args.clients:,} updates; the naive baseline needs "
        f"{rows[-1][3] / streaming_peak:.0f} × more memory at that count "
        f"(+{slope:.1f} MB per update)."
    )


if __name__ == "__main__":
    main()
