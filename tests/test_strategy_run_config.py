"""A project's run config names any preset and its options; mistakes are one line, exit 2."""

from __future__ import annotations

import pytest

from roost.cli import main
from roost.cli.new import create_project
from roost.errors import ConfigurationError
from roost.strategy.presets import PRESETS, FedAdam, FedProx
from roost.strategy.run_config import strategy_from_run_config

REQUIRED = {
    "fedprox": ["proximal-mu=0.1"],
    "dpfedavg": ["noise-multiplier=0.3", "clip-norm=1.0", "expected-clients=6"],
}


def test_options_come_by_name_by_flag_and_from_the_learning_rate():
    prox = strategy_from_run_config({"strategy": "fedprox", "proximal-mu": 0.3})
    assert isinstance(prox, FedProx) and prox.proximal_mu == 0.3
    adam = strategy_from_run_config(
        {"strategy": "FedAdam", "server-lr": 0.02, "learning-rate": 0.07, "proximal-mu": 1.0},
        fraction_fit=0.5,
    )
    assert isinstance(adam, FedAdam)
    assert (adam.eta, adam.eta_l, adam.fraction_fit) == (0.02, 0.07, 0.5)
    with pytest.raises(ConfigurationError, match="sets eta of fedadam twice"):
        strategy_from_run_config({"strategy": "fedadam", "server-lr": 0.02, "eta": 0.1})
    with pytest.raises(ConfigurationError, match="needs proximal-mu"):
        strategy_from_run_config({"strategy": "fedprox"})
    with pytest.raises(ConfigurationError, match="choose one of: bulyan"):
        strategy_from_run_config({"strategy": "nosuch"})


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_runs_from_a_generated_projects_run_config(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    create_project(tmp_path / "proj", "numpy")
    overrides = [f"strategy={name}", "num-rounds=1", "num-clients=12", *REQUIRED.get(name, [])]
    assert main(["run", "proj", "--quiet", "--no-plot", "--run-config", *overrides]) == 0


def test_a_strategy_mistake_in_the_run_config_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    create_project(tmp_path / "proj", "numpy")
    for overrides, expected in (
        (["strategy=nosuch"], "strategy = 'nosuch' is not a roost strategy; choose one of"),
        (["strategy=fedprox"], "needs proximal-mu"),
    ):
        capsys.readouterr()
        assert main(["run", "proj", "--quiet", "--run-config", *overrides]) == 2
        error = capsys.readouterr().err.strip()
        assert error.startswith("roost: error: ") and "\n" not in error and expected in error
