"""`roost simulate --engine`: the demo on every engine, its default, its fallback without torch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from roost.cli import main

pytest.importorskip("torch")


def simulate(tmp_path: Path, name: str, *args: str) -> tuple[dict, list[np.ndarray], Path]:
    out = tmp_path / name
    assert main(["simulate", "--quiet", "--no-plot", "--out", str(out), *args]) == 0
    with np.load(out / "model.npz", allow_pickle=False) as model:
        arrays = [model[f"arr_{i}"] for i in range(len(model.files))]
    return json.loads((out / "history.json").read_text()), arrays, out


def test_default_engine_is_the_fastest_deterministic_and_accurate(tmp_path, capsys):
    history, model, first = simulate(tmp_path, "a")
    first_line = capsys.readouterr().out.splitlines()[0]
    assert first_line.startswith("engine: sequential (the default for the demo: its NumPy")
    _, _, second = simulate(tmp_path, "b")
    for name in ("history.json", "model.npz"):
        assert (first / name).read_bytes() == (second / name).read_bytes()
    assert history["metrics_centralized"]["accuracy"][-1][1] >= 0.85
    assert [a.shape for a in model] == [(64, 10), (10,)]  # the NumPy demo's layout


def test_an_engine_asked_for_is_named_on_the_first_line(tmp_path, capsys):
    simulate(tmp_path, "v", "--rounds", "1", "--clients", "3", "--engine", "vectorized")
    first_line = capsys.readouterr().out.splitlines()[0]
    assert first_line.startswith("engine: vectorized (--engine); OMP_WAIT_POLICY=")


def test_every_engine_trains_the_same_demo_model(tmp_path):
    args = ("--clients", "4", "--rounds", "2", "--fraction-fit", "0.5", "--local-epochs", "2")
    reference_history, reference, _ = simulate(
        tmp_path, "sequential", *args, "--engine", "sequential"
    )
    for engine in ("vectorized", "process"):
        history, model, _ = simulate(tmp_path, engine, *args, "--engine", engine)
        for a, b in zip(model, reference, strict=True):
            np.testing.assert_allclose(a, b, atol=1e-10, rtol=0)
        assert history["rounds"] == reference_history["rounds"]


def test_without_torch_the_demo_falls_back_with_a_one_line_notice(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("roost.apps.digits.task.torch_available", lambda: False)
    history, _, _ = simulate(tmp_path, "fallback", "--rounds", "2", "--engine", "vectorized")
    notice = [line for line in capsys.readouterr().out.splitlines() if "torch is not" in line]
    assert len(notice) == 1
    assert notice[0].startswith(
        "torch is not installed: the NumPy demo runs on the sequential engine (pip install "
        "torch for the vectorized engine); OMP_WAIT_POLICY="
    )
    assert [r["fit_results"] for r in history["rounds"]] == [10, 10]


def test_attacked_clients_run_on_the_sequential_engine(tmp_path, capsys):
    simulate(
        tmp_path,
        "attack",
        "--rounds",
        "1",
        "--attack",
        "signflip",
        "--attackers",
        "1",
        "--strategy",
        "fedmedian",
        "--engine",
        "vectorized",
    )
    out = capsys.readouterr().out
    assert "attacked and gradient-returning clients run on the sequential engine" in out
