"""A Flower project as its `pyproject.toml` describes it.

`[tool.flwr.app.components]` names the `serverapp` and the `clientapp` ("module:attribute"),
`[tool.flwr.app.config]` is the run config (`context.run_config`; nested tables become dotted
keys), and `options.num-supernodes` of a federation (`[tool.flwr.federations.NAME]`, the default
one named by `[tool.flwr.federations] default = ...`) is the number of simulated nodes.
"""

from __future__ import annotations

import os
import shlex
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from roost.cli.project import flatten
from roost.errors import ConfigurationError

RunConfigOverrides = Mapping[str, Any] | str | Sequence[str] | None
"""A mapping, or Flower's `--run-config` text: `"key=value key2='text'"` or a `.toml` file."""


@dataclass(frozen=True)
class FlowerProject:
    """What roost needs from a Flower project directory."""

    directory: Path
    name: str
    serverapp: str
    clientapp: str
    config: dict[str, Any] = field(default_factory=dict)
    federations: dict[str, Any] = field(default_factory=dict)
    default_federation: str | None = None

    def run_config(self, overrides: RunConfigOverrides = None) -> dict[str, Any]:
        """`[tool.flwr.app.config]` with `overrides` applied (only keys the project defines)."""
        updates = parse_run_config(overrides)
        unknown = sorted(set(updates) - set(self.config))
        if unknown:
            raise ConfigurationError(
                f"run config key(s) {', '.join(unknown)} are not in [tool.flwr.app.config] of "
                f"{self.directory}; it defines: {', '.join(sorted(self.config)) or 'nothing'}"
            )
        return {**self.config, **updates}

    def num_supernodes(self, federation: str | None = None) -> int | None:
        """`options.num-supernodes` of `federation` (default: the default one) in the project's
        `[tool.flwr.federations]`, or else in Flower's own configuration file (Flower 1.42 moved
        them there: `[superlink.NAME]` in `$FLWR_HOME/config.toml`, `~/.flwr/config.toml`)."""
        federations, default = self.federations, self.default_federation
        if not federations:
            federations, default = flower_connections()
        name = federation or default
        if name is None:
            return None
        if name not in federations:
            raise ConfigurationError(
                f"{self.directory} has no federation {name!r}; it has: "
                f"{', '.join(sorted(federations)) or 'none'}"
            )
        options = federations[name].get("options", {})
        value = options.get("num-supernodes")
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ConfigurationError(f"federation {name!r}: num-supernodes must be an int >= 1")
        return value


def flower_connections() -> tuple[dict[str, Any], str | None]:
    """The SuperLink connections of Flower's configuration file, and the default one's name."""
    home = Path(os.environ.get("FLWR_HOME", Path.home() / ".flwr"))
    path = home / "config.toml"
    if not path.is_file():
        return {}, None
    try:
        connections = dict(tomllib.loads(path.read_text()).get("superlink", {}))
    except tomllib.TOMLDecodeError:
        return {}, None
    default = connections.pop("default", None)
    return {k: v for k, v in connections.items() if isinstance(v, dict)}, default


def load_project(directory: str | Path) -> FlowerProject:
    """Read the Flower project in `directory`; `ConfigurationError` says what is missing."""
    root = Path(directory).resolve()
    path = root / "pyproject.toml"
    if not path.is_file():
        raise ConfigurationError(f"{root} has no pyproject.toml; point at a Flower project")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise ConfigurationError(f"{path} is not valid TOML: {error}") from None
    flwr = data.get("tool", {}).get("flwr", {})
    components = flwr.get("app", {}).get("components", {})
    missing = [name for name in ("serverapp", "clientapp") if name not in components]
    if missing:
        raise ConfigurationError(
            f"{path}: [tool.flwr.app.components] lacks {', '.join(missing)} "
            '(e.g. serverapp = "my_app.server_app:app")'
        )
    federations = dict(flwr.get("federations", {}))
    default = federations.pop("default", None)
    return FlowerProject(
        directory=root,
        name=str(data.get("project", {}).get("name", root.name)),
        serverapp=_reference(components["serverapp"], "serverapp"),
        clientapp=_reference(components["clientapp"], "clientapp"),
        config=flatten(flwr.get("app", {}).get("config", {})),
        federations=federations,
        default_federation=default,
    )


def _reference(value: object, name: str) -> str:
    if not isinstance(value, str) or value.count(":") != 1:
        raise ConfigurationError(f'{name} must be "module:attribute", got {value!r}')
    return value


def parse_run_config(overrides: RunConfigOverrides) -> dict[str, Any]:
    """Run-config overrides as a flat dict, from a mapping or Flower's `--run-config` text.

    Text is `key=value` pairs separated by spaces, values in TOML (`lr=0.1 name='cnn'`), or the
    path of a `.toml` file; a sequence holds several such texts.
    """
    if overrides is None:
        return {}
    if isinstance(overrides, Mapping):
        return flatten(overrides)
    texts = [overrides] if isinstance(overrides, str) else list(overrides)
    parsed: dict[str, Any] = {}
    for text in texts:
        path = Path(text)
        if text.endswith(".toml") and path.is_file():
            document = path.read_text()
        else:
            document = "\n".join(shlex.split(text, posix=False))
        try:
            parsed.update(flatten(tomllib.loads(document)))
        except tomllib.TOMLDecodeError as error:
            raise ConfigurationError(
                f"cannot read the run config {text!r} ({error}); write key=value pairs with TOML "
                "values, e.g. \"num-server-rounds=5 lr=0.05 name='cnn'\""
            ) from None
    return parsed
