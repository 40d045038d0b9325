"""Run a Flower project (`[tool.flwr.app]` in its `pyproject.toml`) on roost, files unchanged.

    history = run_project("path/to/app", run_config_overrides="num-server-rounds=5")
    serve_project("path/to/app", server_address="0.0.0.0:9092")          # roost server --app
    connect_project("path/to/app", server_address="host:9092",
                    partition_id=0, num_partitions=2)                      # roost client --app

The project's apps are imported with `flwr` resolving to roost's compatibility layer
(`roost.compat.flwr.alias`). A Message-API `ServerApp` gets a `Grid` over the run's transport — a
simulation engine or the gRPC server — and its strategies run on roost's round loop; an older
`ServerApp(server_fn=...)` with a `ClientApp(client_fn=...)` runs on the loop directly.
"""

from __future__ import annotations

import importlib
import logging
import re
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from roost.client.client import ClientLike
from roost.client.client import Context as NodeContext
from roost.compat.flwr import alias
from roost.compat.flwr.clientapp import ClientApp, node_client
from roost.compat.flwr.message import RUN_ID, Context
from roost.compat.flwr.pyproject import FlowerProject, RunConfigOverrides, load_project
from roost.compat.flwr.records import RecordDict
from roost.compat.flwr.serverapp.app import ServerApp
from roost.compat.flwr.serverapp.grid import Grid, RunSettings
from roost.compat.flwr.unsupported import UnsupportedFlowerName
from roost.core.packages import missing_package, project_line
from roost.core.types import Config
from roost.deploy import start_client
from roost.engines import make_engine
from roost.engines.node_states import recorded_node_states
from roost.errors import ConfigurationError
from roost.log import ensure_logging
from roost.outputs import keep_outputs
from roost.server.history import History
from roost.server.loop import RoundCallback, ServerConfig, run_rounds
from roost.server.state import open_state  # the same state-directory rules
from roost.strategy.presets import FedAvg as RoostFedAvg
from roost.transport.base import Transport
from roost.transport.grpc.security import PemSource

log = logging.getLogger("roost")


