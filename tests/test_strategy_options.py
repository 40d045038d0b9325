"""Preset options declared once: the checks, signature, docstring, CLI flags and compat classes
all come from each preset's `options`."""

from __future__ import annotations

import inspect

import pytest

from roost.cli import build_parser, main
from roost.cli.strategy_options import PRESET_FLAGS
from roost.compat.flwr.server import strategy as flwr_strategy
from roost.errors import ConfigurationError
from roost.strategy import PRESETS, FedAdam, FedProx, FedTrimmedAvg, Krum
from roost.strategy.options import (
    REQUIRED,
    STRATEGY_KNOBS,
    MissingOptionError,
    NamedStrategy,
    Option,
)


def test_an_option_checks_python_values_and_parses_command_line_text() -> None:
    rate = Option("rate", float, 0.5, "a rate", flag="--rate", at_least=0)
    assert rate.check(2, "P") == 2.0 and isinstance(rate.check(2, "P"), float)
    with pytest.raises(ConfigurationError, match="P rate must be >= 0, got -1"):
        rate.check(-1, "P")
    with pytest.raises(ConfigurationError, match="must be a number, got 'x'"):
        rate.check("x", "P")
    with pytest.raises(ConfigurationError, match="must be a number, got True"):
        rate.check(True, "P")
    assert rate.parse("0.25") == 0.25
    with pytest.raises(ConfigurationError, match="must be >= 0"):
        rate.parse("-1")
    with pytest.raises(ConfigurationError, match="expected a number, got 'abc'"):
        rate.parse("abc")
    count = Option("count", int, REQUIRED, "a count", above=0)
    assert count.required and not rate.required
    with pytest.raises(ConfigurationError, match="must be > 0"):
        count.check(0, "P")
    with pytest.raises(ConfigurationError, match="must be an int"):
        count.check(1.5, "P")
    with pytest.raises(TypeError):
        Option("flag", bool, False, "a switch", flag="--flag")  # a bool has no value to parse


def test_presets_keep_their_options_and_check_them() -> None:
    adam = FedAdam(eta=0.05, beta_2=0.9)
    assert (adam.eta, adam.beta_2, adam.eta_l) == (0.05, 0.9, 0.1)
    assert adam.option_values() == {
        "eta": 0.05,
        "eta_l": 0.1,
        "beta_1": 0.9,
        "beta_2": 0.9,
        "tau": 1e-9,
        "convention": "reddi",
    }
    with pytest.raises(ConfigurationError, match="FedAdam eta_l must be > 0"):
        FedAdam(eta_l=0.0)
    with pytest.raises(ConfigurationError, match="Krum num_clients_to_keep must be >= 0"):
        Krum(num_clients_to_keep=-1)
    with pytest.raises(MissingOptionError, match="FedProx needs proximal_mu") as missing:
        FedProx()
    assert isinstance(missing.value, TypeError) and isinstance(missing.value, ConfigurationError)
    with pytest.raises(TypeError, match="unexpected keyword argument 'betta'"):
        FedTrimmedAvg(betta=0.1)


def test_signature_and_docstring_come_from_the_declaration() -> None:
    parameters = inspect.signature(FedAdam).parameters
    assert list(parameters)[:5] == ["eta", "eta_l", "beta_1", "beta_2", "tau"]
    assert parameters["beta_1"].default == 0.9
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters.values())
    assert set(STRATEGY_KNOBS) <= set(parameters)
    assert inspect.signature(FedProx).parameters["proximal_mu"].default is inspect.Parameter.empty
    assert "beta_2: second-moment decay β₂ (default 0.99)." in FedAdam.__doc__
    assert FedAdam.__doc__.count("Args:") == 1


def test_every_declared_flag_is_a_command_line_option_for_its_presets() -> None:
    simulate = build_parser().commands["simulate"]
    for name, cls in PRESETS.items():
        for option in cls.options:
            if option.flag is not None:
                assert option.flag[2:] in simulate.long_options
                assert PRESET_FLAGS[option.flag][name] is option
    assert set(PRESET_FLAGS["--server-lr"]) == {
        "fedasync",
        "fedbuff",
        "fedavgm",
        "fedadagrad",
        "fedadam",
        "fedyogi",
        "fedsgd",
    }


def test_a_bound_declared_on_an_option_is_checked_by_the_command_line(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["simulate", "--strategy", "fedavgm", "--server-momentum", "-1"])
    assert exit_info.value.code == 2
    assert "--server-momentum: must be >= 0" in capsys.readouterr().err


def test_a_preset_declaring_a_strategy_argument_as_an_option_is_refused() -> None:
    with pytest.raises(TypeError, match="repeat a name or a Strategy argument"):

        class Broken(NamedStrategy):
            options = (Option("fraction_fit", float, 1.0, "clash"),)


def test_flower_compatible_classes_take_the_declared_options_and_inplace() -> None:
    parameters = inspect.signature(flwr_strategy.FedAdam).parameters
    assert list(parameters)[:5] == ["eta", "eta_l", "beta_1", "beta_2", "tau"]
    assert parameters["inplace"].default is True
    strategy = flwr_strategy.FedTrimmedAvg(beta=0.1, inplace=False)
    assert isinstance(strategy, FedTrimmedAvg) and strategy.aggregator.beta == 0.1
    assert flwr_strategy.FedProx.__doc__ == FedProx.__doc__
