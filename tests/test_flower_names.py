"""The Flower names Flower's own examples import, as `import flwr…` resolves them on roost."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from roost.compat.flwr import alias
from roost.compat.flwr.unsupported import UnsupportedFlowerName
from roost.errors import ConfigurationError


@pytest.fixture
def flwr():
    alias.install(replace_installed=True)
    try:
        yield
    finally:
        alias.uninstall()


def test_log_writes_through_roosts_logger_and_update_console_handler_sets_its_level(
    flwr, caplog
) -> None:
    from flwr.common import log
    from flwr.common.logger import log as logger_log
    from flwr.common.logger import logger, update_console_handler

    assert log is logger_log
    caplog.set_level(logging.INFO, logger="roost")
    caplog.handler.setLevel(logging.DEBUG)  # as roost's console handler: the loggers filter
    before = logger.level
    try:
        log(logging.INFO, "round %s done", 3)
        log(logging.DEBUG, "hidden %s", 1)
        update_console_handler(logging.DEBUG, True, True)
        log(logging.DEBUG, "shown %s", 2)
    finally:
        logger.setLevel(before)
    lines = [(r.name, r.getMessage()) for r in caplog.records]
    assert ("roost.flwr", "round 3 done") in lines
    assert ("roost.flwr", "shown 2") in lines
    assert all(message != "hidden 1" for _, message in lines)


def test_config_unflattens_dotted_keys_and_refuses_a_key_that_is_both(flwr) -> None:
    from flwr.common.config import flatten_dict, unflatten_dict

    flat = {"model.lr": 0.1, "model.arch.depth": 3, "seed": 7}
    nested = unflatten_dict(flat)
    assert nested == {"model": {"lr": 0.1, "arch": {"depth": 3}}, "seed": 7}
    assert flatten_dict(nested) == flat
    with pytest.raises(ConfigurationError, match="'model' is a value too"):
        unflatten_dict({"model": 1, "model.lr": 0.1})
    with pytest.raises(ConfigurationError, match="a value and a group"):
        unflatten_dict({"model.lr": 0.1, "model": 1})


def test_typing_aliases_and_common_reexports_are_the_layers_own_objects(flwr) -> None:
    import flwr.common
    from flwr.app import Message
    from flwr.client.typing import ClientAppCallable, Mod
    from flwr.clientapp import ClientApp
    from flwr.common.typing import NDArrays, Parameters, UserConfig

    assert flwr.common.Message is Message
    assert Parameters is flwr.common.Parameters
    parameters = flwr.common.ndarrays_to_parameters([np.ones(2)])
    assert isinstance(parameters, Parameters)
    assert NDArrays == list[np.ndarray] and UserConfig == dict[str, bool | float | int | str]
    assert ClientAppCallable and Mod  # the handler and mod types ClientApp takes
    assert ClientApp(mods=[]).mods == []


def test_a_name_roost_does_not_provide_fails_at_import_with_one_line(flwr) -> None:
    with pytest.raises(UnsupportedFlowerName) as missing:
        from flwr.common import EventType  # noqa: F401  (Flower's telemetry)
    message = str(missing.value)
    assert "\n" not in message
    assert message.startswith("flwr.common.EventType is not supported by roost's Flower layer")
    with pytest.raises(UnsupportedFlowerName, match=r"flwr\.client\.mod\.adaptiveclipping_mod"):
        from flwr.client.mod import adaptiveclipping_mod  # noqa: F401
    with pytest.raises(UnsupportedFlowerName, match=r"flwr\.server\.workflow\.WorkflowState"):
        from flwr.server.workflow import WorkflowState  # noqa: F401
    with pytest.raises(alias.UnsupportedFlowerModule, match=r"provides .*flwr\.server\.workflow"):
        import flwr.common.secure_aggregation  # noqa: F401


def test_a_name_missing_from_a_module_without_refusals_is_one_line_naming_the_import(
    tmp_path,
) -> None:
    from roost.compat.flwr.project import run_project

    package = tmp_path / "gone_app"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "server_app.py").write_text(
        "import numpy\nfrom flwr.server.strategy import NoSuchStrategy\n"
    )
    (package / "client_app.py").write_text("")
    (tmp_path / "pyproject.toml").write_text(
        "[tool.flwr.app.components]\n"
        'serverapp = "gone_app.server_app:app"\nclientapp = "gone_app.client_app:app"\n'
    )
    with pytest.raises(ConfigurationError) as refused:
        run_project(tmp_path, num_nodes=2)
    assert str(refused.value) == (
        "gone_app/server_app.py:2: flwr.server.strategy.NoSuchStrategy is not supported by "
        "roost's Flower layer; run this project on Flower itself"
    )
