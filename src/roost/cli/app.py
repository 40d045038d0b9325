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
from typing import TYPE_CHECKING, Any, ClassVar

from roost.app import App, Simulation, refuse_strategy_options
from roost.cli.compress_options import add_compression_arguments
from roost.cli.dp_options import add_privacy_arguments
from roost.cli.options import CommandParser
from roost.cli.project import (
    RoostProject,
    RunConfigOverrides,
    load_roost_project,
    parse_overrides,
    project_kind,
    read_pyproject,
)
from roost.cli.secagg_options import add_secagg_arguments
from roost.cli.settings import APP_OPTIONS
from roost.cli.strategy_options import add_strategy_arguments
from roost.client.client import ClientFn
from roost.core.packages import missing_package
from roost.errors import ConfigurationError
from roost.server.loop import ServerConfig
from roost.settings import RunSettings
from roost.strategy.strategy import Strategy

if TYPE_CHECKING:
    from roost.cli.report import Reporter
    from roost.server.history import History


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

    def simulation(self, settings: RunSettings) -> Simulation:
        """Refused: `roost run DIR` simulates a project (rounds and clients from its file)."""
        raise _simulate_with_run(self._project.directory)

    def server_strategy(self, settings: RunSettings) -> Strategy:
        """The project's strategy, built from its run config."""
        refuse_strategy_options(settings)
        return self._project.make_strategy()

    def server_config(self, settings: RunSettings) -> ServerConfig:
        """The project's `num-rounds`; `--round-timeout` wins over its `round-timeout`."""
        if "rounds" in settings.given:
            raise ConfigurationError(
                "with --app DIR the project's run config sets the rounds: pass "
                f"--run-config num-rounds={settings.num_rounds} instead of --rounds"
            )
        timeout = settings.round_timeout or self._project.round_timeout
        return ServerConfig(num_rounds=self._project.num_rounds, round_timeout=timeout)

    def run_settings(self) -> dict[str, Any]:
        """The project's run config but its number of rounds."""
        return self._project.resume_settings()

    def make_client_fn(self, seed: int) -> ClientFn:
        """The project's `client_fn`, its contexts carrying the project's run config."""
        return self._project.client_fn()


@dataclass(frozen=True)
class ForeignProjectApp(App):
    """A project directory of another framework's kind, served by a layer above the command line
    (`PROJECT_KINDS`): `roost run DIR` simulates it with `simulate_project`."""

    directory: Path | None = None
    run_config_overrides: RunConfigOverrides = None

    def simulation(self, settings: RunSettings) -> Simulation:
        """Refused: `roost run DIR` simulates a project directory."""
        raise _simulate_with_run(Path(self.directory or "."))

    def simulate_project(self, args: argparse.Namespace, reporter: Reporter) -> History:
        """What `roost run DIR` runs for this project: the whole simulation; its History."""
        raise NotImplementedError


PROJECT_KINDS: dict[str, str] = {"flower": "roost.compat.flwr.command:flower_project_app"}
"""Project kinds (`roost.cli.project.project_kind`) whose app a layer above the command line
builds, by "module:attribute" of a `(directory, run_config) -> ForeignProjectApp`. Like `--app`,
it is imported only when such a project is run: the command line does not import the Flower
layer."""


def finish_app_command(
    parser: CommandParser,
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
    add_compression_arguments(parser)
    before = set(parser.long_options.values())
    default_app.add_arguments(parser, command)
    own = [a.dest for a in parser.long_options.values() if a not in before]
    parser.set_defaults(
        handler=partial(run, default_app=default_app),
        **{APP_OPTIONS: tuple(dict.fromkeys(own))},  # the app finds them in settings.app_options
    )


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
) -> ProjectApp | ForeignProjectApp:
    """The app of the project in `directory`: a roost project or a Flower project."""
    root, data = read_pyproject(directory)
    kind = project_kind(data)
    if kind == "roost":
        return ProjectApp(project=load_roost_project(root, run_config))
    if kind in PROJECT_KINDS:
        module_name, _, attribute = PROJECT_KINDS[kind].partition(":")
        make_app = getattr(importlib.import_module(module_name), attribute)
        return make_app(root, parse_overrides(run_config))
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
