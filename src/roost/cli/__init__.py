"""The `roost` command: `roost simulate | run | new | server | client | privacy | plot`, a
federation's `coordinator | node | sign | ls | log | stop | pull | nodes`.

Each command is a module here (`roost.cli.simulate`, ...). Without `--app`, `simulate`, `server`
and `client` run the app named by `DEFAULT_APP`, loaded by name like any `--app`; this layer does
not import the applications above it.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from importlib import metadata

from roost.app import App
from roost.cli import (
    client,
    coordinator,
    log,
    ls,
    new,
    node,
    nodes,
    plot,
    privacy,
    pull,
    run,
    server,
    sign,
    simulate,
    stop,
)
from roost.cli.app import load_app
from roost.cli.config_file import parse_with_config_file
from roost.cli.options import CommandParser
from roost.engines.threads import use_passive_wait
from roost.errors import RoostError

__all__ = ["DEFAULT_APP", "build_parser", "main", "package_version"]

DEFAULT_APP = "roost.apps.digits:app"
"""The `--app` that `roost simulate | server | client` run when none is given."""


def package_version() -> str:
    """roost's version from the installed package's metadata."""
    try:
        return metadata.version("roost")
    except metadata.PackageNotFoundError:  # imported from a source tree that was never installed
        return "unknown (not installed)"


DOCS_EPILOG = (
    "`roost COMMAND --help` shows a command's options. The documentation site (tutorials,"
    " how-to guides, every command and flag) is built from docs/ in roost's checkout:"
    " `pip install -e '.[docs]' && mkdocs serve`; the command reference is"
    " docs/reference/cli.md."
)
"""Where `roost --help` sends a newcomer for more than the list of commands."""


def build_parser(default_app: App | None = None) -> CommandParser:
    """The `roost` argument parser; `default_app` (else `DEFAULT_APP`) runs without `--app`."""
    app = default_app if default_app is not None else load_app(DEFAULT_APP)
    parser = CommandParser(
        prog="roost",
        description="roost: federated learning, simulated or deployed.",
        epilog=DOCS_EPILOG,
    )
    parser.add_argument("-V", "--version", action="version", version=f"roost {package_version()}")
    simulate.add_command(parser, app)
    run.add_command(parser)
    new.add_command(parser)
    server.add_command(parser, app)
    client.add_command(parser, app)
    node.add_command(parser)
    sign.add_command(parser)
    privacy.add_command(parser, app)
    plot.add_command(parser)
    coordinator.add_command(parser)
    for command in (ls, log, stop, pull, nodes):
        command.add_command(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `roost` command; returns the exit status (2: a refused setting).

    Before anything loads a framework, idle OpenMP threads are told to sleep rather than spin
    (`OMP_WAIT_POLICY=PASSIVE`, unless set): spinning made torch and Keras runs 2-4x slower on a
    busy machine. The run's engine line says which value holds.
    """
    use_passive_wait()
    try:
        parser = build_parser()
        if not (sys.argv[1:] if argv is None else argv):  # `roost` alone: what can it do?
            parser.print_help()
            return 0
        args = parser.parse_args(argv)
        if getattr(args, "config", None):  # only `roost simulate` reads option files
            args = parse_with_config_file(parser, argv, args)
        return args.handler(args)
    except RoostError as error:
        print(f"roost: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("roost: interrupted", file=sys.stderr)
        return 130
