"""A bundle's manifest, `roost-bundle.json`: what the project is and what it needs.

Read from the project's `pyproject.toml` when the bundle is made (`project_manifest`), and from
the bundle by the node that checks it (`Manifest.from_json`).
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

from roost.errors import ConfigurationError, RoostError

MANIFEST_NAME = "roost-bundle.json"
"""The manifest's name inside a bundle."""


class BundleRefusedError(RoostError):
    """A bundle is corrupt, too large, tampered with, unsigned or signed by an untrusted
    publisher; the message is the one-line reason a node reports."""


@dataclass(frozen=True)
class Manifest:
    """What a bundle says about itself (`roost-bundle.json`)."""

    name: str
    kind: str
    """"roost" (`[tool.roost]`) or "flower" (`[tool.flwr.app]`)."""
    requirements: tuple[str, ...]
    """The project's `[project] dependencies`, as written there."""
    created_by: str
    """The roost version that made the bundle."""

    def to_json(self) -> bytes:
        """The manifest file's bytes (sorted keys: part of a deterministic bundle)."""
        return json.dumps(asdict(self), sort_keys=True, indent=1).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        """The manifest in `data`; BundleRefusedError when it is not one."""
        try:
            raw = json.loads(data)
            requirements = raw["requirements"]
            if not isinstance(requirements, list) or not all(
                isinstance(item, str) for item in requirements
            ):
                raise TypeError("requirements must be a list of strings")
            fields = {key: raw[key] for key in ("name", "kind", "created_by")}
            if not all(isinstance(value, str) for value in fields.values()):
                raise TypeError("name, kind and created_by must be strings")
        except (ValueError, KeyError, TypeError) as error:
            raise BundleRefusedError(
                f"the bundle's {MANIFEST_NAME} is malformed ({error})"
            ) from None
        return cls(requirements=tuple(requirements), **fields)


def _roost_version() -> str:
    try:
        return metadata.version("roost")
    except metadata.PackageNotFoundError:
        return "unknown"


def project_manifest(directory: Path) -> Manifest:
    """The manifest of the project in `directory`, from its `pyproject.toml`."""
    pyproject = directory / "pyproject.toml"
    try:
        data = tomllib.loads(pyproject.read_text())
    except FileNotFoundError:
        raise ConfigurationError(
            f"{directory} has no pyproject.toml: bundle a roost project (`roost new NAME` "
            "writes one) or a Flower project"
        ) from None
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ConfigurationError(f"cannot read {pyproject}: {error}") from None
    tool = data.get("tool", {})
    if "roost" in tool:
        kind = "roost"
    elif "app" in tool.get("flwr", {}):
        kind = "flower"
    else:
        raise ConfigurationError(
            f"{pyproject} has neither [tool.roost] nor [tool.flwr.app]: only roost and Flower "
            "projects can be bundled"
        )
    project = data.get("project", {})
    requirements = project.get("dependencies", [])
    if not isinstance(requirements, list) or not all(isinstance(r, str) for r in requirements):
        raise ConfigurationError(f"{pyproject}: [project] dependencies must be a list of strings")
    name = str(project.get("name") or directory.resolve().name)
    return Manifest(name, kind, tuple(requirements), _roost_version())
