"""`roost new` says how to install a project of each framework, and the tutorial
(docs/tutorials/your-own-app.md) says the same."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from roost.cli import main
from roost.cli.new import FRAMEWORKS

ROOT = Path(__file__).resolve().parents[1]

EXPECTED = {
    "numpy": ["pip install -e 'myapp[test]'"],
    "sklearn": ["pip install -e 'myapp[test]'"],
    "pytorch": ["pip install \"torch==2.13.0\" -e 'myapp[test]'"],
    "keras": [
        "pip install \"tensorflow-cpu>=2.16\" -e 'myapp[test]'",
        "pip install \"torch==2.13.0\" -e 'myapp[test]' && export KERAS_BACKEND=torch",
    ],
}


def install_lines(output: str) -> list[str]:
    """The install commands in `roost new`'s output: its `install it:` line and `or:` lines."""
    prefixes = ("install it:", "or:")
    return [
        line.partition(":")[2].strip() for line in output.splitlines() if line.startswith(prefixes)
    ]


@pytest.mark.parametrize("framework", sorted(FRAMEWORKS))
def test_new_prints_and_writes_the_install_line(tmp_path, monkeypatch, capsys, framework):
    monkeypatch.chdir(tmp_path)
    assert main(["new", "myapp", "--framework", framework]) == 0
    out = capsys.readouterr().out
    assert install_lines(out) == EXPECTED[framework]
    assert "run it:       roost run myapp\ntest it:      pytest myapp\n" in out
    readme = (tmp_path / "myapp" / "README.md").read_text()
    for line in EXPECTED[framework]:
        assert line.replace("'myapp[test]'", "'.[test]'") in readme
    if framework in ("pytorch", "keras"):  # how to get another torch, and a CPU build of it
        for text in (out, readme.replace("\n", " ")):
            assert "any torch >= 2.2 works" in text and "--index-url" in text
    if framework == "keras":  # both backends, and how to choose torch
        for text in (out, readme.replace("\n", " ")):
            assert "TensorFlow (the default), or torch with the environment variable " in text
            assert "KERAS_BACKEND=torch" in text


def documented_install_lines() -> dict[str, list[str]]:
    """The tutorial's table of install lines: framework -> its commands, in order."""
    page = (ROOT / "docs" / "tutorials" / "your-own-app.md").read_text()
    rows = re.findall(r"^\| `(\w+)` \| (`pip install .*) \|$", page, flags=re.MULTILINE)
    return {name: re.findall(r"`(pip install [^`]*)`", cell) for name, cell in rows}


def test_the_tutorial_lists_the_install_lines_roost_new_prints():
    printed = {
        name: [install.command("myapp") for install in framework.installs]
        for name, framework in FRAMEWORKS.items()
    }
    assert documented_install_lines() == printed == EXPECTED
