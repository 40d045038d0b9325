"""What `roost simulate | server | client` run: a `roost.App`, named with `--app module:attr`.

    # my_app.py
    import roost

    def client_fn(context: roost.Context):
        return MyClient(context.partition_id, context.num_partitions)

    app = roost.App(client_fn=client_fn, strategy=lambda: roost.FedAvg(min_available_clients=2))

    $ roost server --app my_app:app --rounds 3 --address 0.0.0.0:8080
    $ roost client --app my_app:app --server HOST:8080 --partition-id 0 --num-partitions 2
    $ roost simulate --app my_app:app --clients 10 --rounds 3

`attr` may also name a bare `client_fn`, which is enough for `roost client` and `roost simulate`.

`--app DIR` names a project directory instead: a roost project (`[tool.roost]` in its
`pyproject.toml`, see `roost.cli.project`; `roost new NAME` writes one) or a Flower project
(`[tool.flwr.app]`). `roost server --app DIR` and `roost client --app DIR` read the same
`pyproject.toml` as `roost run DIR`, with `--run-config KEY=VALUE` overriding its run config.

An `App` runs as it is; the command line's training options (`--lr`, `--fraction-fit`, ...) and
`--strategy` are for apps that build their clients and strategy from them. Such an app subclasses
`App` and overrides `simulation`, `server_strategy` and `make_client_fn` (and `add_arguments` for
options of its own); the app `roost` runs without `--app` is one.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from roost.cli.dp_options import add_privacy_arguments, privacy_flags_given
from roost.cli.project import (
    RoostProject,
    RunConfigOverrides,
    load_roost_project,
    parse_overrides,
    project_kind,
    read_pyproject,
)
from roost.cli.secagg_options import add_secagg_arguments
from roost.cli.settings import (
    RunSettings,
    client_connection_options,
    server_config,
    server_deployment_options,
)
from roost.cli.strategy_options import add_strategy_arguments, strategy_options
from roost.client.client import ClientFn
from roost.core.packages import missing_package
from roost.errors import ConfigurationError
from roost.server.loop import ServerConfig
from roost.strategy.presets import FedAvg
from roost.strategy.strategy import Strategy

if TYPE_CHECKING:
    from roost.server.history import History
    from roost.server.loop import RoundCallback


@dataclass(frozen=True)
class Simulation:
    """What `roost simulate` runs: the clients, the strategy, the engine, and a line to print."""

    client_fn: ClientFn
    strategy: Strategy
    engine: str
    notice: str | None = None


@dataclass(frozen=True)
class App:
    """A federated application for the command line: how to build clients, and the strategy.

    Args:
        client_fn: builds a client from a `roost.Context` (`partition_id`, `num_partitions`, ...).
        strategy: the server's strategy, or a function of no arguments returning a fresh one.
    """

    client_fn: ClientFn | None = None
    strategy: Strategy | Callable[[], Strategy] | None = None

    title: ClassVar[str] = "your app"
    """How help texts name this app."""

    description: ClassVar[str] = "Simulate a federation of your app's clients on this machine."
    """What `roost simulate --help` says the run does."""

    serves_whole_run: ClassVar[bool] = False
    """True when `serve` runs the whole server side itself (a Flower project's ServerApp)."""

    def make_strategy(self) -> Strategy | None:
        """The strategy, built fresh when `strategy` is a factory."""
        if self.strategy is None or isinstance(self.strategy, Strategy):
            return self.strategy
        strategy = self.strategy()
        if not isinstance(strategy, Strategy):
            raise ConfigurationError(
                f"the app's strategy factory returned a {type(strategy).__name__}, not a Strategy"
            )
        return strategy

    def add_arguments(self, parser: argparse.ArgumentParser, command: str) -> None:
        """Add this app's own options to `roost COMMAND` (none for a plain App)."""

    def simulation(self, args: argparse.Namespace, settings: RunSettings) -> Simulation:
        """What `roost simulate` runs: `client_fn` and the strategy (FedAvg when none is set)."""
        _refuse_strategy_options(args)
        strategy = self.make_strategy()
        return Simulation(
            client_fn=self.make_client_fn(settings.seed),
            strategy=strategy if strategy is not None else FedAvg(),
            engine=args.engine or "sequential",
        )

    def server_strategy(self, args: argparse.Namespace, settings: RunSettings) -> Strategy:
        """The strategy `roost server` runs; a plain App must name one."""
        _refuse_strategy_options(args)
        strategy = self.make_strategy()
        if strategy is None:
            raise ConfigurationError(
                "the app names no strategy; roost server needs roost.App(strategy=...)"
            )
        return strategy

    def make_client_fn(self, seed: int) -> ClientFn:
        """The `client_fn` of `roost client` and `roost simulate` (`seed`: their `--seed`)."""
        if self.client_fn is None:
            raise ConfigurationError("the app names no client_fn; set roost.App(client_fn=...)")
        return self.client_fn

    def server_config(self, args: argparse.Namespace) -> ServerConfig:
        """The rounds and timeout `roost server` runs (`--rounds`, `--round-timeout`)."""
        return server_config(args)

    def serve(self, args: argparse.Namespace, on_round_end: RoundCallback) -> History:
        """Serve the whole run for `roost server` (where `serves_whole_run`), calling
        `on_round_end` after every round; return its History."""
        raise NotImplementedError("roost server serves this app's server_strategy itself")

    def connect(self, args: argparse.Namespace) -> bool:
        """Run the whole node for `roost client`; False (the default) lets `roost client` run
        `make_client_fn`'s clients itself."""
        return False


def _refuse_strategy_options(args: argparse.Namespace) -> None:
    secure = getattr(args, "secagg", False)
    if args.strategy != "fedavg" or strategy_options(args) or privacy_flags_given(args) or secure:
        raise ConfigurationError(
            "--strategy, --dp, --secagg and their options build the strategy of the default app; "
            "with --app, your roost.App's strategy is used: set the strategy there (for privacy: "
            "roost.privacy.with_central_dp or LocalDPClientFn; "
            "secure_aggregation=roost.strategy.SecureAggregation(...))"
        )


def _simulate_with_run(directory: Path) -> ConfigurationError:
    return ConfigurationError(
        f"{directory} is a project directory: simulate it with `roost run {directory}` "
        "(roost simulate --app takes module:attribute)"
    )


@dataclass(frozen=True)
class ProjectApp(App):
    """A roost project directory (`[tool.roost]`) as the app of `roost server | client`."""

    project: RoostProject | None = None

    title: ClassVar[str] = "your project"

    @property
    def _project(self) -> RoostProject:
        if self.project is None:
            raise ConfigurationError("ProjectApp needs project=load_roost_project(directory)")
        return self.project

    def simulation(self, args: argparse.Namespace, settings: RunSettings) -> Simulation:
        """Refused: `roost run DIR` simulates a project (rounds and clients from its file)."""
        raise _simulate_with_run(self._project.directory)

    def server_strategy(self, args: argparse.Namespace, settings: RunSettings) -> Strategy:
        """The project's strategy, built from its run config."""
        _refuse_strategy_options(args)
        return self._project.make_strategy()

    def server_config(self, args: argparse.Namespace) -> ServerConfig:
        """The project's `num-rounds`; `--round-timeout` wins over its `round-timeout`."""
        if args.rounds != RunSettings().num_rounds:
            raise ConfigurationError(
                "with --app DIR the project's run config sets the rounds: pass "
                f"--run-config num-rounds={args.rounds} instead of --rounds"
            )
        timeout = args.round_timeout or self._project.round_timeout
        return ServerConfig(num_rounds=self._project.num_rounds, round_timeout=timeout)

    def make_client_fn(self, seed: int) -> ClientFn:
        """The project's `client_fn`, its contexts carrying the project's run config."""
        return self._project.client_fn()


@dataclass(frozen=True)
class FlowerProjectApp(App):
    """A Flower project directory (`[tool.flwr.app]`), served and joined through
    `roost.compat.flwr.project`."""

    directory: Path | None = None
    run_config_overrides: RunConfigOverrides = None

    title: ClassVar[str] = "your Flower project"
    serves_whole_run: ClassVar[bool] = True

    def simulation(self, args: argparse.Namespace, settings: RunSettings) -> Simulation:
        """Refused: `roost run DIR` simulates a Flower project."""
        raise _simulate_with_run(Path(self.directory or "."))

    def serve(self, args: argparse.Namespace, on_round_end: RoundCallback) -> History:
        """`serve_project` with `roost server`'s options."""
        from roost.compat.flwr.project import serve_project

        _refuse_strategy_options(args)
        return serve_project(
            Path(self.directory or "."),
            server_address=args.address,
            run_config_overrides=self.run_config_overrides,
            on_round_end=on_round_end,
            **server_deployment_options(args),
        )

    def connect(self, args: argparse.Namespace) -> bool:
        """`connect_project` with `roost client`'s options."""
        from roost.compat.flwr.project import connect_project

        connect_project(
            Path(self.directory or "."),
            run_config_overrides=self.run_config_overrides,
            **client_connection_options(args),
        )
        return True


def finish_app_command(
    parser: argparse.ArgumentParser,
    default_app: App,
    command: str,
    run: Callable[[argparse.Namespace, App], int],
) -> None:
    """End a command that runs an app (`roost simulate`, `roost server`): add the strategy, central
    DP and secure-aggregation options, then `default_app`'s own options for `command`; the command
    runs `run(args, default_app=default_app)`."""
    add_strategy_arguments(parser)
    add_privacy_arguments(parser)
    add_secagg_arguments(parser)
    default_app.add_arguments(parser, command)
    parser.set_defaults(handler=partial(run, default_app=default_app))


def add_run_config_option(parser: argparse.ArgumentParser) -> None:
    """`--run-config KEY=VALUE ...`: overrides of a project directory's run config."""
    parser.add_argument(
        "--run-config",
        metavar="KEY=VALUE",
        nargs="+",
        action="extend",
        default=None,
        help="with a project directory: override its run config (TOML values, e.g. "
        "num-rounds=3 learning-rate=0.05 name='cnn'), or read a .toml file",
    )


def load_project_app(
    directory: str | Path, run_config: RunConfigOverrides = None
) -> ProjectApp | FlowerProjectApp:
    """The app of the project in `directory`: a roost project or a Flower project."""
    root, data = read_pyproject(directory)
    kind = project_kind(data)
    if kind == "roost":
        return ProjectApp(project=load_roost_project(root, run_config))
    if kind == "flower":
        from roost.compat.flwr.pyproject import load_project

        overrides = parse_overrides(run_config)
        load_project(root).run_config(overrides)  # refuse bad files and overrides up front
        return FlowerProjectApp(directory=root, run_config_overrides=overrides)
    raise ConfigurationError(
        f"{root / 'pyproject.toml'} has neither [tool.roost] nor [tool.flwr.app]; "
        "create a roost project with `roost new NAME`"
    )


def load_app(spec: str, run_config: RunConfigOverrides = None) -> App:
    """The App `spec` names: `module:attr` (imported from the current directory or `sys.path`),
    or a project directory; `run_config` overrides a project's run config."""
    if Path(spec).is_dir():
        return load_project_app(spec, run_config)
    if run_config:
        raise ConfigurationError(
            "--run-config is for project directories (--app DIR); a module:attribute app "
            "reads no run config"
        )
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ConfigurationError(f"--app expects module:attribute (e.g. my_app:app), got {spec!r}")
    if os.getcwd() not in sys.path:  # like `python -m`, find modules next to where you run roost
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        if isinstance(error, ModuleNotFoundError):
            missing = missing_package(error, module_name, Path.cwd())
            if missing is not None:  # the app is there; a package it imports is not
                raise missing from None
        raise ConfigurationError(
            f"cannot import {module_name!r} for --app: {error}; run roost from the directory "
            "holding it or add that directory to PYTHONPATH"
        ) from None
    try:
        value = getattr(module, attribute)
    except AttributeError:
        raise ConfigurationError(f"module {module_name!r} has no attribute {attribute!r}") from None
    if isinstance(value, App):
        return value
    if callable(value):
        return App(client_fn=value)
    raise ConfigurationError(
        f"{spec} is a {type(value).__name__}; it must be a roost.App or a client_fn"
    )
