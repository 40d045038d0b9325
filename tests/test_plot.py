"""history.csv and plot.png from save_run, `roost plot`, and `roost simulate --config run.toml`."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest

from roost.cli import main
from roost.errors import ConfigurationError
from roost.outputs import save_run
from roost.plotting import history_csv, load_history, plot_history, render_plot
from roost.server.history import History, RoundRecord

pytest.importorskip("matplotlib")


def make_history() -> History:
    history = History()
    history.add_loss_centralized(0, 2.3)
    history.add_metrics_centralized(0, {"accuracy": 0.1})
    for r, (loss, acc) in enumerate([(1.2, 0.6), (0.8, 0.75), (0.5, 0.85)], start=1):
        history.add_metrics_distributed_fit(r, {"train_loss": loss + 0.1})
        history.add_loss_distributed(r, loss)
        history.add_metrics_distributed(r, {"accuracy": acc})
        history.add_loss_centralized(r, loss + 0.05)
        history.add_metrics_centralized(r, {"accuracy": acc - 0.02})
        history.rounds.append(RoundRecord(r, fit_results=3, fit_failures=r - 1, evaluate_results=2))
    history.parameters = [np.arange(4.0)]
    return history


def _png_pixels(path: Path) -> np.ndarray:
    from matplotlib.image import imread

    return imread(path)


def assert_real_chart(path: Path) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 20_000
    pixels = _png_pixels(path)
    assert pixels.shape[0] >= 400 and pixels.shape[1] >= 1000
    rgb = pixels[..., :3]
    assert rgb.std() > 0.05  # not a blank canvas
    # Two coloured series (matplotlib's blue and orange lines) are drawn, not just axes and text.
    strongly_coloured = (rgb.max(axis=-1) - rgb.min(axis=-1)) > 0.4
    assert strongly_coloured.mean() > 0.002
    blue = (rgb[..., 2] > 0.5) & (rgb[..., 0] < 0.3)
    orange = (rgb[..., 0] > 0.8) & (rgb[..., 2] < 0.3)
    assert blue.sum() > 500 and orange.sum() > 500


def test_save_run_writes_csv_and_plot_beside_json_and_model(tmp_path: Path) -> None:
    history = make_history()
    written = save_run(tmp_path, history)
    assert [p.name for p in written] == ["model.npz", "history.json", "history.csv", "plot.png"]
    # history.json is unchanged by the new files: it still round-trips.
    assert load_history(tmp_path / "history.json") == history
    assert_real_chart(tmp_path / "plot.png")
    rows = list(csv.DictReader((tmp_path / "history.csv").open()))
    assert [row["round"] for row in rows] == ["0", "1", "2", "3"]
    assert rows[0]["loss_centralized"] == "2.3" and rows[0]["loss_distributed"] == ""
    assert float(rows[2]["distributed_accuracy"]) == 0.75
    assert float(rows[3]["centralized_accuracy"]) == pytest.approx(0.83)
    assert float(rows[1]["fit_train_loss"]) == pytest.approx(1.3)
    assert rows[3]["fit_failures"] == "2"


def test_history_csv_has_what_strategy_parts_measured() -> None:
    history = make_history()
    for r in (1, 2, 3):
        history.add_measurements(r, {"bytes_up": 357.0 * r})
    rows = list(csv.DictReader(io.StringIO(history_csv(history))))
    assert [row["measured_bytes_up"] for row in rows] == ["", "357.0", "714.0", "1071.0"]


def test_the_same_history_gives_the_same_png() -> None:
    assert render_plot(make_history()) == render_plot(make_history())


def test_plot_without_accuracy_still_draws_losses(tmp_path: Path) -> None:
    history = History()
    for r in range(1, 4):
        history.add_loss_distributed(r, 1.0 / r)
    plot_history(history, tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 10_000
    assert (
        history_csv(history).splitlines()[0] == "round,fit_results,fit_failures,"
        "evaluate_results,evaluate_failures,loss_distributed,loss_centralized"
    )


def test_roost_plot_command(tmp_path: Path, capsys) -> None:
    save_run(tmp_path, make_history(), plot=False)
    assert not (tmp_path / "plot.png").exists()
    assert main(["plot", str(tmp_path / "history.json")]) == 0
    assert_real_chart(tmp_path / "plot.png")
    assert main(["plot", str(tmp_path), "-o", str(tmp_path / "other.png"), "--title", "t"]) == 0
    assert (tmp_path / "other.png").exists()
    assert main(["plot", str(tmp_path / "missing.json")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigurationError, match=r"not a roost history\.json"):
        load_history(tmp_path / "bad.json")


def test_simulate_config_file_with_flags_overriding_it(tmp_path: Path) -> None:
    config = tmp_path / "run.toml"
    config.write_text(
        "clients = 3\nrounds = 4\nlocal_epochs = 1\nfraction_fit = 1.0\nquiet = true\n"
    )
    out = tmp_path / "out"
    assert main(["simulate", "--config", str(config), "--rounds", "2", "--out", str(out)]) == 0
    data = json.loads((out / "history.json").read_text())
    assert [record["server_round"] for record in data["rounds"]] == [1, 2]  # the flag won
    assert {record["fit_results"] for record in data["rounds"]} == {3}  # the file's clients = 3
    assert (out / "plot.png").exists() and (out / "history.csv").exists()
    assert (
        main(["simulate", "--config", str(config), "--no-plot", "--out", str(tmp_path / "np")]) == 0
    )
    assert sorted(p.name for p in (tmp_path / "np").iterdir()) == [
        "history.csv",
        "history.json",
        "model.npz",
    ]

    table = tmp_path / "table.toml"
    table.write_text("[simulate]\nclients = 2\nrounds = 1\nquiet = true\n")
    assert main(["simulate", "--config", str(table), "--out", str(tmp_path / "o2")]) == 0
    data = json.loads((tmp_path / "o2" / "history.json").read_text())
    assert data["rounds"][0]["fit_results"] == 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("clientz = 3\n", "unknown option 'clientz'"),
        ("clients = 0\n", "must be >= 1"),
        ("quiet = 1\n", "true or false"),
        ("rounds = [1, 2]\n", "takes one value"),
        ("rounds = \n", "not valid TOML"),
    ],
)
def test_bad_config_files_are_explained(tmp_path: Path, capsys, text: str, message: str) -> None:
    config = tmp_path / "run.toml"
    config.write_text(text)
    assert main(["simulate", "--config", str(config)]) == 2
    assert message in capsys.readouterr().err


def test_without_matplotlib_the_run_is_still_saved(tmp_path: Path, monkeypatch, caplog) -> None:
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    written = save_run(tmp_path, make_history())
    assert [p.name for p in written] == ["model.npz", "history.json", "history.csv"]
    assert "matplotlib is not installed" in caplog.text
