"""Option types and the argument parser of the `roost` command.

`CommandParser` is an `argparse.ArgumentParser` that remembers the long options added to it (on the
parser or in its groups), so that a config file can set them by name without reaching into
argparse's internals; the root parser also keeps its subcommands' parsers by name.
"""

from __future__ import annotations

import argparse
from typing import Any


class OptionGroup:
    """An argument group of a `CommandParser` that records its options on that parser."""

    def __init__(self, group: Any, parser: CommandParser) -> None:
        self._group = group
        self._parser = parser

    def add_argument(self, *flags: str, **kwargs: Any) -> argparse.Action:
        """Like `ArgumentParser.add_argument`: add an option to this group."""
        return self._parser.remember(self._group.add_argument(*flags, **kwargs))


class CommandParser(argparse.ArgumentParser):
    """An ArgumentParser that keeps `long_options` (`"rounds"` -> its Action) and `commands`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Set before argparse's own __init__, which already adds --help through add_argument.
        self.long_options: dict[str, argparse.Action] = {}
        self.commands: dict[str, CommandParser] = {}
        self._command_choices: Any = None
        self._constructed = False
        super().__init__(*args, **kwargs)
        self._constructed = True

    def add_argument(self, *flags: Any, **kwargs: Any) -> argparse.Action:
        """`ArgumentParser.add_argument`, remembering the option's long name."""
        return self.remember(super().add_argument(*flags, **kwargs))

    def add_argument_group(self, *args: Any, **kwargs: Any) -> Any:
        """`ArgumentParser.add_argument_group`, whose options are remembered here too."""
        group = super().add_argument_group(*args, **kwargs)
        # argparse makes its own default groups during __init__ and keeps using them itself.
        return OptionGroup(group, self) if self._constructed else group

    def remember(self, action: argparse.Action) -> argparse.Action:
        """Record `action` under its long option names (without the leading `--`)."""
        for option in action.option_strings:
            if option.startswith("--"):
                self.long_options[option[2:]] = action
        return action

    def add_command(self, name: str, **kwargs: Any) -> CommandParser:
        """Add the subcommand `name` (`roost NAME ...`) and return its parser."""
        if self._command_choices is None:
            self._command_choices = self.add_subparsers(dest="command", required=True)
        parser = self._command_choices.add_parser(name, **kwargs)
        self.commands[name] = parser
        return parser


def positive_int(text: str) -> int:
    """An integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def positive_float(text: str) -> float:
    """A number > 0."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def non_negative_float(text: str) -> float:
    """A number >= 0."""
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def fraction(text: str) -> float:
    """A number in [0, 1]."""
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {value}")
    return value


def probability(text: str) -> float:
    """A number strictly between 0 and 1."""
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), got {value}")
    return value
