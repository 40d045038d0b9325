"""Every example the documentation shows runs: each ```python and ```bash block of `docs/**/*.md`
and README.md, except a block whose line before is `<!-- not-run: <reason> -->`.

A page's Python blocks run in order in one namespace (a tutorial builds on itself), in one fresh
interpreter per page, so one page's imports, logging or Keras backend never reach another's. Its
bash blocks run in order with `bash -euo pipefail`, each from the same scratch directory: a copy
of the repository made of links to its top-level entries, so `python examples/...` works as
written from the repository root and what a block writes (`--out out`, `roost new myapp`) lands
in the scratch directory, not in the checkout. Output samples are ```text blocks, never run.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUN_LANGUAGES = ("python", "bash")
FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<language>[\w+-]*)[ \t]*$")
NOT_RUN = re.compile(r"^[ \t]*<!-- not-run:(?P<reason>.*)-->[ \t]*$")
BLOCK_TIMEOUT_S = 180

# Pages whose examples took a second or more (measured with --durations, -n 0, on the shared
# two-core machine at load 3.5: Keras 7.0 s, privacy 5.1 s, PyTorch 3.3 s, your own app 2.6 s,
# deploy 2.4 s, adapters 1.9 s, benchmarks 1.8 s, resume 1.9 s, federation 1.0 s, tracking
# 2.5 s; all pages together 31 s): they run in the full suite, and the fast subset keeps the
# rest (about 4 s).
SLOW_PAGES = {
    "docs/benchmarks/index.md",
    "docs/how-to/adapters.md",
    "docs/how-to/deploy.md",
    "docs/how-to/federation.md",
    "docs/how-to/privacy.md",
    "docs/how-to/resume.md",
    "docs/how-to/tracking.md",
    "docs/tutorials/keras.md",
    "docs/tutorials/pytorch.md",
    "docs/tutorials/your-own-app.md",
}


@dataclass(frozen=True)
class Block:
    """One fenced code block of a page: where it starts, its language, its code, and why it is
    not run (None: it runs)."""

    page: str
    line: int
    language: str
    code: str
    not_run: str | None


def read_blocks(text: str, page: str) -> list[Block]:
    """The fenced code blocks of a Markdown page, indented ones (in list items) included.

    Raises ValueError for a fence never closed, and for a `not-run` marker without a reason or
    not on the line right before a block (a marker that skips nothing).
    """
    lines = text.splitlines()
    markers = {i for i, line in enumerate(lines) if NOT_RUN.match(line)}
    found: list[Block] = []
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if opening is None or not opening["language"]:
            index += 1
            continue
        indent = opening["indent"]
        end = next(
            (i for i in range(index + 1, len(lines)) if lines[i].rstrip() == f"{indent}```"), None
        )
        if end is None:
            raise ValueError(f"{page}:{index + 1}: a ```{opening['language']} block never closes")
        marker = NOT_RUN.match(lines[index - 1]) if index > 0 else None
        reason = marker["reason"].strip() if marker else None
        if marker and not reason:
            raise ValueError(f"{page}:{index}: say why the block is not run: <!-- not-run: why -->")
        code = textwrap.dedent("\n".join(lines[index + 1 : end]))
        found.append(Block(page, index + 2, opening["language"], code + "\n", reason))
        markers.discard(index - 1)
        index = end + 1
    if markers:
        where = min(markers) + 1
        raise ValueError(f"{page}:{where}: a not-run marker must stand right before its block")
    return found


def doc_pages() -> list[Path]:
    """README.md and every page under docs/, in a fixed order."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def runnable(page: Path, language: str) -> list[Block]:
    """The blocks of `page` in `language` that run."""
    name = page.relative_to(ROOT).as_posix()
    blocks = read_blocks(page.read_text(encoding="utf-8"), name)
    return [block for block in blocks if block.language == language and block.not_run is None]


# Runs in the page's own interpreter: each block compiled under the page's name and line numbers,
# so a traceback points into the page; the blocks share one namespace, as in a notebook.
PYTHON_RUNNER = """
import json, sys
namespace = {"__name__": "__main__"}
for block in json.load(sys.stdin):
    print(f"--- {block['page']}:{block['line']}", flush=True)
    source = "\\n" * (block["line"] - 1) + block["code"]
    exec(compile(source, block["page"], "exec"), namespace)
"""


def scratch_copy(directory: Path) -> Path:
    """A directory that looks like the repository root: a link to each of its top-level entries."""
    directory.mkdir(parents=True, exist_ok=True)
    for entry in ROOT.iterdir():
        if entry.name not in {".git", "site", "out"} and not (directory / entry.name).exists():
            (directory / entry.name).symlink_to(entry)
    return directory


def example_env() -> dict[str, str]:
    """The environment examples run in: this checkout's roost first, charts drawn off-screen."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), *filter(None, [env.get("PYTHONPATH")])])
    env["MPLBACKEND"] = "Agg"
    return env


def run_python(blocks: list[Block], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a page's Python blocks in order, in one namespace, in a fresh interpreter."""
    payload = json.dumps([block.__dict__ for block in blocks])
    return subprocess.run(
        [sys.executable, "-c", PYTHON_RUNNER],
        input=payload,
        cwd=cwd,
        env=example_env(),
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT_S * len(blocks),
    )


