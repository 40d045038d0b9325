"""A Flower project directory as the `roost` command runs it: `roost run | server | client DIR`.

The command line finds this module by name (`roost.cli.app.PROJECT_KINDS`) when a directory's
`pyproject.toml` has `[tool.flwr.app]`; it does not import the Flower layer otherwise. The work
itself is `roost.compat.flwr.project`'s `run_project`, `serve_project` and `connect_project`.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from roost.cli.app import ForeignProjectApp
from roost.cli.dp_options import privacy_flags_given
from roost.cli.run import engine_choice
from roost.cli.settings import client_connection_options, server_deployment_options
from roost.compat.flwr.project import connect_project, run_project, serve_project
from roost.compat.flwr.pyproject import load_project
from roost.engines.threads import use_passive_wait
from roost.errors import ConfigurationError

if TYPE_CHECKING:
    from roost.cli.report import Reporter
    from roost.server.history import History
    from roost.server.loop import RoundCallback


def flower_project_app(root: Path, overrides: dict[str, Any]) -> FlowerProjectApp:
    """The app of the Flower project in `root`, its run config overridden by `overrides`."""
    load_project(root).run_config(overrides)  # refuse bad files and overrides up front
    return FlowerProjectApp(directory=root, run_config_overrides=overrides)


@dataclass(frozen=True)
class FlowerProjectApp(ForeignProjectApp):
    """A Flower project directory (`[tool.flwr.app]`), served and joined through
    `roost.compat.flwr.project`."""

    title: ClassVar[str] = "your Flower project"
    serves_whole_run: ClassVar[bool] = True

    def serve(self, args: argparse.Namespace, on_round_end: RoundCallback) -> History:
        """`serve_project` with `roost server`'s options."""
        return serve_project(
            Path(self.directory or "."),
            server_address=args.address,
            run_config_overrides=self.run_config_overrides,
            on_round_end=on_round_end,
            **server_deployment_options(args),
        )

    def connect(self, args: argparse.Namespace) -> bool:
        """`connect_project` with `roost client`'s options."""
        connect_project(
            Path(self.directory or "."),
            run_config_overrides=self.run_config_overrides,
            **client_connection_options(args),
        )
        return True

    def simulate_project(self, args: argparse.Namespace, reporter: Reporter) -> History:
        """`run_project` with `roost run`'s options (`--dp`, `--secagg`, `--compress` and
        `--client-metrics` are for roost projects: a Flower project builds its own strategy)."""
        directory = Path(self.directory or ".")
        if privacy_flags_given(args) or args.secagg or args.compress:
            raise ConfigurationError(
                "--dp, --secagg and --compress apply to roost projects; a Flower project builds "
                "its own strategy in its ServerApp"
            )
        if args.client_metrics:
            raise ConfigurationError(
                "--client-metrics applies to roost projects; a Flower project's ServerApp "
                "receives its nodes' replies as Messages and logs from them what it chooses"
            )
        engine, why = engine_choice(args.engine, None)
        reporter.print(
            f"{directory.name}: Flower project; engine: {engine} ({why}); {use_passive_wait()}"
        )
        return run_project(
            directory,
            run_config_overrides=self.run_config_overrides,
            num_nodes=args.clients,
            engine=engine,
            seed=args.seed,
            state_dir=args.state,
            resume=args.resume,
            on_round_end=reporter.track,
        )
