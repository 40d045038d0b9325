"""Run a whole federation on one machine, in a script or a notebook.

With `state_dir`, every completed round is recorded there by `roost.server.state.StateStore`
(the store `roost server --state` uses), and `resume=True` continues a recorded run after its
last completed round: a run killed at any moment, resumed, ends with the same model, byte for
byte, as a run that was never interrupted.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from roost.client.client import ClientFn
from roost.core.files import atomic_write_bytes
from roost.core.types import Config, GetParametersIns, GetParametersRes, Parameters
from roost.core.validation import check_parameters
from roost.engines import make_engine
from roost.errors import ConfigurationError, InvalidMessageError
from roost.log import ensure_logging
from roost.outputs import save_run
from roost.server.history import History
from roost.server.loop import RoundCallback, ServerConfig, ServerState, run_rounds
from roost.server.state import StateStore
from roost.strategy.presets import FedAvg
from roost.strategy.strategy import Strategy
from roost.transport.base import Transport

log = logging.getLogger("roost")

RUN_FILE = "run.json"
"""Beside the store's files: what made the recorded run (its strategy), checked on resume."""


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
    state_dir: str | Path | None = None,
    resume: bool = False,
) -> History:
    """Simulate `num_clients` clients built by `client_fn` and return the run's History.

    Args:
        client_fn: builds the client for a `Context` (its `partition_id`, `num_partitions`, …);
            called each time a client is needed, so only working clients are in memory.
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
        state_dir: record every completed round there (SQLite + model files), so the run can be
            resumed; a directory that already records a run needs `resume=True`.
        resume: continue the run recorded in `state_dir` after its last completed round. It must
            be resumed with the same strategy, the same model and at least as many rounds.

    The final global model is `history.parameters`.
    """
    ensure_logging()
    strategy = strategy if strategy is not None else FedAvg()
    config = config if config is not None else ServerConfig(num_rounds=1)
    if engine == "vectorized" and strategy.secure_aggregation is not None:
        raise ConfigurationError(
            "the vectorized engine trains clients together and runs no secure aggregation; "
            "use engine='sequential' or 'process'"
        )
    store, saved = open_run_state(state_dir, resume, strategy, config)
    transport = make_engine(
        engine, client_fn, num_clients, run_config=run_config, **dict(engine_options or {})
    )
    try:
        if saved is not None:
            check_same_model(saved, strategy, transport, config, state_dir)
        history = run_rounds(
            strategy,
            transport,
            config,
            seed=seed,
            resume_from=saved,
            on_round_end=recording(store, on_round_end),
        )
    finally:
        transport.close()
    if out_dir is not None:
        save_run(out_dir, history)
    return history


def open_run_state(
    state_dir: str | Path | None, resume: bool, strategy: Strategy, config: ServerConfig
) -> tuple[StateStore | None, ServerState | None]:
    """The store of `state_dir` and the recorded state to resume from (None: a new run).

    Refuses, each with one line: `resume` without a directory, a directory that records a run
    without `resume`, and resuming another strategy's run or with fewer rounds than it did.
    """
    if state_dir is None:
        if resume:
            raise ConfigurationError("resume needs a state directory: pass state_dir (--state DIR)")
        return None, None
    store = StateStore(state_dir)
    saved = store.load()
    made_by = _read_run_file(Path(state_dir))
    if saved is None:
        if resume:
            log.info("no recorded round in %s: starting a new run", state_dir)
        _write_run_file(Path(state_dir), strategy)
        return store, None
    if not resume:
        raise ConfigurationError(
            f"{state_dir} already records a run (up to round {saved.server_round}); pass "
            "resume=True (--resume) to continue it, or choose an empty state directory"
        )
    this = type(strategy).__name__
    if made_by is not None and made_by.get("strategy") != this:
        raise ConfigurationError(
            f"{state_dir} records a run of {made_by.get('strategy')}, not {this}; resume with "
            f"the strategy that made it, or start {this} in a new state directory"
        )
    if saved.server_round > config.num_rounds:
        raise ConfigurationError(
            f"{state_dir} records {saved.server_round} completed rounds, more than the "
            f"{config.num_rounds} asked for; resume with {saved.server_round} rounds or more, "
            "or start a new state directory"
        )
    return store, saved


def check_same_model(
    saved: ServerState,
    strategy: Strategy,
    transport: Transport,
    config: ServerConfig,
    state_dir: str | Path | None,
) -> None:
    """Refuse to resume when this run's model is shaped unlike the recorded one."""
    fresh = _starting_model(strategy, transport, config.round_timeout)
    if fresh is None:  # no client could say; the first round's validation will tell
        return
    try:
        check_parameters(fresh, saved.parameters, check_finite=False)
    except InvalidMessageError as error:
        raise ConfigurationError(
            f"{state_dir} records a different model ({error}); resume with the model that "
            "made it, or start a new state directory"
        ) from None


def _starting_model(
    strategy: Strategy, transport: Transport, timeout: float | None
) -> Parameters | None:
    """The model this run would start from: the strategy's, else one client's."""
    parameters = strategy.initialize_parameters()
    if parameters is not None:
        return parameters
    client_id = transport.wait_for_clients(1, timeout)[0]
    for _, outcome in transport.run([(client_id, GetParametersIns())], timeout):
        if isinstance(outcome, GetParametersRes):
            return outcome.parameters
    return None


def recording(store: StateStore | None, on_round_end: RoundCallback | None) -> RoundCallback:
    """A round-end callback that records the round in `store` first, then calls `on_round_end`
    (so a callback that stops the run never loses the round that just completed)."""

    def round_end(state: ServerState) -> None:
        if store is not None:
            store.save(state)
        if on_round_end is not None:
            on_round_end(state)

    return round_end


def _read_run_file(directory: Path) -> dict[str, Any] | None:
    try:
        return json.loads((directory / RUN_FILE).read_text())
    except (OSError, ValueError):
        return None


def _write_run_file(directory: Path, strategy: Strategy) -> None:
    record = {"strategy": type(strategy).__name__}
    atomic_write_bytes(directory / RUN_FILE, json.dumps(record).encode())