def seed_global_generators(seed: int) -> None:
    """Seed Python's `random` and NumPy's global generator, which apps often draw from."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)  # the app's own global generator, on purpose


def run_settings(run_config: Mapping[str, Any]) -> dict[str, Any]:
    """What a resumed run must keep: the run config, but for the number of rounds (each app
    names its own key for it: every key that mentions rounds may change)."""
    return {f"run-config {key}": value for key, value in run_config.items() if "round" not in key}


def run_project(
    directory: str | Path,
    *,
    run_config_overrides: RunConfigOverrides = None,
    num_nodes: int | None = None,
    engine: str = "sequential",
    engine_options: Mapping[str, Any] | None = None,
    out_dir: str | Path | None = None,
    plot: bool = True,
    seed: int | None = None,
    federation: str | None = None,
    on_round_end: RoundCallback | None = None,
    replace_installed_flwr: bool = False,
    state_dir: str | Path | None = None,
    resume: bool = False,
) -> History:
    """Simulate the Flower project in `directory` on one machine; return the run's History.

    Args:
        directory: the project (its `pyproject.toml` names the apps and the run config).
        run_config_overrides: `{"key": value}` or Flower's `--run-config` text; only keys of
            `[tool.flwr.app.config]` may be overridden.
        num_nodes: simulated nodes. None takes `options.num-supernodes` of the federation (the
            project's default one, or `federation`); a number given here wins over it.
        engine / engine_options: how the nodes run ("sequential", "process", "ray"; see
            `roost.engines.make_engine`).
        out_dir: write `history.json`, `model.npz`, `history.csv` there at the end, and
            `plot.png` unless `plot` is false.
        seed: seeds node sampling, and Python's `random` and NumPy's global generator before the
            apps start (for apps that draw from them), so a run is reproducible.
        on_round_end: called with the round loop's state after every round.
        replace_installed_flwr: run on roost's layer even though Flower itself is installed.
        state_dir / resume: record every completed round of the app's first strategy run there,
            and continue a recorded run, as `serve_project` does.

    The History is that of the ServerApp's last `strategy.start(...)` (the final model is
    `history.parameters`); a `main` that starts no strategy gives an empty History.
    """
    ensure_logging()
    project = load_project(directory)
    run_config = project.run_config(run_config_overrides)
    count = num_nodes if num_nodes is not None else project.num_supernodes(federation)
    if count is None:
        raise ConfigurationError(
            f"how many nodes? {project.directory} sets no options.num-supernodes in its "
            "federation; pass num_nodes (roost run --clients N)"
        )
    if seed is not None:
        seed_global_generators(seed)
    settings = RunSettings(seed=seed, on_round_end=on_round_end)
    recorded = {**run_settings(run_config), "seed": seed, "nodes": count, "engine": engine}
    settings.store, settings.resume_from = open_state(state_dir, resume, None, recorded)

    def engine_for_project() -> Transport:
        client_fn = ProjectClientFn(str(project.directory), project.clientapp)
        options = dict(engine_options or {})
        return make_engine(engine, client_fn, count, run_config=run_config, **options)

    return _run_project_with(
        project, run_config, settings, engine_for_project, out_dir, plot, replace_installed_flwr
    )


def serve_project(
    directory: str | Path,
    *,
    server_address: str = "0.0.0.0:9092",
    run_config_overrides: RunConfigOverrides = None,
    seed: int | None = None,
    certificates: Sequence[PemSource] | None = None,
    auth_tokens: Mapping[str, str] | str | Path | None = None,
    state_dir: str | Path | None = None,
    resume: bool = False,
    out_dir: str | Path | None = None,
    plot: bool = True,
    client_wait_timeout: float | None = None,
    replace_installed_flwr: bool = False,
    on_round_end: RoundCallback | None = None,
    **transport_options: Any,
) -> History:
    """Serve the project's ServerApp over gRPC (`roost server --app DIR`); return the History.

    Nodes join with `connect_project` (`roost client --app DIR`). `state_dir` records every
    completed round of the app's first strategy run, and `resume=True` continues it after a
    restart; `out_dir` gets the run's files at the end (`plot=False`: no `plot.png`);
    `on_round_end` is called after every round. Other keyword arguments are fields of
    `roost.transport.grpc.options.ServerOptions` (`client_ca`, `max_message_bytes`,
    `max_concurrent_uploads`, `upload_idle_timeout`, …).
    """
    from roost.transport.grpc.options import ServerOptions
    from roost.transport.grpc.server import GrpcServerTransport

    ensure_logging()
    options = ServerOptions(
        certificates=certificates,
        auth_tokens=auth_tokens,
        client_wait_timeout=client_wait_timeout,
        **transport_options,
    )
    project = load_project(directory)
    run_config = project.run_config(run_config_overrides)
    settings = RunSettings(seed=seed, on_round_end=on_round_end)
    recorded = run_settings(run_config)  # the seed only seeds sampling, whose state is recorded
    settings.store, settings.resume_from = open_state(state_dir, resume, None, recorded)

    def grpc_server() -> Transport:
        return GrpcServerTransport(server_address, options)

    return _run_project_with(
        project, run_config, settings, grpc_server, out_dir, plot, replace_installed_flwr
    )


def connect_project(
    directory: str | Path,
    *,
    server_address: str,
    partition_id: int | None = None,
    num_partitions: int | None = None,
    node_id: str | None = None,
    run_config_overrides: RunConfigOverrides = None,
    root_certificates: PemSource | None = None,
    token: str | None = None,
    reconnect_timeout: float | None = 600.0,
    replace_installed_flwr: bool = False,
) -> None:
    """Run the project's ClientApp as a node of a roost server (`roost client --app DIR`).

    `partition_id` / `num_partitions` become the node config `partition-id` / `num-partitions`,
    as Flower's SuperNode sets them; the run config is the project's, with the overrides.
    Returns when the server ends the run.
    """
    project = load_project(directory)
    run_config = project.run_config(run_config_overrides)
    with project_session(project.directory, replace_installed_flwr):
        client_app = load_client_app(str(project.directory), project.clientapp)
        start_client(
            server_address=server_address,
            client_fn=lambda context: node_client(client_app, context),
            partition_id=partition_id,
            num_partitions=num_partitions,
            node_id=node_id,
            run_config=run_config,
            root_certificates=root_certificates,
            token=token,
            reconnect_timeout=reconnect_timeout,
        )


def run_apps(
    server_app: ServerApp,
    client_app: ClientApp,
    transport: Transport,
    run_config: Config,
    settings: RunSettings,
) -> History:
    """Run one federation of `server_app` with nodes that run `client_app`, over `transport`."""
    # A main(grid, context) may drive client_fn nodes (flwr.server.workflow's DefaultWorkflow);
    # a server_fn app can only drive them.
    if client_app.is_message_app and not server_app.is_message_app:
        raise ConfigurationError(
            "the ServerApp and the ClientApp use different APIs: pair @app.main() with "
            "@app.train()/@app.evaluate() handlers, or ServerApp(server_fn=...) with "
            "ClientApp(client_fn=...)"
        )
    context = Context(RUN_ID, 0, {}, RecordDict(), dict(run_config))
    settings.message_nodes = client_app.is_message_app
    if server_app.is_message_app:
        grid = Grid(transport, run_id=RUN_ID, settings=settings)
        server_app(grid, context)
        grid.wait_for_pushes()  # messages pushed and never pulled still reach their nodes
        return settings.histories[-1] if settings.histories else History()
    components = server_app.components(context)
    return run_rounds(
        components.strategy if components.strategy is not None else RoostFedAvg(),
        transport,
        components.config if components.config is not None else ServerConfig(),
        seed=settings.seed,
        resume_from=settings.take_resume_state(),
        on_round_end=settings.round_end,
        node_states=settings.node_states,
    )


def _run_project_with(
    project: FlowerProject,
    run_config: Config,
    settings: RunSettings,
    make_transport: Callable[[], Transport],
    out_dir: str | Path | None,
    plot: bool,
    replace_installed_flwr: bool,
) -> History:
    """Load the project's apps, run them over the transport `make_transport` builds, save."""
    with project_session(project.directory, replace_installed_flwr):
        server_app, client_app = load_apps(project)
        transport = make_transport()
        settings.node_states = recorded_node_states(transport, settings.store is not None)
        try:
            history = run_apps(server_app, client_app, transport, run_config, settings)
            # Written before the nodes are sent home: a result kept nowhere ends no run.
            trouble = keep_outputs(out_dir, plot, history)
        finally:
            transport.close()
    if trouble is not None:
        raise trouble
    return history


