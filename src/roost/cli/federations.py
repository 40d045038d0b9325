"""Which coordinator a person talks to: `--federation NAME`, or `--coordinator URL --token T`.

A federation NAME is looked up, in order, in the project's `pyproject.toml`
(`[tool.roost.federations.NAME]`, or a Flower project's `[tool.flwr.federations.NAME]`) and in
the user's `federations.toml` (`$XDG_CONFIG_HOME/roost/`, default `~/.config/roost/`, as
`[federations.NAME]`). Its keys:

    address = "fl.example.org:9091"      # or a full https:// URL
    root-certificates = "ca.pem"         # the CA the coordinator's certificate chains to
    token = "..."                        # else the ROOST_COORDINATOR_TOKEN environment variable
    insecure = true                      # plain HTTP (a coordinator on 127.0.0.1, tests)

A Flower project's own federation table works as it is, with the token added or in the environment.
"""

from __future__ import annotations

import argparse
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from roost.errors import ConfigurationError

TOKEN_VARIABLE = "ROOST_COORDINATOR_TOKEN"


@dataclass(frozen=True)
class Federation:
    """A coordinator to talk to, and as whom."""

    url: str
    token: str
    root_certificate: str | None = None

    def client(self):  # -> roost.federation.control.ControlClient (imported late: extras)
        """A control client for this federation."""
        from roost.federation.control import ControlClient

        return ControlClient(self.url, self.token, self.root_certificate)


def add_connection_options(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    """`--federation NAME` or `--coordinator URL` with `--token T`."""
    parser.add_argument(
        "--federation",
        metavar="NAME",
        default=None,
        help="the federation (from pyproject.toml or ~/.config/roost/federations.toml)",
    )
    parser.add_argument(
        "--coordinator", metavar="URL", default=None, help="the coordinator's URL (instead)"
    )
    parser.add_argument(
        "--token",
        default=None,
        help=f"your token (default: the federation's, or ${TOKEN_VARIABLE})",
    )


def user_config_path() -> Path:
    """The user's federations file: `$XDG_CONFIG_HOME/roost/federations.toml`."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "roost" / "federations.toml"


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ConfigurationError(f"cannot read {path}: {error}") from None


def find_federation(name: str, project_dir: str | Path = ".") -> tuple[dict[str, Any], Path]:
    """The settings of federation `name` and the file that holds them."""
    pyproject = Path(project_dir) / "pyproject.toml"
    tool = _read_toml(pyproject).get("tool", {})
    for table in (tool.get("roost", {}), tool.get("flwr", {})):
        if name in table.get("federations", {}):
            return dict(table["federations"][name]), pyproject
    user = user_config_path()
    federations = _read_toml(user).get("federations", {})
    if name in federations:
        return dict(federations[name]), user
    raise ConfigurationError(
        f"no federation {name!r} in {pyproject} ([tool.roost.federations.{name}] or "
        f"[tool.flwr.federations.{name}]) nor in {user} ([federations.{name}]); add it there, "
        "or pass --coordinator URL --token T"
    )


def federation_from_args(args: argparse.Namespace, project_dir: str | Path = ".") -> Federation:
    """The coordinator `--federation` or `--coordinator` names, and the person's token."""
    if args.coordinator:
        settings, where = {"address": args.coordinator}, Path("--coordinator")
    elif args.federation:
        settings, where = find_federation(args.federation, project_dir)
    else:
        raise ConfigurationError("which federation? pass --federation NAME or --coordinator URL")
    address = settings.get("address")
    if not isinstance(address, str) or not address:
        raise ConfigurationError(f'{where}: the federation needs address = "HOST:PORT"')
    if "://" not in address:
        address = ("http://" if settings.get("insecure") else "https://") + address
    token = args.token or settings.get("token") or os.environ.get(TOKEN_VARIABLE)
    if not token:
        raise ConfigurationError(
            f"no token for {address}: pass --token T, set {TOKEN_VARIABLE}, or add token = "
            f'"..." to the federation in {where}'
        )
    root = settings.get("root-certificates")
    if root is not None and not Path(root).is_absolute() and where.name != "--coordinator":
        root = str(where.parent / root)  # relative to the file that names it, as Flower does
    return Federation(address, str(token), root)
