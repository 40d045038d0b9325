"""MkDocs hook: the command-line reference, written from roost's own argument parser.

`docs/reference/cli.md` holds the marker `<!-- cli-reference -->`; at build time it is replaced
with every command and subcommand of `roost.cli.build_parser()`, each with its usage, its
description and a table of its options (flags and help, defaults included). Nothing is kept
by hand, so the page cannot drift from the parser.
"""

from __future__ import annotations

import argparse
import os
import textwrap
from collections.abc import Iterator
from typing import Any

MARKER = "<!-- cli-reference -->"
"""The line of a page that the generated reference replaces."""


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    """MkDocs' page event: replace the marker with the generated reference."""
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, cli_reference())


def cli_reference() -> str:
    """Markdown for every command of the `roost` parser, in the order `roost --help` lists them."""
    from roost.cli import build_parser  # imported at build time: the hook module loads without it

    # argparse wraps usage lines at the terminal's width; the page is the same from any terminal,
    # and 80 columns fit the page's code blocks without scrolling.
    os.environ["COLUMNS"] = "80"
    root = build_parser()
    sections = [command_section(["roost"], root, level=2, summary=None)]
    sections += [
        command_section(path, parser, level=len(path), summary=summary)
        for path, parser, summary in walk(["roost"], root)
    ]
    return "\n".join(sections)


def walk(
    path: list[str], parser: argparse.ArgumentParser
) -> Iterator[tuple[list[str], argparse.ArgumentParser, str | None]]:
    """(command path, parser, one-line summary) of every subcommand below `parser`, depth first."""
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        summaries = {choice.dest: choice.help for choice in action._choices_actions}
        for name, sub in action.choices.items():
            yield [*path, name], sub, summaries.get(name)
            yield from walk([*path, name], sub)


def command_section(
    path: list[str], parser: argparse.ArgumentParser, level: int, summary: str | None
) -> str:
    """One command's heading, summary, usage, description and option tables."""
    heading = "#" * min(level, 4)
    lines = [f"{heading} `{' '.join(path)}`", ""]
    if summary:
        lines += [sentence(summary), ""]
    lines += ["```text", parser.format_usage().strip(), "```", ""]
    if parser.description:
        lines += description(parser.description, summary)
    formatter = parser._get_formatter()
    for group in parser._action_groups:
        rows = [option_row(action, formatter) for action in group._group_actions]
        rows = [row for row in rows if row is not None]
        if not rows:
            continue
        lines += [f"**{group.title}**", "", "| option | meaning |", "|---|---|"]
        lines += rows
        lines.append("")
    return "\n".join(lines)


def sentence(summary: str) -> str:
    """A subcommand's summary as a sentence: a capital first letter (an ASCII one only: `ε after
    R rounds` keeps its ε, which in capitals is another letter) and a full stop."""
    first = summary[0].upper() if summary[0].isascii() else summary[0]
    return first + summary[1:] + "."


def description(text: str, summary: str | None) -> list[str]:
    """A command's description as Markdown: prose paragraphs as paragraphs (their `code` spans
    rendered, their lines wrapped by the page, not scrolled), example command lines (indented,
    or each starting with `roost `) as a text block. An opening `roost x`: paragraph that only
    repeats the summary shown above it is left out."""
    paragraphs = [p for p in textwrap.dedent(text).strip().split("\n\n") if p.strip()]
    lines: list[str] = []
    for index, paragraph in enumerate(paragraphs):
        rows = paragraph.splitlines()
        if all(row.startswith((" ", "roost ")) for row in rows):
            lines += ["```text", textwrap.dedent(paragraph).strip(), "```", ""]
        elif not (index == 0 and summary and repeats(paragraph, summary)):
            lines += [" ".join(paragraph.split()), ""]
    return lines


def repeats(paragraph: str, summary: str) -> bool:
    """Whether `paragraph` is "`roost x ...`: " followed by the summary."""
    _, colon, rest = paragraph.partition("`: ")
    return bool(colon) and paragraph.startswith("`roost") and _plain(rest) == _plain(summary)


def _plain(text: str) -> str:
    return " ".join(text.split()).rstrip(".").lower()


def option_row(action: argparse.Action, formatter: argparse.HelpFormatter) -> str | None:
    """A table row for one option or positional argument; None for hidden ones and subcommands."""
    if action.help == argparse.SUPPRESS or isinstance(action, argparse._SubParsersAction):
        return None
    if action.option_strings:
        metavar = (
            "" if action.nargs == 0 else " " + formatter._format_args(action, metavar_of(action))
        )
        names = ", ".join(f"`{flag}{metavar}`" for flag in action.option_strings)
    else:  # a positional argument, by the name `--help` shows for it
        names = f"`{action.metavar or action.dest}`" + (
            " (optional)" if action.nargs == "?" else ""
        )
    meaning = formatter._expand_help(action) if action.help else ""
    default = action.default
    # Help texts say their defaults ("(default: 1024)"); a default one leaves out is added.
    unsaid = "default" not in meaning and str(default) not in meaning
    if unsaid and default not in (None, argparse.SUPPRESS, False) and action.nargs != 0:
        meaning += f" (default: `{default}`)"
    return f"| {cell(names)} | {cell(meaning)} |"


def metavar_of(action: argparse.Action) -> str:
    """The metavar `--help` shows for an option: its own, else the dest in capitals."""
    return action.dest.upper() if action.metavar is None else action.metavar  # type: ignore[return-value]


def cell(text: str) -> str:
    """Text fit for one Markdown table cell: one line, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")
