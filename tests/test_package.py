"""Package-level promises: light import, validation helpers, History serialization."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from roost.core.validation import check_parameters, check_scalar_dict
from roost.errors import InvalidMessageError
from roost.server.history import History, RoundRecord


def test_import_roost_imports_no_ml_framework() -> None:
    code = (
        "import sys, roost; "
        "heavy = [m for m in ('torch', 'tensorflow', 'keras', 'sklearn', 'ray', 'grpc', 'jax', "
        "'sqlalchemy', 'alembic') if m in sys.modules]; print(heavy)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_check_parameters_accepts_matching_arrays() -> None:
    template = [np.zeros((2, 3), np.float32), np.zeros(3, np.float32)]
    checked = check_parameters([np.ones((2, 3), np.float32), np.ones(3, np.float32)], template)
    assert [a.shape for a in checked] == [(2, 3), (3,)]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (np.zeros(3), "must be a list of NumPy arrays"),
        ([[1.0, 2.0]], "parameter 0 is a list"),
        ([np.array(["a"])], "only integer and float"),
        ([np.array([np.inf])], "NaN or Inf"),
    ],
)
def test_check_parameters_rejects_bad_input(value, message) -> None:
    with pytest.raises(InvalidMessageError, match=message):
        check_parameters(value)


def test_scalar_dicts_convert_numpy_scalars_and_refuse_the_rest() -> None:
    checked = check_scalar_dict({"a": np.float32(1.5), "b": np.int64(2), "c": np.bool_(True)}, "m")
    assert checked == {"a": 1.5, "b": 2, "c": True}
    assert [type(v) for v in checked.values()] == [float, int, bool]
    with pytest.raises(InvalidMessageError, match="must be bool, int, float, str or bytes"):
        check_scalar_dict({"a": None}, "m")


def test_history_json_round_trip() -> None:
    history = History()
    history.add_loss_distributed(1, 0.5)
    history.add_loss_centralized(0, 2.0)
    history.add_metrics_distributed_fit(1, {"acc": 0.25})
    history.add_metrics_distributed(1, {"acc": 0.5, "name": "x"})
    history.add_metrics_centralized(0, {"acc": 0.1})
    history.rounds.append(RoundRecord(1, 2, 0, 2, 0))
    text = history.to_json()
    assert History.from_json(text) == history
    assert '"losses_distributed": [[1, 0.5]]' in text


SRC = Path(__file__).resolve().parent.parent / "src" / "roost"


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, at the top or inside functions."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_nothing_below_the_apps_imports_them() -> None:
    below = [path for path in SRC.rglob("*.py") if "apps" not in path.relative_to(SRC).parts]
    assert len(below) > 30
    offenders = {
        str(path.relative_to(SRC)): sorted(
            name for name in imported_modules(path) if name.startswith("roost.apps")
        )
        for path in below
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def test_strategies_know_nothing_of_the_command_line() -> None:
    for path in (SRC / "strategy").rglob("*.py"):
        names = imported_modules(path)
        assert "argparse" not in names, path
        assert not any(name.startswith("roost.cli") for name in names), path


def test_config_files_see_options_added_in_groups() -> None:
    from roost.cli import build_parser

    simulate = build_parser().commands["simulate"]
    assert {"rounds", "strategy", "clip-quantile", "attack", "app", "help"} <= set(
        simulate.long_options
    )
    assert simulate.long_options["server-lr"].dest == "server_lr"