# -- importing the project's apps -----------------------------------------------------------

_path_lock = threading.Lock()
_path_users: dict[str, int] = {}


@contextmanager
def project_session(directory: Path, replace_installed_flwr: bool = False) -> Iterator[None]:
    """Inside: the project's modules import (its directory is on `sys.path`) and `flwr` is
    roost's layer. Several sessions may overlap (a server and its nodes in one process)."""
    alias.install(replace_installed=replace_installed_flwr)
    _add_path(str(directory))
    try:
        yield
    finally:
        _remove_path(str(directory))
        alias.uninstall()


def _add_path(path: str) -> None:
    with _path_lock:
        if _path_users.get(path, 0) == 0:
            sys.path.insert(0, path)
        _path_users[path] = _path_users.get(path, 0) + 1


def _remove_path(path: str) -> None:
    with _path_lock:
        _path_users[path] -= 1
        if _path_users[path] == 0:
            del _path_users[path]
            if path in sys.path:
                sys.path.remove(path)


def load_apps(project: FlowerProject) -> tuple[ServerApp, ClientApp]:
    """The project's ServerApp and ClientApp (inside a `project_session`)."""
    server_app = _component(str(project.directory), project.serverapp, ServerApp, "serverapp")
    return server_app, load_client_app(str(project.directory), project.clientapp)


_client_apps: dict[tuple[str, str], ClientApp] = {}


def load_client_app(directory: str, reference: str) -> ClientApp:
    """The ClientApp `reference` of the project in `directory`, loaded once per process."""
    key = (directory, reference)
    if key not in _client_apps:
        _client_apps[key] = _component(directory, reference, ClientApp, "clientapp")
    return _client_apps[key]


def _component(directory: str, reference: str, kind: type, name: str) -> Any:
    module_name, _, attribute = reference.partition(":")
    _forget_other_projects(module_name.partition(".")[0], Path(directory))
    try:
        module = importlib.import_module(module_name)
    except (UnsupportedFlowerName, alias.UnsupportedFlowerModule) as error:
        where = project_line(error, Path(directory)) or module_name
        raise ConfigurationError(
            f"{where}: {error}; import one of those instead, or run this project on Flower itself"
        ) from None
    except ModuleNotFoundError as error:
        missing = missing_package(error, module_name, Path(directory))
        if missing is not None:
            raise missing from None
        raise ConfigurationError(
            f"{name} = {reference!r}: no module {error.name or module_name!r} in the project "
            "directory"
        ) from None
    except ImportError as error:  # a name missing from a layer module without a refusal hook
        missing = re.match(r"cannot import name '(\w+)'", str(error))
        if missing is None or not (error.name or "").startswith(alias.TARGET):
            raise
        flower_name = f"{alias.ALIAS}{error.name[len(alias.TARGET) :]}.{missing[1]}"
        raise ConfigurationError(
            f"{project_line(error, Path(directory)) or module_name}: {flower_name} is not "
            "supported by roost's Flower layer; run this project on Flower itself"
        ) from None
    component = vars(module).get(attribute)
    if not isinstance(component, kind):
        raise ConfigurationError(
            f"{name} = {reference!r} must name a {kind.__name__}, found "
            f"{type(component).__name__ if component is not None else 'nothing'}"
        )
    return component


def _forget_other_projects(package: str, directory: Path) -> None:
    """Drop `package` from `sys.modules` if it was imported from another directory (two projects
    whose packages share a name, run one after the other in one process)."""
    loaded = sys.modules.get(package)
    origin = vars(loaded).get("__file__") if loaded is not None else None
    if origin is None or Path(origin).resolve().is_relative_to(directory):
        return
    for name in [n for n in sys.modules if n == package or n.startswith(package + ".")]:
        del sys.modules[name]


class ProjectClientFn:
    """A picklable `client_fn` for a project's ClientApp: engines with worker processes load the
    app in each worker (with the `flwr` alias and the project on `sys.path`)."""

    def __init__(self, directory: str, reference: str) -> None:
        self.directory = directory
        self.reference = reference

    def __call__(self, context: NodeContext) -> ClientLike:
        if (self.directory, self.reference) not in _client_apps:
            # A worker process: the session lasts as long as the worker.
            alias.install(replace_installed=True)
            _add_path(self.directory)
        return node_client(load_client_app(self.directory, self.reference), context)
