"""Run a whole federation on one machine, in a script or a notebook.

With `state_dir`, every completed round is recorded there by `roost.server.state.StateStore`
(the store `roost server --state` uses), and `resume=True` continues a recorded run after its
last completed round: a run killed at any moment, resumed, ends with the same model, byte for
byte, as a run that was never interrupted. Each round's record includes every simulated node's
`Context.state` (on the engines that keep one: sequential, process, Ray), restored on resume.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from roost.client.client import ClientFn
from roost.core.simclock import ClientProfiles, VirtualClock
from roost.core.types import Config
from roost.engines import make_engine
from roost.engines.choice import default_engine
from roost.engines.node_states import recorded_node_states
from roost.engines.warm import WarmClients
from roost.errors import ConfigurationError, other_engines
from roost.log import ensure_logging
from roost.outputs import save_run
from roost.server.history import History
from roost.server.loop import RoundCallback, ServerConfig, ServerState, run_rounds
from roost.server.state import StateStore, open_state, recording
from roost.strategy.presets import FedAvg
from roost.strategy.strategy import Strategy
from roost.tracking.base import Tracker, TrackRounds
from roost.transport.base import Transport

log = logging.getLogger("roost")


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
    engine: str | None = None,
    engine_options: Mapping[str, Any] | None = None,
    state_dir: str | Path | None = None,
    resume: bool = False,
    trackers: Sequence[Tracker] = (),
    client_metrics: bool = False,
    warm_clients: bool | WarmClients = False,
    settings: Mapping[str, Any] | None = None,
    clock: VirtualClock | None = None,
) -> History:
    """Simulate `num_clients` clients of `client_fn`; return the History (final model included).

    Args:
        client_fn: builds the client for a `Context`, each time one is needed (so only working
            clients are in memory, unless `warm_clients` keeps them).
        num_clients: how many clients (partitions) exist.
        strategy: defaults to `FedAvg()`.
        config: defaults to `ServerConfig(num_rounds=1)`.
        seed: makes client sampling reproducible.
        run_config: passed to every client in `context.run_config`.
        out_dir: where to write `history.json`, `model.npz`, ... at the end.
        on_round_end: called with the `ServerState` after each round.
        engine: "sequential", "process", "ray" or "vectorized" (see `roost.engines`); every
            engine gives the same model. None (the default) chooses, and the run's first line
            says which and why: the process engine when client_fn trains with an ML framework
            and the run is long enough to earn back starting the workers (see
            `roost.engines.choice`), else the sequential engine.
        engine_options: the engine's settings (see `roost.engines.make_engine`).
        state_dir: record every completed round there (server state, nodes' `Context.state`).
        resume: continue the run in `state_dir` (same strategy and model, as many rounds).
        trackers: get every round's values (`roost.tracking`); closed when the run ends.
        client_metrics: also hand trackers each client's own fit and evaluate metrics.
        warm_clients: keep each partition's client alive between instructions (True, or
            `roost.WarmClients(max_clients=..., max_bytes=...)`, least recently used dropped).
            Off by default: a warm client keeps what your code keeps (a Keras optimizer's
            state, say), which changes such code's results; see docs/how-to/speed.md, Warm clients.
        settings: what the result depends on (JSON by name; default: clients, seed, engine).
        clock: run on this `roost.VirtualClock` (speeds, links, deadline): rounds record time.
    """
    ensure_logging()
    strategy = strategy if strategy is not None else FedAvg()
    config = config if config is not None else ServerConfig(num_rounds=1)
    default = {"num_clients": num_clients, "seed": seed, "engine": engine}
    store, saved = open_state(state_dir, resume, out_dir, settings or default)
    then = recording(store, on_round_end)
    track = TrackRounds(
        trackers, num_rounds=config.num_rounds, client_metrics=client_metrics, then=then
    )
    try:
        if engine is None:
            engine, engine_options = _default_engine(client_fn, num_clients, config, engine_options)
        simulated = _engine(
            engine, client_fn, num_clients, run_config, engine_options, warm_clients, strategy
        )
        history = _run_on(simulated, strategy, config, seed, saved, track, store, clock)
    finally:
        track.close()
    if out_dir is not None:
        save_run(out_dir, history)
    return history


def _run_on(
    engine: Transport,
    strategy: Strategy,
    config: ServerConfig,
    seed: int | None,
    saved: ServerState | None,
    track: TrackRounds,
    store: StateStore | None,
    clock: VirtualClock | None = None,
) -> History:
    """The rounds run on `engine` (its results shown to `track`'s trackers), closed at the end."""
    transport = track.observe(engine)
    try:
        track.check(strategy.withholds_client_statistics)  # inside: the engine still closes
        return run_rounds(
            strategy,
            transport,
            config,
            seed=seed,
            resume_from=saved,
            on_round_end=track,
            node_states=recorded_node_states(engine, recording=store is not None),
            clock=_clock(strategy, clock),
        )
    finally:
        transport.close()


def _clock(strategy: Strategy, clock: VirtualClock | None) -> VirtualClock | None:
    """The run's simulated clock: `clock`, or for a strategy that keeps time on one (FedBuff)
    and was given none, a clock whose clients are all alike."""
    if clock is None and strategy.needs_clock:
        log.info("simulated clock: every client alike (pass clock=roost.VirtualClock(...))")
        return VirtualClock(ClientProfiles.uniform())
    return clock


def _default_engine(
    client_fn: ClientFn,
    num_clients: int,
    config: ServerConfig,
    engine_options: Mapping[str, Any] | None,
) -> tuple[str, Mapping[str, Any] | None]:
    """The engine (and options) a run that names none runs on; logged as the run's first line."""
    if engine_options:  # options without an engine have always meant the sequential engine's
        log.info("engine: sequential (engine_options without engine)")
        return "sequential", engine_options
    choice = default_engine(client_fn, num_clients, config.num_rounds)
    log.info(choice.line())
    return choice.engine, choice.options


def _engine(
    engine: str,
    client_fn: ClientFn,
    num_clients: int,
    run_config: Config | None,
    engine_options: Mapping[str, Any] | None,
    warm_clients: bool | WarmClients,
    strategy: Strategy,
) -> Transport:
    """The engine `run_simulation` asked for, refused where it cannot run the strategy."""
    if engine == "vectorized" and strategy.secure_aggregation is not None:
        raise ConfigurationError(
            "the vectorized engine trains clients together and runs no secure aggregation; "
            f"use {other_engines('sequential', 'process')}"
        )
    if engine == "vectorized" and strategy.compression is not None:
        raise ConfigurationError(
            "the vectorized engine trains clients together and runs no client-side encoding, "
            f"so it cannot compress updates; use {other_engines('sequential', 'process')}"
        )
    options = dict(engine_options or {})
    if warm_clients is not False:
        options["warm_clients"] = warm_clients
    return make_engine(engine, client_fn, num_clients, run_config=run_config, **options)
