"""A roost project: a directory whose `pyproject.toml` has a `[tool.roost]` table.

    [tool.roost.components]
    client = "myapp.client_app:client_fn"          # client_fn(context) -> a client
    strategy = "myapp.server_app:make_strategy"    # make_strategy(run_config) -> roost.Strategy

    [tool.roost.config]        # the run config: every key reaches context.run_config
    num-rounds = 5             # roost itself reads num-rounds, num-clients, engine, seed and
    num-clients = 10           # round-timeout; the other keys are the app's own
    engine = "sequential"
    seed = 0
    learning-rate = 0.1

`roost new NAME` writes one; `roost run DIR` simulates it, `roost server --app DIR` and
`roost client --app DIR` deploy it. `--run-config KEY=VALUE` overrides a key the table defines
(or one of roost's own). The project's modules are imported from its directory, so it runs
before and after `pip install -e DIR` alike.
"""

from __future__ import annotations

import importlib
import shlex
import sys
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from roost.client.client import ClientLike, Context
from roost.core.packages import missing_package
from roost.errors import ConfigurationError
from roost.strategy.run_config import strategy_option_keys
from roost.strategy.strategy import Strategy

ROOST_KEYS: dict[str, str] = {
    "num-rounds": "federated rounds (int >= 1)",
    "num-clients": "simulated clients (int >= 1)",
    "engine": "the simulation engine (sequential, process, ray, vectorized)",
    "seed": "seed of client sampling, and of the app's data and training (int)",
    "round-timeout": "seconds a client may take per instruction (number > 0)",
}
"""The run-config keys roost reads itself, with what they must be."""

DEFAULTS: dict[str, Any] = {"num-rounds": 3, "num-clients": 10, "seed": 0}
"""Run-config values roost uses when the project sets none (no engine: `roost run` picks one)."""

RunConfigOverrides = Mapping[str, Any] | str | Sequence[str] | None
"""`{"key": value}`, or `--run-config` texts: `"key=value other='text'"`, or a `.toml` file."""


def flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested TOML tables as dotted keys, as run configs (roost's and Flower's) have them."""
    flat: dict[str, Any] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def parse_overrides(overrides: RunConfigOverrides) -> dict[str, Any]:
    """Run-config overrides as a flat dict (nested tables become dotted keys).

    Each `KEY=VALUE` value is read as TOML (`3`, `0.5`, `true`, `'text'`); one that is not
    TOML is taken as text, so `strategy=fedprox` needs no quotes.
    """
    if overrides is None:
        return {}
    if isinstance(overrides, Mapping):
        return flatten(overrides)
    parsed: dict[str, Any] = {}
    for text in [overrides] if isinstance(overrides, str) else overrides:
        if text.endswith(".toml") and Path(text).is_file():
            try:
                parsed.update(flatten(tomllib.loads(Path(text).read_text())))
            except tomllib.TOMLDecodeError as error:
                raise ConfigurationError(f"{text} is not valid TOML: {error}") from None
            continue
        for pair in shlex.split(text, posix=False):
            key, equals, value = pair.partition("=")
            if not equals or not key:
                raise ConfigurationError(
                    f"--run-config expects KEY=VALUE pairs (e.g. num-rounds=3), got {pair!r}"
                )
            parsed[key] = _toml_value(value)
    return parsed


def _toml_value(text: str) -> Any:
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text


def read_pyproject(directory: str | Path) -> tuple[Path, dict[str, Any]]:
    """The resolved project directory and its parsed `pyproject.toml`."""
    root = Path(directory).resolve()
    path = root / "pyproject.toml"
    if not path.is_file():
        raise ConfigurationError(
            f"{root} has no pyproject.toml; point at a project directory "
            "(roost new NAME creates one)"
        )
    try:
        return root, tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise ConfigurationError(f"{path} is not valid TOML: {error}") from None


def project_kind(data: Mapping[str, Any]) -> str | None:
    """ "roost" for a `[tool.roost]` project, "flower" for `[tool.flwr.app]`, else None."""
    tool = data.get("tool", {})
    if "roost" in tool:
        return "roost"
    if "app" in tool.get("flwr", {}):
        return "flower"
    return None


@dataclass(frozen=True)
class RoostProject:
    """A roost project as its `pyproject.toml` describes it, its run config overrides applied."""

    directory: Path
    name: str
    client: str
    strategy: str
    run_config: dict[str, Any]

    @property
    def num_rounds(self) -> int:
        return int(self.run_config["num-rounds"])

    @property
    def num_clients(self) -> int:
        return int(self.run_config["num-clients"])

    @property
    def engine(self) -> str:
        return self.configured_engine or "sequential"

    @property
    def configured_engine(self) -> str | None:
        """The engine the run config names, None when it names none."""
        engine = self.run_config.get("engine")
        return None if engine is None else str(engine)

    @property
    def seed(self) -> int:
        return int(self.run_config["seed"])

    @property
    def round_timeout(self) -> float | None:
        value = self.run_config.get("round-timeout")
        return None if value is None else float(value)

    def resume_settings(self) -> dict[str, Any]:
        """What a resumed run must keep: the run config but its number of rounds."""
        return {f"run-config {k}": v for k, v in self.run_config.items() if k != "num-rounds"}

    def client_fn(self) -> ProjectClientFn:
        """The project's `client_fn`, importable in worker processes too.

        Its module is imported here first, so a wrong reference or a package the client needs
        and lacks is refused in one line before a run starts, rather than as a failure of every
        client (on the process and Ray engines this process then imports the framework too).
        """
        load_component(self.directory, self.client, "client")
        return ProjectClientFn(str(self.directory), self.client, dict(self.run_config))

    def make_strategy(self) -> Strategy:
        """A fresh strategy from the project's `strategy` component and run config."""
        factory = load_component(self.directory, self.strategy, "strategy")
        strategy = factory(dict(self.run_config))
        if not isinstance(strategy, Strategy):
            raise ConfigurationError(
                f"strategy = {self.strategy!r} returned a {type(strategy).__name__}; it must "
                "return a roost.Strategy (e.g. roost.FedAvg())"
            )
        return strategy


