"""Option types and the argument parser of the `roost` command.

`CommandParser` is an `argparse.ArgumentParser` that remembers the long options added to it (on the
parser or in its groups), so that a config file can set them by name without reaching into
argparse's internals; the root parser also keeps its subcommands' parsers by name.
"""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Sequence
from typing import Any, NoReturn

RUN_CONFIG_KEYS = {"rounds": "num-rounds", "num-rounds": "num-rounds", "clients": "num-clients"}
"""Command-line option names that a project's run config calls otherwise."""


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

    def parse_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> argparse.Namespace:
        """`ArgumentParser.parse_args`, suggesting the nearest option for an unknown one."""
        parsed, unknown = self.parse_known_args(args, namespace)
        if unknown:
            command = self.commands.get(getattr(parsed, "command", None) or "", self)
            self.error(f"unrecognized arguments: {' '.join(unknown)}{command.hint(unknown)}")
        return parsed

    def hint(self, unknown: Sequence[str]) -> str:
        """What to type instead of the first unknown option (`; did you mean --rounds?`)."""
        flag = next((item for item in unknown if item.startswith("--")), None)
        if flag is None:
            return ""
        name = flag[2:].partition("=")[0]
        if "run-config" in self.long_options:  # a project command: its settings are the config's
            key = RUN_CONFIG_KEYS.get(name, name)
            value = next(iter(unknown[unknown.index(flag) + 1 :]), "VALUE")
            nearest = difflib.get_close_matches(name, list(self.long_options), n=1, cutoff=0.8)
            if not nearest:
                return f"; set the project's settings with --run-config {key}={value}"
        nearest = difflib.get_close_matches(name, list(self.long_options), n=1, cutoff=0.5)
        return f"; did you mean --{nearest[0]}?" if nearest else ""

    def error(self, message: str) -> NoReturn:
        """Print the one useful line (not the whole usage block) and exit with status 2."""
        self.exit(2, f"{self.prog}: error: {message}\n(see '{self.prog} --help' for the options)\n")

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

    def add_command(self, name: str, doc: str | None = None, **kwargs: Any) -> CommandParser:
        """Add the subcommand `name` (`roost NAME ...`) and return its parser.

        `doc`, the command module's docstring, is its help, written once: `roost --help` lists
        the summary after its first line's colon, and `roost NAME --help` shows all of it, its
        examples as written. Explicit `help=` / `description=` win.
        """
        if doc is not None:
            summary = doc.split("\n", 1)[0].split(": ", 1)[-1].rstrip(".")
            kwargs = {
                "help": summary,
                "description": doc.strip(),
                "formatter_class": argparse.RawDescriptionHelpFormatter,
                **kwargs,
            }
        if self._command_choices is None:
            self._command_choices = self.add_subparsers(dest="command", required=True)
        parser = self._command_choices.add_parser(name, **kwargs)
        self.commands[name] = parser
        return parser


def _number(text: str, kind: type[int] | type[float]) -> Any:
    try:
        return kind(text)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None


def positive_int(text: str) -> int:
    """An integer >= 1."""
    value = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0."""
    value = _number(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def positive_float(text: str) -> float:
    """A number > 0."""
    value = _number(text, float)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def non_negative_float(text: str) -> float:
    """A number >= 0."""
    value = _number(text, float)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def fraction(text: str) -> float:
    """A number in [0, 1]."""
    value = _number(text, float)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {value}")
    return value


def positive_fraction(text: str) -> float:
    """A number in (0, 1]."""
    value = _number(text, float)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {value}")
    return value


def probability(text: str) -> float:
    """A number strictly between 0 and 1."""
    value = _number(text, float)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), got {value}")
    return value


def address(text: str) -> str:
    """`host:port` with a port in 1–65535 (`[::1]:8080` for IPv6)."""
    host, colon, port = text.rpartition(":")
    if not colon or not host:
        raise argparse.ArgumentTypeError(f"expected host:port (e.g. 127.0.0.1:8080), got {text!r}")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"the port must be a number in 1-65535, got {port!r}")
    return text
