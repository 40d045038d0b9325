"""Run a whole federation on one machine, in a script or a notebook."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from roost.client.client import ClientFn
from roost.core.types import Config
from roost.engines import make_engine
from roost.engines.warm import WarmClients
from roost.log import ensure_logging
from roost.outputs import save_run
from roost.server.history import History
from roost.server.loop import RoundCallback, ServerConfig, run_rounds
from roost.strategy.presets import FedAvg
from roost.strategy.strategy import Strategy


def run_simulation(
    client_fn: ClientFn,
    num_clients: int,
    *,
    strategy: Strategy | None = None,
    config: ServerConfig | None = None,
    seed: int | None = None,
    run_config: Config | None = None,
    out_dir: str | Path | None = None,
    on_round_end: RoundCallback | None = None,
    engine: str = "sequential",
    engine_options: Mapping[str, Any] | None = None,
    warm_clients: bool | WarmClients = False,
) -> History:
    """Simulate `num_clients` clients built by `client_fn` and return the run's History.

    Args:
        client_fn: builds the client for a `Context` (its `partition_id`, `num_partitions`, …);
            called each time a client is needed, so only working clients are in memory (unless
            `warm_clients` keeps them).
        num_clients: how many clients (partitions) exist.
        strategy: defaults to `FedAvg()`.
        config: defaults to `ServerConfig(num_rounds=1)`.
        seed: makes client sampling reproducible.
        run_config: passed to every client in `context.run_config`.
        out_dir: when given, `history.json` and `model.npz` are written there at the end.
        on_round_end: called with the `ServerState` after each round.
        engine: how clients run: "sequential" (one by one, in this process), "process" (a pool
            of worker processes), "ray" (Ray actors) or "vectorized" (a `roost.Task`'s whole
            cohort as one batched computation). Every engine gives the same model.
        engine_options: the engine's settings (see `roost.engines.make_engine`).
        warm_clients: keep the client built for a partition alive for its next instructions
            instead of calling `client_fn` again ("sequential", "process" and "ray" engines):
            True, or `roost.WarmClients(max_clients=..., max_bytes=...)` to bound them (least
            recently used are dropped). Off by default because a warm client also keeps what
            your code keeps between calls, e.g. a compiled Keras model's optimizer state, which
            changes the results of such code; a client that takes all its state from the
            parameters and config it is sent gives identical results warm and cold.

    The final global model is `history.parameters`.
    """
    ensure_logging()
    options = dict(engine_options or {})
    if warm_clients is not False:
        options["warm_clients"] = warm_clients
    transport = make_engine(engine, client_fn, num_clients, run_config=run_config, **options)
    try:
        history = run_rounds(
            strategy if strategy is not None else FedAvg(),
            transport,
            config if config is not None else ServerConfig(num_rounds=1),
            seed=seed,
            on_round_end=on_round_end,
        )
    finally:
        transport.close()
    if out_dir is not None:
        save_run(out_dir, history)
    return history