def load_roost_project(directory: str | Path, overrides: RunConfigOverrides = None) -> RoostProject:
    """Read the roost project in `directory`; `ConfigurationError` says what is missing."""
    root, data = read_pyproject(directory)
    table = data.get("tool", {}).get("roost", {})
    components = table.get("components", {})
    missing = [name for name in ("client", "strategy") if not isinstance(components.get(name), str)]
    if missing:
        raise ConfigurationError(
            f"{root / 'pyproject.toml'}: [tool.roost.components] lacks {', '.join(missing)} "
            '(e.g. client = "myapp.client_app:client_fn")'
        )
    return RoostProject(
        directory=root,
        name=str(data.get("project", {}).get("name", root.name)),
        client=_reference(components["client"], "client"),
        strategy=_reference(components["strategy"], "strategy"),
        run_config=checked_run_config(root, table.get("config", {}), overrides),
    )


def _reference(value: str, name: str) -> str:
    if value.count(":") != 1:
        raise ConfigurationError(f'{name} must be "module:attribute", got {value!r}')
    return value


def checked_run_config(
    root: Path, table: Mapping[str, Any], overrides: RunConfigOverrides
) -> dict[str, Any]:
    """`[tool.roost.config]` with `overrides` applied and roost's own keys checked."""
    defined = flatten(table)
    updates = parse_overrides(overrides)
    unknown = sorted(set(updates) - set(defined) - set(ROOST_KEYS) - strategy_option_keys())
    if unknown:
        raise ConfigurationError(
            f"run config key(s) {', '.join(unknown)} are not in [tool.roost.config] of {root}; "
            f"it defines: {', '.join(sorted(defined)) or 'nothing'} (besides roost's own keys "
            "and the named strategies' options, e.g. proximal-mu)"
        )
    run_config = {**DEFAULTS, **defined, **updates}
    for key in ("num-rounds", "num-clients"):
        _check(key, run_config[key], lambda v: isinstance(v, int) and v >= 1)
    _check("seed", run_config["seed"], lambda v: isinstance(v, int) and not isinstance(v, bool))
    if "engine" in run_config:
        _check("engine", run_config["engine"], lambda v: isinstance(v, str))
    if "round-timeout" in run_config:
        _check("round-timeout", run_config["round-timeout"], _positive_number)
    return run_config


def _positive_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def _check(key: str, value: Any, valid: Callable[[Any], bool]) -> None:
    if not valid(value):
        raise ConfigurationError(f"run config {key} = {value!r}: it must be {ROOST_KEYS[key]}")


def load_component(directory: Path, reference: str, what: str) -> Any:
    """Import `module:attribute` from the project in `directory` (put first on `sys.path`)."""
    module_name, _, attribute = reference.partition(":")
    if str(directory) not in sys.path:
        sys.path.insert(0, str(directory))
    _forget_if_from_elsewhere(module_name.partition(".")[0], directory)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        missing = missing_package(error, module_name, directory)
        if missing is not None:  # the project's own code imports a package that is not here
            raise missing from None
        raise ConfigurationError(
            f"{what} = {reference!r}: no module {error.name or module_name!r} in {directory}"
        ) from None
    component = vars(module).get(attribute)
    if component is None:
        raise ConfigurationError(f"{what} = {reference!r}: {module_name} has no {attribute!r}")
    if not callable(component):
        raise ConfigurationError(f"{what} = {reference!r} must name a function")
    return component


def _forget_if_from_elsewhere(package: str, directory: Path) -> None:
    """Two projects whose packages share a name, run one after the other in one process: the
    second must not get the first one's modules from `sys.modules`."""
    module = sys.modules.get(package)
    if module is None:
        return
    attributes = vars(module)
    locations = [attributes.get("__file__"), *attributes.get("__path__", [])]
    if any(where and Path(where).resolve().is_relative_to(directory) for where in locations):
        return
    for name in list(sys.modules):
        if name.split(".")[0] == package:
            del sys.modules[name]


class ProjectClientFn:
    """The project's `client_fn`, picklable: a worker process imports it from the directory.

    Each context's `run_config` starts from the project's run config (what an engine or
    `roost client` passes wins), so a deployed client sees the same config as a simulated one.
    """

    def __init__(self, directory: str, reference: str, run_config: dict[str, Any]) -> None:
        self.directory = directory
        self.reference = reference
        self.run_config = run_config

    def __call__(self, context: Context) -> ClientLike:
        context.run_config = {**self.run_config, **context.run_config}
        client_fn = load_component(Path(self.directory), self.reference, "client")
        return client_fn(context)