def run_bash(block: Block, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run one bash block with `bash -euo pipefail`, in a process group of its own that is
    killed when bash ends, so a server or client the block left running (or a block that timed
    out) never outlives the test. Output goes to files, not pipes: a process left in the
    background would hold a pipe open, and reading it to its end would wait for that process."""
    out_path, err_path = cwd / ".block-stdout", cwd / ".block-stderr"
    with out_path.open("w") as out, err_path.open("w") as err:
        process = subprocess.Popen(
            ["bash", "-euo", "pipefail", "-c", block.code],
            cwd=cwd,
            env=example_env(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
        try:
            process.wait(timeout=BLOCK_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            err.write(f"\n(killed after {BLOCK_TIMEOUT_S} s)")
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    texts = out_path.read_text(), err_path.read_text()
    out_path.unlink()
    err_path.unlink()
    return subprocess.CompletedProcess(process.args, process.returncode, *texts)


def cases() -> list[object]:
    """One test per page and language that has blocks to run; slow pages marked slow."""
    params: list[object] = []
    for page in doc_pages():
        name = page.relative_to(ROOT).as_posix()
        marks = [pytest.mark.slow] if name in SLOW_PAGES else []
        for language in RUN_LANGUAGES:
            if runnable(page, language):
                params.append(pytest.param(page, language, marks=marks, id=f"{name}-{language}"))
    return params


@pytest.mark.parametrize(("page", "language"), cases())
def test_the_pages_examples_run(page: Path, language: str, tmp_path: Path) -> None:
    blocks = runnable(page, language)
    cwd = scratch_copy(tmp_path / "repo")
    if language == "python":
        done = run_python(blocks, cwd)
        assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
        return
    for block in blocks:
        done = run_bash(block, cwd)
        where = f"{block.page}:{block.line} exited {done.returncode}"
        assert done.returncode == 0, f"{where}\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"


PAGE = """# A page

<!-- not-run: needs a second machine -->
```bash
roost client --server elsewhere:8080
```

```python
x = 1
```

- a list item with a block:

  ```python
  y = x + 1
  ```

```text
round 1/5 ...
```

```python
assert y == 2, y
raise ValueError("the page's own error")
```
"""


def test_blocks_are_read_with_their_lines_and_markers() -> None:
    blocks = read_blocks(PAGE, "page.md")
    assert [(b.language, b.line, b.not_run) for b in blocks] == [
        ("bash", 5, "needs a second machine"),
        ("python", 9, None),
        ("python", 15, None),
        ("text", 19, None),
        ("python", 23, None),
    ]
    assert blocks[2].code == "y = x + 1\n"  # the list item's indent is gone


def test_a_marker_needs_a_reason_and_a_fence_must_close() -> None:
    with pytest.raises(ValueError, match=r"page.md:1: say why"):
        read_blocks("<!-- not-run: -->\n```bash\nls\n```\n", "page.md")
    with pytest.raises(ValueError, match=r"page.md:1: a ```python block never closes"):
        read_blocks("```python\nx = 1\n", "page.md")
    with pytest.raises(ValueError, match=r"page.md:1: a not-run marker must stand right before"):
        read_blocks("<!-- not-run: far away -->\n\n```bash\nls\n```\n", "page.md")


def test_a_pages_python_runs_in_one_namespace_and_a_failure_names_its_line(tmp_path) -> None:
    blocks = [b for b in read_blocks(PAGE, "page.md") if b.language == "python"]
    done = run_python(blocks, tmp_path)
    assert done.returncode == 1
    assert 'File "page.md", line 24' in done.stderr  # the raise, at its line of the page
    assert "ValueError: the page's own error" in done.stderr


def test_bash_blocks_stop_at_the_first_failing_command(tmp_path) -> None:
    block = Block("page.md", 1, "bash", "echo first\nfalse | true\necho never\n", None)
    done = run_bash(block, scratch_copy(tmp_path))
    assert done.returncode == 1 and done.stdout == "first\n"  # pipefail: the pipe failed
    assert (tmp_path / "pyproject.toml").resolve() == ROOT / "pyproject.toml"


def test_what_a_bash_block_leaves_running_is_stopped(tmp_path) -> None:
    block = Block("page.md", 1, "bash", "sleep 60 &\necho $!\n", None)
    done = run_bash(block, tmp_path)
    assert done.returncode == 0
    pid = int(done.stdout)
    for _ in range(100):  # killed with its group: gone, or a zombie nobody has reaped yet
        if not running(pid):
            return
        time.sleep(0.01)
    raise AssertionError(f"the block's background sleep ({pid}) is still running")


def running(pid: int) -> bool:
    """Whether process `pid` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def test_every_page_parses() -> None:
    for page in doc_pages():
        read_blocks(
            page.read_text(encoding="utf-8"), page.name
        )  # no unclosed fence, no bare marker
