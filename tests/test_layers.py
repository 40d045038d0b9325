"""The layer order (pyproject.toml's [tool.importlinter]) holds, and `import roost` stays light."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    # This checkout's roost, whatever is installed: lint-imports and the child find it first.
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    return env


def test_imports_point_down_the_layers_only() -> None:
    lint_imports = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    if not Path(lint_imports).exists():
        pytest.fail("lint-imports is missing: pip install -e '.[test]' (it brings import-linter)")
    done = subprocess.run(
        [lint_imports, "--no-cache", "--no-logo"],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 kept, 0 broken" in done.stdout


def test_the_layers_contract_lists_no_exceptions() -> None:
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    contract, loop_contract = config["contracts"]
    assert contract["type"] == "layers" and contract["containers"] == ["roost"]
    assert loop_contract["type"] == "forbidden"
    assert loop_contract["forbidden_modules"] == ["roost.engines"]
    for each in config["contracts"]:
        assert not {"ignore_imports", "allow_indirect_imports"} & set(each)
    # Every module and package right under roost/ has its place in the order.
    package = ROOT / "src" / "roost"
    modules = {
        path.stem if path.suffix == ".py" else path.name
        for path in package.iterdir()
        if (path.suffix == ".py" and path.stem != "__init__")
        or (path.is_dir() and (path / "__init__.py").exists())
    }
    placed = {name.strip() for layer in contract["layers"] for name in layer.split("|")}
    assert modules == placed


def _fresh_import(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout.strip()


def test_import_roost_loads_neither_the_cli_nor_an_ml_framework() -> None:
    loaded = _fresh_import(
        "import sys, roost\n"
        "heavy = ('roost.cli', 'roost.apps', 'roost.compat', 'torch', 'keras', 'tensorflow', "
        "'jax', 'ray', 'sklearn')\n"
        "print(sorted({m for m in sys.modules for h in heavy if m == h or m.startswith(h + '.')}))"
    )
    assert loaded == "[]"


def test_dpfedavg_is_a_preset_whatever_is_imported_first() -> None:
    # roost/__init__ runs before any roost submodule and registers the privacy presets.
    for first in ("roost.strategy.presets", "roost.cli.strategy_options", "roost.privacy"):
        found = _fresh_import(
            f"import {first}\n"
            "from roost.strategy.presets import PRESETS, preset\n"
            "print(PRESETS['dpfedavg'].__module__, type(preset('DPFedAvg', "
            "noise_multiplier=0.0, clip_norm=1.0, expected_clients=2, num_clients=4)).__name__)"
        )
        assert found == "roost.privacy.preset DPFedAvg", first


def test_the_command_line_loads_the_flower_layer_only_for_a_flower_project() -> None:
    # roost.cli finds the Flower layer by name (PROJECT_KINDS), like an --app, when it needs it.
    loaded = _fresh_import(
        "import sys\n"
        "from roost.cli import build_parser\n"
        "build_parser().parse_args(['simulate', '--rounds', '1'])\n"
        "from roost.cli.app import PROJECT_KINDS\n"
        "print(sorted(m for m in sys.modules if m.startswith('roost.compat')), "
        "sorted(PROJECT_KINDS))"
    )
    assert loaded == "[] ['flower']"


def test_the_flower_protocol_is_registered_by_the_flower_layer() -> None:
    known = _fresh_import(
        "from roost.client.protocols import PROTOCOLS\n"
        "before = sorted(PROTOCOLS)\n"
        "import roost.compat.flwr.clientapp\n"
        "print(before, sorted(PROTOCOLS))"
    )
    assert known == "['compress', 'secagg'] ['compress', 'flwr', 'secagg']"


def test_register_protocol_refuses_a_taken_name() -> None:
    from roost.client.protocols import PROTOCOLS, answer_by_client, register_protocol
    from roost.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="already registered"):
        register_protocol("secagg", answer_by_client)
    register_protocol("secagg", PROTOCOLS["secagg"])  # the same handler again: a no-op


@pytest.mark.parametrize(
    ("module", "gone"),
    [
        ("roost.engines", "make_transport"),  # make_engine's old second name
        ("roost.apps.digits", "DemoSettings"),  # roost.settings.RunSettings's
    ],
)
def test_one_name_one_home_no_aliases(module: str, gone: str) -> None:
    import importlib

    assert not hasattr(importlib.import_module(module), gone)


def test_one_name_one_home_tiny_modules_folded() -> None:
    import importlib.util

    from roost.client.client import client_rng
    from roost.strategy.base import sample_uniformly
    from roost.strategy.optimizers import negative_gradient, parameter_delta

    for folded in ("roost.strategy.sampling", "roost.strategy.updates", "roost.core.rng"):
        assert importlib.util.find_spec(folded) is None, folded
    assert callable(client_rng) and callable(sample_uniformly)
    assert callable(negative_gradient) and callable(parameter_delta)


def test_how_roost_is_built_states_the_order_the_contract_enforces() -> None:
    import re
    import tomllib

    layers = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"][
        "contracts"
    ][0]["layers"]
    page = (ROOT / "docs" / "explanations" / "architecture.md").read_text()
    section = page[page.index("- **Layers**") :]
    block = section[section.index("```text") + len("```text") : section.index("  ```\n")]
    stated = [re.split(r"\s{2,}", line.strip())[0] for line in block.strip().splitlines()]
    assert stated == layers
