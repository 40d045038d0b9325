"""`roost simulate`: a federation on this machine (without `--app`: the default app)."""

from __future__ import annotations

import argparse
from typing import Any

from roost.cli.app import App, finish_app_command, load_app
from roost.cli.compress_options import compression_line
from roost.cli.options import CommandParser, positive_float, positive_int
from roost.cli.report import Reporter, add_output_options, history_table, run_params
from roost.cli.secagg_options import secure_aggregation_line
from roost.cli.settings import (
    RunSettings,
    add_app_option,
    add_run_options,
    resolved_options,
    result_settings,
    server_config,
    settings_from_args,
)
from roost.core.simclock import ClientProfiles, VirtualClock
from roost.engines import ENGINES
from roost.engines.threads import use_passive_wait
from roost.errors import ConfigurationError
from roost.server.state import last_recorded_round


def add_command(root: CommandParser, default_app: App) -> None:
    """Add `roost simulate` to `root`; `default_app` runs unless `--app` names another."""
    parser = root.add_command(
        "simulate",
        help=f"simulate a federation on this machine (default: {default_app.title})",
        description=default_app.description,
    )
    parser.add_argument(
        "--clients",
        type=positive_int,
        default=RunSettings().num_clients,
        help="number of clients (default: %(default)s)",
    )
    add_app_option(parser, default_app.title)
    add_run_options(parser)
    parser.add_argument(
        "--seed",
        type=int,
        default=RunSettings().seed,
        help="seed for data split, sampling and local shuffling (default: %(default)s)",
    )
    add_output_options(parser)
    add_state_options(parser)
    add_clock_options(parser)
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=None,
        help="read options from a TOML file (keys as the long options, e.g. rounds = 10); "
        "flags given on the command line override it",
    )
    parser.add_argument(
        "--engine",
        choices=ENGINES,
        default=None,
        help="how clients run (default: the fastest for the app: sequential for the demo; the "
        "run's first line names the engine and why)",
    )
    finish_app_command(parser, default_app, "simulate", run)


def add_state_options(parser: argparse.ArgumentParser) -> None:
    """`--state DIR` and `--resume`: a simulation that can be continued after a crash."""
    parser.add_argument(
        "--state",
        metavar="DIR",
        default=None,
        help="record every completed round in DIR, so that --resume can continue the run",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run recorded in --state DIR (same strategy and model, at least as "
        "many rounds)",
    )


def add_clock_options(parser: argparse.ArgumentParser) -> None:
    """`--client-speeds` and `--virtual-deadline`: run on a simulated clock."""
    group = parser.add_argument_group(
        "simulated clock", "client speeds and links in virtual time (--strategy fedbuff uses it)"
    )
    group.add_argument(
        "--client-speeds",
        metavar="SPEC",
        default=None,
        help="uniform, slow:FRACTION:SLOWDOWN (e.g. slow:0.1:10: 10%% of clients 10x slower), "
        "lognormal:SIGMA, or a .csv/.json trace (client_id, examples_per_second, "
        "bytes_per_second, latency_seconds); rounds then record their virtual time",
    )
    group.add_argument(
        "--virtual-deadline",
        type=positive_float,
        default=None,
        metavar="SECONDS",
        help="virtual seconds a client has for each task: a round waits that long at most, "
        "later clients are timeouts (needs --client-speeds)",
    )


def recording_options(
    args: argparse.Namespace, reporter: Reporter, settings: RunSettings | None = None
) -> dict[str, Any]:
    """The keyword arguments of `run_simulation` that say what a simulation records: its rounds
    in `--state DIR` (continued with `--resume`), and every round's values for the reporter's
    trackers (each client's own with `--client-metrics`). Says which round a resume continues
    after."""
    if args.resume and (done := last_recorded_round(args.state)) is not None:
        reporter.print(f"resuming after round {done} (recorded in {args.state})")
    return {
        "state_dir": args.state,
        "resume": args.resume,
        "trackers": reporter.trackers,
        "client_metrics": args.client_metrics,
        "settings": result_settings(args, settings),
    }


def _clock(args: argparse.Namespace, settings: RunSettings) -> VirtualClock | None:
    """The simulated clock `--client-speeds` and `--virtual-deadline` ask for (None: none)."""
    if args.client_speeds is None:
        if args.virtual_deadline is not None:
            raise ConfigurationError("--virtual-deadline needs --client-speeds")
        return None
    speeds = ClientProfiles.parse(args.client_speeds, settings.num_clients, seed=settings.seed)
    return VirtualClock(speeds, args.virtual_deadline)


def run(args: argparse.Namespace, default_app: App) -> int:
    """Run `roost simulate` as `args` say; print the summary and write `--out`."""
    from roost.outputs import check_out_dir, save_run
    from roost.simulation import run_simulation

    if args.resume and not args.state:
        raise ConfigurationError("--resume needs --state DIR, the directory of the run to resume")
    if args.out:
        check_out_dir(args.out)
    app = load_app(args.app) if args.app else default_app
    settings = settings_from_args(args, num_clients=args.clients)
    simulation = app.simulation(settings)
    with Reporter(
        args, settings.num_rounds, run_params(resolved_options(args, settings))
    ) as reporter:
        # The engine line also says how math threads wait (set by `roost.cli.main`).
        reporter.print(simulation.notice and f"{simulation.notice}; {use_passive_wait()}")
        reporter.print(settings.privacy and settings.privacy.describe())
        reporter.print(secure_aggregation_line(settings, simulation.strategy))
        reporter.print(compression_line(simulation.strategy))
        history = run_simulation(
            simulation.client_fn,
            settings.num_clients,
            strategy=simulation.strategy,
            config=server_config(settings),
            seed=settings.seed,
            engine=simulation.engine,
            clock=_clock(args, settings),
            **recording_options(args, reporter, settings),
        )
        if settings.privacy:
            reporter.ended_early = (
                settings.privacy.stopped_early(history, settings.num_rounds) or ""
            )
    reporter.console.print(history_table(history))
    reporter.print(reporter.ended_early)
    if args.out:
        for path in save_run(args.out, history, plot=not args.no_plot):
            reporter.print(f"wrote {path}")
    return reporter.conclude(history)
