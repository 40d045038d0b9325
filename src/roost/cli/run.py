"""`roost run [DIR]`: simulate the project in DIR, or submit it to a federation.

DIR is a roost project or a Flower project; `--federation NAME` (or `--coordinator URL`) submits
it to a federation's coordinator instead of simulating it here.

    roost new myapp && roost run myapp --run-config num-rounds=3 --out out
    roost run myapp --federation prod --sign-key publisher.pem

The run config comes from the project's `pyproject.toml` (`[tool.roost.config]`, or Flower's
`[tool.flwr.app.config]`); `--run-config KEY=VALUE` overrides its keys, and `--engine` and
`--clients` win over both.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from typing import Any

from roost.cli.app import ProjectApp, add_run_config_option, load_project_app
from roost.cli.compress_options import add_compression_arguments, compression, compression_line
from roost.cli.dp_options import add_privacy_arguments, privacy_settings
from roost.cli.options import CommandParser, positive_int
from roost.cli.project import RoostProject
from roost.cli.report import Reporter, add_output_options, history_table, run_params
from roost.cli.secagg_options import add_secagg_arguments, secure_aggregation
from roost.cli.settings import result_settings
from roost.cli.simulate import add_state_options, recording_options
from roost.cli.strategy_options import add_clip_arguments
from roost.cli.submit import add_submit_options, submit, submits
from roost.client.client import ClientFn
from roost.engines import ENGINES
from roost.engines.threads import use_passive_wait
from roost.errors import ConfigurationError
from roost.server.history import History
from roost.server.loop import ServerConfig
from roost.strategy.strategy import Strategy


def add_command(root: CommandParser) -> None:
    """Add `roost run` to `root`."""
    parser = root.add_command("run", __doc__)
    parser.add_argument(
        "directory", nargs="?", default=".", help="the project directory (default: .)"
    )
    add_run_config_option(parser)
    parser.add_argument(
        "--engine",
        choices=ENGINES,
        default=None,
        help="how clients run (default: the run config's engine, else sequential; the run's "
        "first line names the engine and why)",
    )
    parser.add_argument(
        "--clients",
        type=positive_int,
        default=None,
        help="number of clients (default: the run config's num-clients; for a Flower project "
        "its federation's num-supernodes)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="seed of client sampling and of the app's data and training: the same seed gives "
        "the same run (default: the run config's seed; a Flower project is unseeded without it)",
    )
    add_output_options(parser)
    add_state_options(parser)
    add_privacy_arguments(parser)
    add_clip_arguments(parser)
    add_secagg_arguments(parser)
    add_compression_arguments(parser)
    add_submit_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Simulate the project `args.directory`; print the summary and write `--out`."""
    from roost.outputs import check_out_dir, save_run

    if submits(args):
        return submit(args)
    if args.resume and not args.state:
        raise ConfigurationError("--resume needs --state DIR, the directory of the run to resume")
    if args.out:
        check_out_dir(args.out)
    app = load_project_app(args.directory, args.run_config)
    num_rounds = app.project.num_rounds if isinstance(app, ProjectApp) and app.project else None
    with Reporter(args, num_rounds, run_params(vars(args))) as reporter:
        if isinstance(app, ProjectApp):
            history = _run_roost_project(app, args, reporter)
        else:  # a Flower project, simulated by the Flower layer (roost.cli.app.PROJECT_KINDS)
            history = app.simulate_project(args, reporter)
    reporter.console.print(history_table(history))
    if args.out:
        for path in save_run(args.out, history, plot=not args.no_plot):
            reporter.print(f"wrote {path}")
    return reporter.conclude(history)


def engine_choice(flag: str | None, project_engine: str | None) -> tuple[str, str]:
    """The engine a project runs on and why: `--engine`, else the run config's, else sequential.

    Sequential is the default because a project's clients are its own Python objects, and
    running them in this process costs nothing to start, while every worker of the process or
    Ray engine first imports the app and its framework (about 1.5 s for torch); those engines
    pay off only when each client trains for seconds and there are cores to spare.
    """
    if flag is not None:
        return flag, "--engine"
    if project_engine is not None:
        return project_engine, "the run config's engine"
    return "sequential", (
        "the default: clients run in this process with no start-up cost; --engine process "
        "spreads clients that train for seconds over the cores"
    )


def _run_roost_project(app: ProjectApp, args: argparse.Namespace, reporter: Reporter) -> History:
    from roost.simulation import run_simulation

    assert app.project is not None  # load_project_app always sets it
    engine, why = engine_choice(args.engine, app.project.configured_engine)
    flags = {"num-clients": args.clients, "engine": engine, "seed": args.seed}
    run_config = {**app.project.run_config, **{k: v for k, v in flags.items() if v is not None}}
    project = replace(app.project, run_config=run_config)  # the flags reach context.run_config
    if project.engine not in ENGINES:
        raise ConfigurationError(
            f"run config engine = {project.engine!r}: choose one of {', '.join(ENGINES)}"
        )
    project_client_fn, project_strategy = project.client_fn(), project.make_strategy()
    reporter.print(
        f"{project.name}: {project.num_rounds} rounds, {project.num_clients} clients; "
        f"engine: {project.engine} ({why}); {use_passive_wait()}"
    )
    client_fn, strategy = _protected(
        project_client_fn, project_strategy, project.num_clients, args, reporter
    )
    return run_simulation(
        client_fn,
        project.num_clients,
        strategy=strategy,
        config=ServerConfig(num_rounds=project.num_rounds, round_timeout=project.round_timeout),
        seed=project.seed,
        run_config=run_config,
        engine=project.engine,
        **{**recording_options(args, reporter), "settings": _project_settings(args, project)},
    )


def _project_settings(args: argparse.Namespace, project: RoostProject) -> dict[str, Any]:
    """What a resumed project run must keep: its run config (all but num-rounds), with the
    flags that set it folded in, and the privacy and secure-aggregation flags."""
    flags = result_settings(args, leave_out=("run_config", "clients", "engine", "seed"))
    return {**project.resume_settings(), **flags}


def _protected(
    client_fn: ClientFn,
    strategy: Strategy,
    num_clients: int,
    args: argparse.Namespace,
    reporter: Reporter,
) -> tuple[ClientFn, Strategy]:
    """The project's clients and strategy with `--dp`, `--secagg` and `--compress` applied (as
    on `roost simulate`: central DP keeps the strategy's server optimizer; local DP wraps the
    clients)."""
    flags = argparse.Namespace(**vars(args), strategy="project")
    privacy = privacy_settings(
        flags,
        num_clients=num_clients,
        fraction_fit=strategy.fraction_fit,
    )
    secure = secure_aggregation(args)
    if secure is not None:
        strategy = strategy.replace(secure_aggregation=secure)  # checked as Strategy(...) does
    codec = compression(args)
    if codec is not None:
        strategy = strategy.replace(compression=codec)
        reporter.print(compression_line(strategy))
    if privacy is not None:
        reporter.print(privacy.describe())
        if privacy.mode == "central":
            strategy = privacy.central(strategy)
        client_fn = privacy.client_fn(client_fn)
    return client_fn, strategy
