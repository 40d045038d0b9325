"""`--config FILE`: a TOML file whose keys are a command's long options, under the command line.

    # run.toml (top-level keys, or a [simulate] table)
    clients = 20
    rounds = 10
    quiet = true

The file's values become the command's defaults and the command line is parsed again on top, so a
flag given there wins.
"""

from __future__ import annotations

import argparse
import tomllib
from collections.abc import Sequence

from roost.cli.options import CommandParser
from roost.errors import ConfigurationError

_NOT_IN_FILES = ("help", "config")


def parse_with_config_file(
    root: CommandParser, argv: Sequence[str] | None, args: argparse.Namespace
) -> argparse.Namespace:
    """Use the TOML file `args.config` as the command's defaults, then parse `argv` again."""
    command = root.commands[args.command]
    try:
        with open(args.config, "rb") as file:
            data = tomllib.load(file)
    except OSError as error:
        raise ConfigurationError(f"cannot read --config {args.config}: {error}") from error
    except tomllib.TOMLDecodeError as error:
        raise ConfigurationError(f"--config {args.config} is not valid TOML: {error}") from error
    if isinstance(data.get(args.command), dict):  # a [simulate] table, or top-level keys
        data = data[args.command]
    options = {
        name: action for name, action in command.long_options.items() if name not in _NOT_IN_FILES
    }
    defaults = {}
    for key, value in data.items():
        action = options.get(key.replace("_", "-"))
        if action is None:
            raise ConfigurationError(
                f"{args.config}: unknown option {key!r}; known: {', '.join(sorted(options))}"
            )
        defaults[action.dest] = config_value(action, value, f"{args.config}: {key}")
    command.set_defaults(**defaults)
    return root.parse_args(argv)


def config_value(action: argparse.Action, value: object, where: str) -> object:
    """`value` from a config file, checked and converted as the option `action` would on the
    command line; `where` names it in errors."""
    if action.nargs == 0:  # a flag such as --quiet: true gives it, false leaves it out
        if not isinstance(value, bool):
            raise ConfigurationError(f"{where} must be true or false, got {value!r}")
        return action.const if value else action.default
    if action.nargs == "?" and isinstance(value, bool):  # `dashboard = true`: the bare flag
        return action.const if value else action.default
    many = action.nargs not in (None, "?")
    if not many and isinstance(value, list):
        raise ConfigurationError(f"{where} takes one value, got a list")
    items = value if isinstance(value, list) else [value]
    converted = [_convert(action, item, where) for item in items]
    return converted if many else converted[0]


def _convert(action: argparse.Action, item: object, where: str) -> object:
    if isinstance(item, dict | list):
        raise ConfigurationError(f"{where} must be a number or a string, got {item!r}")
    text = str(item).lower() if isinstance(item, bool) else str(item)
    try:
        result = action.type(text) if action.type else text
    except (argparse.ArgumentTypeError, ValueError) as error:
        raise ConfigurationError(f"{where}: {error}") from error
    if action.choices is not None and result not in action.choices:
        raise ConfigurationError(
            f"{where} must be one of {', '.join(map(str, action.choices))}, got {item!r}"
        )
    return result
