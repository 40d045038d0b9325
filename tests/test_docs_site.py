"""The documentation site's generated parts: the command-line reference names every command and
flag of roost's own parser, and every page the nav names exists."""

from __future__ import annotations

import argparse
import importlib.util
import re
from pathlib import Path

import pytest

from roost.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]


def load_hook(name: str = "cli_reference"):
    spec = importlib.util.spec_from_file_location(name, ROOT / f"docs/hooks/{name}.py")
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
    # Usage lines fit the page's code blocks (80 columns), but for one unbreakable word.
    usages = re.findall(r"```text\n(usage: .*?)```", text, re.S)
    wide = [row for usage in usages for row in usage.splitlines() if len(row) > 80]
    assert len(usages) == len(every) and all(" " not in row.strip() for row in wide), wide
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


def every_option() -> set[str]:
    """The long options of every `roost` command, without their dashes."""
    options: set[str] = set()
    for parser in commands("roost", build_parser()).values():
        for action in parser._actions:
            options |= {flag[2:] for flag in action.option_strings if flag.startswith("--")}
    return options


def test_flags_the_pages_tabulate_are_flags_roost_has() -> None:
    known = every_option()
    rows = 0
    for page in (ROOT / "docs").rglob("*.md"):
        for line in page.read_text().splitlines():
            first_cell = line.split("|")[1] if line.startswith("| `--") else ""
            for flag in re.findall(r"`--([a-z0-9-]+)", first_cell):
                rows += 1
                assert flag in known, f"{page.name}: --{flag} is no option of any roost command"
    assert rows > 20  # the strategy, privacy and secure aggregation tables


def test_the_api_reference_must_document_every_public_name(tmp_path) -> None:
    import zlib

    import roost

    hook = load_hook("api_coverage")
    every = {
        f"{module}.{name}"
        for module in hook.PUBLIC_MODULES
        for name in getattr(importlib.import_module(module), "__all__", ())
    }
    entries = "".join(f"{name} py:class 1 page/#$ -\n" for name in sorted(every - {"roost.FedAvg"}))
    header = b"# Sphinx inventory version 2\n# Project: roost\n# Version: 0\n# zlib\n"
    (tmp_path / "objects.inv").write_bytes(header + zlib.compress(entries.encode()))
    assert "FedAvg" in roost.__all__
    with pytest.raises(hook.MissingReferenceError, match=r"leaves out roost\.FedAvg: give each"):
        hook.on_post_build({"site_dir": str(tmp_path)})
    documented = hook.read_inventory(tmp_path / "objects.inv") | {"roost.FedAvg"}
    assert hook.missing_names(documented) == []
    # A name a module loads lazily counts where it is defined.
    lazy = (documented - {"roost.tracking.MLflowTracker"}) | {
        "roost.tracking.mlflow_writer.MLflowTracker"
    }
    assert hook.missing_names(lazy) == []


# `pip install` and its arguments, up to the end of the command (`&&`, `;`, a pipe, a code span's
# end or the line's end).
PIP_INSTALL = re.compile(r"pip install((?:[ \t]+[^\s&;|`]+)+)")


def bare_roost_installs(text: str) -> list[str]:
    """The `pip install` commands of `text` that name the package `roost` itself (not an extra of
    the checkout, `.[ray]`, nor `roost[ray]`, the extras' name in error messages)."""
    found = []
    for command in PIP_INSTALL.finditer(text):
        names = [arg.strip("'\"") for arg in command.group(1).split()]
        if any(re.fullmatch(r"roost([=<>~!].*)?", name) for name in names):
            found.append(command.group(0))
    return found


def test_no_page_installs_roost_from_a_package_index() -> None:
    # roost installs from its checkout (`pip install -e .`): a page's `pip install roost` would
    # fail, or install whatever else an index has under that name.
    assert bare_roost_installs('pip install roost "torch==2.13.0"') == [
        'pip install roost "torch==2.13.0"'
    ]
    assert bare_roost_installs("pip install -e . && roost simulate; pip install 'roost[ray]'") == []
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    found = {page.name: bare_roost_installs(page.read_text()) for page in pages}
    assert {name: commands for name, commands in found.items() if commands} == {}


def test_the_cli_reference_writes_summaries_and_descriptions_as_prose() -> None:
    hook = load_hook()
    root = argparse.ArgumentParser(prog="roost")
    sub = root.add_subparsers().add_parser(
        "epsilon",
        help="ε after R rounds",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="`roost epsilon`: ε after R rounds.\n\n"
        "    roost epsilon --rounds 3\n\n"
        "Every number comes from\nthe `dp_accounting` library.",
    )
    sub.add_argument("--rounds", type=int, default=3, help="federated rounds")
    sub.add_argument("--port", type=int, default=8080, help="where to listen (default: 8080)")
    path, parser, summary = next(hook.walk(["roost"], root))
    text = hook.command_section(path, parser, level=2, summary=summary)
    # option and meaning: a default is said once, by the help text or else after it
    assert "\n| `--rounds ROUNDS` | federated rounds (default: `3`) |\n" in text
    assert "\n| `--port PORT` | where to listen (default: 8080) |\n" in text
    assert "ε after R rounds." in text and "Ε" not in text  # a capital ε is another letter
    assert "roost epsilon`: ε" not in text  # the summary is not repeated
    # the prose is one paragraph, its code span rendered; the example command a text block
    assert "\nEvery number comes from the `dp_accounting` library.\n" in text
    assert "```text\nroost epsilon --rounds 3\n```" in text
    assert sub.description.count("Every") == text.count("Every") == 1


