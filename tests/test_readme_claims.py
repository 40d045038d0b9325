"""What the documentation shows a newcomer is what roost does: the default demo's progress line,
the note a run without matplotlib prints, and what `load_digits_split()` returns (the pages of
docs/ that say so: how-to/follow-a-run.md and how-to/partition-data.md)."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from roost.cli import main
from roost.data.bundled_digits import load_digits_split

DOCS = Path(__file__).resolve().parents[1] / "docs"
FOLLOW_A_RUN = (DOCS / "how-to" / "follow-a-run.md").read_text()
PARTITION_DATA = (DOCS / "how-to" / "partition-data.md").read_text()
TIMES = re.compile(r"\(\d+\.\d s elapsed, ETA \d+\.\d s\)")


def test_the_sample_progress_line_is_the_default_demos(capsys):
    assert main(["simulate"]) == 0  # the default demo, as `roost simulate` runs it
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("round 2/")]
    shown = [line for line in FOLLOW_A_RUN.splitlines() if line.startswith("round 2/")]
    assert len(printed) == 1 and len(shown) == 1
    # The times depend on the machine; everything else is the seeded run's.
    assert TIMES.sub("(TIME)", shown[0]) == TIMES.sub("(TIME)", printed[0])


def test_a_run_without_matplotlib_says_how_to_get_the_chart(tmp_path, monkeypatch, caplog):
    def no_matplotlib(history: object) -> bytes:
        raise ModuleNotFoundError("No module named 'matplotlib'", name="matplotlib")

    monkeypatch.setattr("roost.outputs.render_plot", no_matplotlib)
    with caplog.at_level(logging.WARNING, logger="roost"):
        args = ["simulate", "--rounds", "1", "--clients", "2", "--out", str(tmp_path), "--quiet"]
        assert main(args) == 0
    notes = [r.getMessage() for r in caplog.records if "plot.png" in r.getMessage()]
    install = 'pip install "roost[plot]"'
    assert notes == [
        f"plot.png not written: matplotlib is not installed ({install}; --no-plot leaves the "
        "chart out without this note)"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "history.csv",
        "history.json",
        "model.npz",
    ]
    out_text = next(line for line in FOLLOW_A_RUN.splitlines() if line.startswith("`--out DIR`"))
    assert install in out_text  # the page's --out says where the chart comes from


def test_the_readme_and_docstring_say_what_load_digits_split_returns():
    train, test = load_digits_split()
    text = PARTITION_DATA.replace("\n", " ")
    start = text.index("`load_digits_split(test_fraction=0.2, seed=0)` returns `(train, test)`")
    description = text[start : start + 400]
    counts = re.search(r"([\d,]+) training and ([\d,]+) test images of the ([\d,]+)", description)
    assert counts is not None, description
    numbers = [int(group.replace(",", "")) for group in counts.groups()]
    assert numbers == [len(train.y), len(test.y), len(train.y) + len(test.y)]
    assert f"`x`, {train.x.dtype} of shape (n, {train.x.shape[1]})" in description
    assert f"`y`, {train.y.dtype} labels 0–{train.y.max()}" in description
    assert "read-only" in description and not train.x.flags.writeable
    assert train.x.min() == 0.0 and train.x.max() == 1.0 and "scaled to [0, 1]" in description
    docstring = " ".join(load_digits_split.__doc__.split())
    assert f"{len(train.y):,} training and {len(test.y)} test images" in docstring
    assert "float64 of shape (n, 64)" in docstring and "int64 of shape (n,)" in docstring
