"""The documentation site's generated parts: the command-line reference names every command and
flag of roost's own parser, and every page the nav names exists."""

from __future__ import annotations

import argparse
import importlib.util
import re
from pathlib import Path

from roost.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]


def load_hook():
    spec = importlib.util.spec_from_file_location(
        "cli_reference", ROOT / "docs/hooks/cli_reference.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def commands(path: str, parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Every command below `parser` by its full name (`roost privacy audit`), the root included."""
    found = {path: parser}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found |= commands(f"{path} {name}", sub)
    return found


def test_the_cli_reference_names_every_command_and_flag() -> None:
    hook = load_hook()
    page = (ROOT / "docs/reference/cli.md").read_text()
    assert hook.MARKER in page
    text = hook.on_page_markdown(page, page=None)
    assert hook.MARKER not in text
    sections = re.split(r"^#+ `(roost[^`]*)`$", text, flags=re.MULTILINE)
    by_command = dict(zip(sections[1::2], sections[2::2], strict=True))
    every = commands("roost", build_parser())
    assert set(by_command) == set(every) and len(every) > 15
    for name, parser in every.items():
        for action in parser._actions:
            if action.help == argparse.SUPPRESS or isinstance(action, argparse._SubParsersAction):
                continue
            positional = action.metavar if isinstance(action.metavar, str) else action.dest
            names = action.option_strings or [positional]
            # A table row of its own, not a mention in prose, with every spelling of the option.
            row = next(
                (r for r in by_command[name].splitlines() if r.startswith(f"| `{names[0]}")), ""
            )
            for flag in names:
                assert f"`{flag}" in row, f"{name}: {flag} is missing from the reference"


def test_every_page_in_the_nav_exists() -> None:
    nav = re.findall(
        r"^\s+(?:#\s*)?- (?:[^:\n]+: )?(\S+\.md)$", (ROOT / "mkdocs.yml").read_text(), re.M
    )
    listed = [line for line in nav if not line.startswith("#")]
    assert len(listed) > 10
    active = re.findall(r"^\s+- (?:[^:\n#]+: )?(\S+\.md)$", (ROOT / "mkdocs.yml").read_text(), re.M)
    missing = [page for page in active if not (ROOT / "docs" / page).is_file()]
    assert missing == []