def test_every_public_name_has_a_docstring() -> None:
    # The build's hook fails on a bare entry too; griffe comes with the docs extra.
    pytest.importorskip("griffe")
    assert load_hook("api_coverage").undocumented_names(ROOT / "src") == []


DOC_PATH = re.compile(r"\bdocs/([\w/-]+\.md)(?:#([\w-]+)|, ([A-Z][\w ]*[a-z]))?")
README_SECTION = re.compile(r"README(?:, \"([^\"]+)\"|'s ([A-Z][\w ]*?) section)")


def headings(text: str) -> dict[str, str]:
    """A Markdown page's headings, by their anchor (as MkDocs' toc makes them) to their text."""
    found = {}
    for title in re.findall(r"^#+ (.+?)\s*$", text, re.M):
        plain = re.sub(r"[`*]", "", title)
        found[re.sub(r"[\s]+", "-", re.sub(r"[^\w\s-]", "", plain).strip().lower())] = plain
    return found


def broken_references(text: str) -> list[str]:
    """The references in `text` to a page of the site (`docs/how-to/speed.md`, with `#anchor` or
    `, Heading`) or to a README section that are not there."""
    broken = []
    for match in DOC_PATH.finditer(text):
        page = ROOT / "docs" / match[1]
        if not page.is_file():
            broken.append(match[0])
            continue
        found = headings(page.read_text())
        if (match[2] and match[2] not in found) or (match[3] and match[3] not in found.values()):
            broken.append(match[0])
    readme = set(headings((ROOT / "README.md").read_text()).values())
    broken += [m[0] for m in README_SECTION.finditer(text) if (m[1] or m[2]) not in readme]
    return broken


def test_references_to_the_docs_from_code_and_help_texts_resolve() -> None:
    # Help texts, error messages and comments name pages of the site (the README's sections
    # moved there): each must name a page, anchor, heading or README section that exists.
    assert broken_references("see docs/how-to/speed.md, Warm clients") == []
    assert broken_references('docs/how-to/gone.md; README, "Privacy"') == [
        "docs/how-to/gone.md",
        'README, "Privacy"',
    ]
    files = [ROOT / "pyproject.toml", ROOT / ".ci/run", *sorted((ROOT / "docs").rglob("*.md"))]
    for folder in ("src", "benchmarks", "examples", "tests"):
        files += sorted((ROOT / folder).rglob("*.py")) + sorted((ROOT / folder).rglob("*.md"))
    found = {f.name: broken_references(f.read_text()) for f in files if f != Path(__file__)}
    assert {name: refs for name, refs in found.items() if refs} == {}


def test_docstrings_use_markdown_not_restructuredtext_literal_markers() -> None:
    # The API reference renders docstrings as Markdown, where reST's `text::` before a code
    # block shows its two colons as written ("Example::"); the block needs only its indent.
    marked = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in sorted((ROOT / "src/roost").rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if line.rstrip().endswith("::") and not line.lstrip().startswith("#")
    ]
    assert marked == []


def test_help_texts_send_a_newcomer_to_pages_that_exist() -> None:
    every = commands("roost", build_parser())
    assert "docs/reference/cli.md" in every["roost"].format_help()  # where the rest is
    helps = {name: broken_references(parser.format_help()) for name, parser in every.items()}
    assert {name: refs for name, refs in helps.items() if refs} == {}


def test_the_api_pages_may_show_no_private_names() -> None:
    hook = load_hook("api_coverage")
    page = (
        "<nav>_menu</nav><article><p>Bases: <code>_Buffering</code>, <code>Aggregator</code></p>"
        "<h3>__init__</h3><code>aggregate, state, _ = mean.aggregate(x._y)</code></article>"
    )
    assert hook.private_names(page) == ["_Buffering"]  # not a dunder, `_`, or an attribute


def lists_glued_to_a_paragraph(text: str) -> list[int]:
    """Lines (1-based) where a list starts right after a paragraph's line: MkDocs' Markdown needs
    a blank line there, and without it prints the items as text, dashes and all."""
    glued, fenced, previous = [], False, ""
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        item = re.match(r"(- |\d+\. )", line)
        paragraph = previous.strip() and not re.match(r"\s*(- |\d+\. )|[ |<#]", previous)
        if item and paragraph and not fenced:
            glued.append(number)
        previous = line
    return glued


def test_every_list_starts_after_a_blank_line() -> None:
    assert lists_glued_to_a_paragraph("Text:\n- a\n- b\n\nMore:\n\n1. c\n  - d\n") == [2]
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    glued = {page.name: lists_glued_to_a_paragraph(page.read_text()) for page in pages}
    assert {name: lines for name, lines in glued.items() if lines} == {}


def test_the_readme_is_a_landing_page_that_starts_with_the_two_commands() -> None:
    # At most 150 lines; before any other code block, the demo's install-and-run command and
    # the test command (the second, which .ci/run runs verbatim).
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 150, f"README.md has {len(lines)} lines; move the surplus into docs/"
    blocks, inside = [], None
    for line in lines:
        if inside is None and line.startswith("```"):
            inside = [line[3:].strip()]
        elif inside is not None and line.startswith("```"):
            blocks.append(inside)
            inside = None
        elif inside is not None:
            inside.append(line)
    (first_language, *first), (second_language, *second) = blocks[:2]
    assert first_language == second_language == "bash"
    assert "pip install -e ." in first[0] and first[0].rstrip().endswith("roost simulate")
    assert '".[test]"' in second[0] and "python -m pytest" in second[0]
